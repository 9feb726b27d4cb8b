// Text <-> token ids with Hugging Face semantics: tokenizer.json through
// @huggingface/tokenizers (normalizer, pre-tokenizer, BPE with byte fallback, added
// tokens, decoder), BOS/EOS from tokenizer_config.json and generation_config.json.
import { join } from 'node:path';

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';

import { FormatError } from '../errors.js';
import { readJsonObject } from '../formats/json.js';
import { speedUpEncoding } from './fast-encoding.js';
import { checkTokenizerJson } from './tokenizer-json.js';

/** 'parse': the text of a special token (e.g. `[INST]`) becomes that control token, as in
 * Hugging Face. 'plain': all text is ordinary text; no control token can appear. */
export type SpecialTokens = 'parse' | 'plain';

export interface TokenizeOptions {
  specialTokens?: SpecialTokens;
  /** Add BOS as the tokenizer config asks (default true). */
  addSpecialTokens?: boolean;
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

/** A piece of text to tokenize: `plain` pieces never become control tokens. */
export interface TextPiece {
  text: string;
  plain: boolean;
}

function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function vocabTypeOf(json: Record<string, unknown>): Tokenizer['vocabType'] {
  const model = json['model'] as { byte_fallback?: unknown } | undefined;
  if (model?.byte_fallback === true) return 'byte_fallback';
  const types = (part: unknown): string[] => {
    const p = part as { type?: unknown; decoders?: unknown; pretokenizers?: unknown } | null;
    if (!p || typeof p !== 'object') return [];
    return [String(p.type), ...(Array.isArray(p.decoders) ? p.decoders.flatMap(types) : []), ...(Array.isArray(p.pretokenizers) ? p.pretokenizers.flatMap(types) : [])];
  };
  return [...types(json['decoder']), ...types(json['pre_tokenizer'])].includes('ByteLevel') ? 'byte_level' : 'raw';
}

export class Tokenizer {
  readonly #hf: HfTokenizer;
  readonly #added: AddedToken[];
  readonly #addedByContent: Map<string, AddedToken>;
  readonly #addedPattern: RegExp | null;
  readonly #special: Set<number>;
  /** Size of the vocabulary including added tokens. */
  readonly vocabSize: number;
  readonly bosToken: string | null;
  readonly bosTokenId: number | null;
  readonly eosToken: string | null;
  /** Every id that ends a generation (tokenizer and generation config). */
  readonly eosTokenIds: number[];
  readonly addBosToken: boolean;
  /** The chat template of tokenizer_config.json (the default one when several). */
  readonly chatTemplate: string | null;
  /** How token strings map to bytes: SentencePiece-style with `<0xNN>` byte tokens and
   * U+2581 for spaces ('byte_fallback'), GPT-2 style byte-to-character ('byte_level'), or
   * the text itself ('raw'). */
  readonly vocabType: 'byte_fallback' | 'byte_level' | 'raw';

  private constructor(hf: HfTokenizer, json: Record<string, unknown>, config: Record<string, unknown>, generationEos: number[]) {
    this.#hf = hf;
    const added = Array.isArray(json['added_tokens']) ? (json['added_tokens'] as Record<string, unknown>[]) : [];
    this.#added = added
      .filter((t) => typeof t['content'] === 'string' && (t['content'] as string).length > 0 && Number.isSafeInteger(t['id']))
      .map((t) => ({ id: t['id'] as number, content: t['content'] as string, special: t['special'] === true, lstrip: t['lstrip'] === true, rstrip: t['rstrip'] === true }));
    this.#addedByContent = new Map(this.#added.map((t) => [t.content, t]));
    const longestFirst = [...this.#addedByContent.keys()].sort((a, b) => b.length - a.length);
    this.#addedPattern = longestFirst.length ? new RegExp(longestFirst.map(escapeRegExp).join('|'), 'g') : null;
    this.#special = new Set(this.#added.filter((t) => t.special).map((t) => t.id));
    this.vocabSize = hf.get_vocab(true).size;
    this.vocabType = vocabTypeOf(json);

    this.bosToken = tokenContent(config['bos_token']);
    this.eosToken = tokenContent(config['eos_token']);
    this.bosTokenId = this.bosToken !== null ? (hf.token_to_id(this.bosToken) ?? null) : null;
    const eos = this.eosToken !== null ? hf.token_to_id(this.eosToken) : undefined;
    this.eosTokenIds = [...new Set([...(eos !== undefined ? [eos] : []), ...generationEos])];
    this.addBosToken = config['add_bos_token'] !== false && this.bosTokenId !== null;
    const template = config['chat_template'];
    if (typeof template === 'string') this.chatTemplate = template;
    else if (Array.isArray(template)) {
      const named = (template as { name?: unknown; template?: unknown }[]).find((t) => t.name === 'default');
      this.chatTemplate = typeof named?.template === 'string' ? named.template : null;
    } else this.chatTemplate = null;
  }

  /** Loads tokenizer.json (required) and the optional configs of a model directory. */
  static async load(dir: string): Promise<Tokenizer> {
    const path = join(dir, 'tokenizer.json');
    const json = (await readJsonObject(path))!;
    checkTokenizerJson(path, json);
    const config = (await readJsonObject(join(dir, 'tokenizer_config.json'), { optional: true })) ?? {};
    const generation = (await readJsonObject(join(dir, 'generation_config.json'), { optional: true })) ?? {};
    const g = generation['eos_token_id'];
    const generationEos = (Array.isArray(g) ? g : [g]).filter((t): t is number => Number.isSafeInteger(t) && (t as number) >= 0);
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(json, config);
      speedUpEncoding(hf);
    } catch (e) {
      throw new FormatError(path, `cannot be used: ${(e as Error).message}`);
    }
    return new Tokenizer(hf, json, config, generationEos);
  }

  /** A global pattern matching the text of any added token, or `extra`. */
  addedTokenPattern(extra: string): RegExp {
    return new RegExp(this.#addedPattern ? `${this.#addedPattern.source}|${extra}` : extra, 'g');
  }

  isSpecial(id: number): boolean {
    return this.#special.has(id);
  }

  #maxTokenChars = 0;

  /** The most characters one token stands for (an upper bound: the longest stored token
   * text), so that text of n characters needs at least n / maxTokenChars tokens. */
  get maxTokenChars(): number {
    if (!this.#maxTokenChars) {
      let most = 1;
      for (let id = 0; id < this.vocabSize; id++) most = Math.max(most, this.#hf.id_to_token(id)?.length ?? 0);
      this.#maxTokenChars = most;
    }
    return this.#maxTokenChars;
  }

  /** The stored text of a token (e.g. '▁the', '<0x0A>', '[INST]'). */
  tokenText(id: number): string | undefined {
    return this.#hf.id_to_token(id);
  }

  encode(text: string, options: TokenizeOptions = {}): number[] {
    if (typeof text !== 'string') throw new TypeError('tokenize: text must be a string');
    const mode = options.specialTokens ?? 'parse';
    if (mode !== 'parse' && mode !== 'plain') throw new TypeError(`tokenize: specialTokens must be 'parse' or 'plain' (got ${String(mode)})`);
    const bos = options.addSpecialTokens !== false && this.addBosToken ? [this.bosTokenId!] : [];
    if (mode === 'parse') return text === '' ? bos : bos.concat(this.#hf.encode(text, { add_special_tokens: false }).ids);
    return bos.concat(this.#encodeSection(text, 0));
  }

  /**
   * Tokenizes pieces as one text: added tokens are recognised in the pieces that are not
   * plain, never in plain ones, and the text around them is tokenized exactly as the
   * Hugging Face tokenizer does for the joined string (sections between added tokens).
   */
  encodePieces(pieces: TextPiece[]): number[] {
    // Split into sections: one per added token, text runs in between.
    const sections: (AddedToken | string)[] = [];
    let run = '';
    const flush = () => {
      if (run !== '') sections.push(run);
      run = '';
    };
    for (const piece of pieces) {
      if (piece.plain || !this.#addedPattern) {
        run += piece.text;
        continue;
      }
      let last = 0;
      for (const match of piece.text.matchAll(this.#addedPattern)) {
        run += piece.text.slice(last, match.index);
        const token = this.#addedByContent.get(match[0])!;
        if (token.lstrip) run = run.trimEnd();
        flush();
        sections.push(token);
        last = match.index + match[0].length;
      }
      run += piece.text.slice(last);
    }
    flush();
    const ids: number[] = [];
    sections.forEach((s, i) => {
      if (typeof s !== 'string') ids.push(s.id);
      else {
        const prev = sections[i - 1];
        const text = typeof prev === 'object' && prev.rstrip ? s.trimStart() : s;
        for (const id of this.#encodeSection(text, i)) ids.push(id); // (a spread overflows the stack on long text)
      }
    });
    return ids;
  }

  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.#hf.decode(Array.from(ids), { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  /** One section of text, with no added-token matching: normalizer, pre-tokenizer, model. */
  #encodeSection(text: string, sectionIndex: number): number[] {
    const hf = this.#hf;
    const normalized = hf.normalizer ? hf.normalizer._call(text) : text;
    if (normalized === '') return [];
    const words = hf.pre_tokenizer ? hf.pre_tokenizer._call(normalized, { section_index: sectionIndex }) : [normalized];
    const model = hf.model!;
    return (model._call(words) as string[]).map((t: string) => model.tokens_to_ids.get(t) ?? model.unk_token_id ?? 0);
  }
}
