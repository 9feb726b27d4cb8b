// Constrained decoding: before each sampling step the constraint says which tokens of the
// whole vocabulary may come next (a bitmask), and it follows each chosen token. JSON
// Schema, regular expressions and GBNF grammars are compiled by XGrammar against the
// model's vocabulary; special tokens never match grammar text, and end-of-sequence is
// allowed only where the grammar accepts.
import type * as XGrammar from '@mlc-ai/web-xgrammar';

import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { GrammarError } from './errors.js';
import { checkGbnf } from './gbnf.js';
import { RegexError, regexToEbnf } from './regex.js';
import { SchemaError, checkSchema } from './schema.js';
import { xgrammar } from './xgrammar.js';

export interface ConstraintOptions {
  /** The output is JSON valid against this schema. */
  jsonSchema?: Record<string, unknown> | boolean;
  /** The output is a JSON object (OpenAI's json_object). */
  json?: boolean;
  /** The output matches this grammar, in GBNF (llama.cpp's notation; rule `root` first). */
  grammar?: string;
  /** The whole output matches this regular expression (JavaScript syntax). */
  regex?: string | RegExp;
}

export const CONSTRAINT_KEYS = ['jsonSchema', 'json', 'grammar', 'regex'] as const;

export { GrammarError };

/** Whether options ask for a constraint (and only one). */
export function constraintOf(options: ConstraintOptions): ConstraintOptions | null {
  const given = CONSTRAINT_KEYS.filter((k) => options[k] !== undefined && options[k] !== false);
  if (given.length > 1) throw new TypeError(`only one of ${CONSTRAINT_KEYS.join(', ')} may be given (got ${given.join(' and ')})`);
  return given.length ? options : null;
}

interface Compiler {
  compiler: XGrammar.GrammarCompiler;
  vocabSize: number;
}

const compilers = new WeakMap<Tokenizer, Map<number, Promise<Compiler>>>();

/** The tokenizer's vocabulary as XGrammar reads it: special tokens as '' (never grammar text). */
function compilerFor(tokenizer: Tokenizer, vocabSize: number, stop: number[]): Promise<Compiler> {
  let bySize = compilers.get(tokenizer);
  if (!bySize) compilers.set(tokenizer, (bySize = new Map()));
  let c = bySize.get(vocabSize);
  if (!c) {
    c = (async () => {
      const x = xgrammar();
      const vocab: string[] = [];
      for (let id = 0; id < vocabSize; id++) {
        const text = id < tokenizer.vocabSize && !tokenizer.isSpecial(id) ? (tokenizer.tokenText(id) ?? '') : '';
        // The engine lets a NUL byte through where the grammar forbids it: NUL is never
        // generated under a constraint.
        vocab.push(text === '<0x00>' || text.includes('\0') ? '' : text);
      }
      const info = await x.TokenizerInfo.createTokenizerInfo(vocab, tokenizer.vocabType, false, vocabSize, stop);
      return { compiler: await x.GrammarCompiler.createGrammarCompiler(info), vocabSize };
    })();
    bySize.set(vocabSize, c);
  }
  return c;
}

async function compile(c: Compiler, options: ConstraintOptions): Promise<XGrammar.CompiledGrammar> {
  const x = xgrammar();
  try {
    if (options.jsonSchema !== undefined) {
      checkSchema(options.jsonSchema);
      return await c.compiler.compileJSONSchema(JSON.stringify(options.jsonSchema), false, -1);
    }
    if (options.json) return await c.compiler.compileJSONSchema(JSON.stringify({ type: 'object', additionalProperties: true }), false, -1, undefined, false);
    const ebnf = options.grammar !== undefined ? options.grammar : regexToEbnf(options.regex instanceof RegExp ? options.regex.source : String(options.regex));
    return await c.compiler.compileGrammar(await x.Grammar.fromEBNF(checkGbnf(ebnf), 'root'));
  } catch (e) {
    if (e instanceof SchemaError || e instanceof RegexError || e instanceof GrammarError) throw e;
    throw new GrammarError(`${options.grammar !== undefined ? 'grammar' : options.regex !== undefined ? 'regex' : 'JSON schema'}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

export class Constraint {
  readonly #matcher: XGrammar.GrammarMatcher;
  readonly #vocabSize: number;
  #mask: Int32Array | null = null;
  #disposed = false;

  private constructor(matcher: XGrammar.GrammarMatcher, vocabSize: number) {
    this.#matcher = matcher;
    this.#vocabSize = vocabSize;
  }

  /** Compiles the constraint for a model's vocabulary; `stop` are its end-of-sequence ids. */
  static async create(tokenizer: Tokenizer, vocabSize: number, stop: number[], options: ConstraintOptions): Promise<Constraint> {
    const c = await compilerFor(tokenizer, vocabSize, stop);
    const compiled = await compile(c, options);
    try {
      return new Constraint(await xgrammar().GrammarMatcher.createGrammarMatcher(compiled, stop), vocabSize);
    } finally {
      compiled.dispose();
    }
  }

  /** Computes the mask of the next step (done ahead, while the forward pass runs). */
  async prepare(): Promise<void> {
    if (!this.#mask && !this.#disposed) this.#mask = await this.#matcher.getNextTokenBitmask();
  }

  /** Sets every token the constraint forbids to -Infinity (after prepare()). */
  apply(logits: Float32Array): void {
    const mask = this.#mask;
    if (!mask) throw new Error('constraint: the mask was not prepared');
    let allowed = 0;
    for (let w = 0; w * 32 < this.#vocabSize; w++) {
      const bits = mask[w]!;
      if (bits === -1) {
        allowed += Math.min(32, this.#vocabSize - w * 32);
        continue;
      }
      if (bits === 0) {
        logits.fill(-Infinity, w * 32, Math.min(this.#vocabSize, w * 32 + 32));
        continue;
      }
      for (let b = 0; b < 32 && w * 32 + b < this.#vocabSize; b++) {
        if ((bits >>> b) & 1) allowed++;
        else logits[w * 32 + b] = -Infinity;
      }
    }
    if (allowed === 0) throw new GrammarError('no token of the vocabulary can continue the constrained output (the grammar cannot be satisfied with this tokenizer)');
  }

  /** The bitmask of allowed tokens (after prepare()). */
  get mask(): Int32Array | null {
    return this.#mask;
  }

  /** Follows the chosen token; false when the constraint does not allow it. */
  accept(token: number): boolean {
    this.#mask = null;
    return this.#matcher.acceptToken(token);
  }

  /** The output is complete: nothing may follow. */
  get terminated(): boolean {
    return this.#matcher.isTerminated();
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#matcher.dispose();
  }
}
