// Constrained decoding: before each sampling step the constraint says which tokens of the
// whole vocabulary may come next (a bitmask), and it follows each chosen token. JSON
// Schema, regular expressions and GBNF grammars are compiled by XGrammar against the
// model's vocabulary, on the grammar engine's own thread (xgrammar.ts); special tokens never
// match grammar text, and end-of-sequence is allowed only where the grammar accepts.
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { GrammarError } from './errors.js';
import { checkGbnf } from './gbnf.js';
import { regexToEbnf } from './regex.js';
import { checkSchema } from './schema.js';
import { type GrammarSource, type GrammarWorker, grammarWorker } from './xgrammar.js';

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

/** Checks the options here (fast, with laminate's own messages), then says what XGrammar compiles. */
function sourceOf(options: ConstraintOptions): GrammarSource {
  if (options.jsonSchema !== undefined) {
    checkSchema(options.jsonSchema);
    return { schema: JSON.stringify(options.jsonSchema), anyObject: false };
  }
  if (options.json) return { schema: JSON.stringify({ type: 'object', additionalProperties: true }), anyObject: true };
  return { ebnf: checkGbnf(options.grammar !== undefined ? options.grammar : regexToEbnf(options.regex instanceof RegExp ? options.regex.source : String(options.regex))) };
}

export class Constraint {
  readonly #engine: GrammarWorker;
  readonly #id: number;
  readonly #vocabSize: number;
  readonly #stop: Set<number>;
  #mask: Int32Array | null = null;
  #terminated = false;
  #disposed = false;

  private constructor(engine: GrammarWorker, id: number, vocabSize: number, stop: number[]) {
    this.#engine = engine;
    this.#id = id;
    this.#vocabSize = vocabSize;
    this.#stop = new Set(stop);
  }

  /** Compiles the constraint for a model's vocabulary (on the grammar engine's thread); `stop` are its end-of-sequence ids. */
  static async create(tokenizer: Tokenizer, vocabSize: number, stop: number[], options: ConstraintOptions): Promise<Constraint> {
    const source = sourceOf(options);
    const engine = grammarWorker();
    try {
      return new Constraint(engine, await engine.compile(tokenizer, vocabSize, stop, source), vocabSize, stop);
    } catch (e) {
      const what = options.grammar !== undefined ? 'grammar' : options.regex !== undefined ? 'regex' : 'JSON schema';
      throw new GrammarError(`${what}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** Computes the mask of the next step (done ahead, while the forward pass runs); fails if a
   * token that the constraint refuses was accepted. */
  async prepare(): Promise<void> {
    if (!this.#mask && !this.#disposed) this.#mask = await this.#engine.mask(this.#id);
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

  /** Follows the chosen token. A token outside the mask is reported by the next prepare(). */
  accept(token: number): void {
    this.#mask = null;
    if (this.#stop.has(token)) this.#terminated = true;
    this.#engine.accept(this.#id, token);
  }

  /** The output is complete (an end-of-sequence token was accepted): nothing may follow. */
  get terminated(): boolean {
    return this.#terminated;
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#engine.dispose(this.#id);
  }
}
