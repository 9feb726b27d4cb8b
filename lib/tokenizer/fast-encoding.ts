// Encoding with @huggingface/tokenizers at a speed that does not depend on what the text is
// made of, with the library's results.
//
// Long words: its BPE keeps an object per symbol and per merge candidate, and on one long word
// (Mistral's pre-tokenizer makes a whole text one word) they all stay alive at once, past the
// garbage collector's young generation: several µs per character, a second for a prompt that
// fits a context. So a long word is first cut where no merge can cross, and the library runs
// on the pieces; a piece that stays long (a run of one character, text without such places) is
// merged here over flat arrays.
//
// Many tokens: past that, its time went per character and per token. The rank of a merge
// candidate was looked up by the JSON of the pair; a piece outside the vocabulary became its
// UTF-8 bytes through a TextEncoder, an array and six-character strings made anew; the tokens
// were scanned again for unknown ones to fuse; the text was walked twice for added tokens, by
// a string made for each character; the tokens were copied twice by flatMap and twice more by
// the post-processor, with a list of type ids; and arrays of them grew one push at a time. Text
// of CJK, emoji, control characters or newlines (a token or more per character) took five to
// ten times the time of prose. Each of these steps is replaced here by one with the same
// results, installed only where the library's own method is in place and its data has the
// shape known here, and handing anything unusual back to the library's own code.
import * as tokenizers from '@huggingface/tokenizers';

/** The parts of the library's BPE model used here. */
interface BpeModel {
  (words: string[]): string[];
  merges: [string, string][];
  bpe_ranks: Map<string, number>;
  bpe(word: string): string[];
  add_node(queue: { push(node: BpeNode): unknown }, node: BpeNode): void;
  encode(words: string[]): string[];
  _call(words: string[]): string[];
  tokens_to_ids: Map<string, number>;
  unk_token_id?: number;
  byte_fallback: boolean;
  end_of_word_suffix?: string;
  continuing_subword_suffix: string | null;
  ignore_merges: boolean;
}

/** A symbol of the library's BPE: a linked list node, queued with its next symbol. */
interface BpeNode {
  token: string;
  next: BpeNode | null;
  bias: number;
  score?: number;
}

/** The parts of the library's Tokenizer used here. */
interface Pipeline {
  model: BpeModel | null;
  normalizer: ((text: string) => string) | null;
  pre_tokenizer: ((text: string, options: { section_index: number }) => string[]) | null;
  post_processor: PostProcessor | null;
  splitter_unnormalized: { split(text: string): string[] };
  splitter_normalized: { split(text: string): string[] };
  added_tokens_map: Map<string, { id: number; lstrip: boolean; rstrip: boolean }>;
  remove_space?: unknown;
  do_lowercase_and_remove_accent?: unknown;
  encode_text(text: string | null): string[] | null;
  tokenize_helper: unknown;
  encode(text: string, options?: { text_pair?: string | null; add_special_tokens?: boolean; return_token_type_ids?: boolean | null }): Encoding;
}

interface PostProcessor {
  config?: { single?: unknown };
  post_process: unknown;
  _call: unknown;
}

interface Encoding {
  ids: (number | undefined)[];
  tokens: string[];
  attention_mask: number[];
}

const library = tokenizers as unknown as {
  BPE: { prototype: BpeModel; [Symbol.hasInstance](value: unknown): boolean };
  Model: { prototype: BpeModel };
  Tokenizer: { prototype: Pipeline };
  PostProcessor: { prototype: PostProcessor };
  TemplateProcessingPostProcessor: { prototype: PostProcessor; [Symbol.hasInstance](value: unknown): boolean };
};

/** Installs every speed-up that fits a tokenizer (the library's) and leaves the rest to it. */
export function speedUpEncoding(tokenizer: unknown): void {
  const hf = tokenizer as Pipeline;
  const m = hf.model;
  if (typeof m !== 'function' || !(m instanceof library.BPE)) return;
  // (ranks below 2^21 keep the heap keys of `merge` exact)
  if (!Array.isArray(m.merges) || !(m.bpe_ranks instanceof Map) || !(m.tokens_to_ids instanceof Map) || m.merges.length >= 2 ** 21) return;
  if (!m.merges.every((pair) => Array.isArray(pair))) return;
  const table = new MergeTable(m.merges);
  if (m.add_node === library.BPE.prototype.add_node) speedUpRanks(m, table);
  speedUpLongWords(m, table);
  if (m.encode === library.BPE.prototype.encode && m._call === library.Model.prototype._call) speedUpTokens(m);
  speedUpSplitter(hf.splitter_unnormalized);
  speedUpSplitter(hf.splitter_normalized);
  if (hf.encode_text === library.Tokenizer.prototype.encode_text) speedUpSections(hf);
  speedUpEncode(hf);
}

/**
 * The merges by number: each string that is a part of a merge is numbered (and the result
 * of one when a merge here first needs it). A later duplicate of a merge has the rank, as in
 * the library's `bpe_ranks` (keyed by the JSON of the pair), and a merge that is not two
 * strings never matches there, nor here.
 */
class MergeTable {
  readonly #numbers = new Map<string, number>();
  readonly #texts: string[] = [];
  /** The number of each numbered string that is one character, by its code point. */
  readonly #chars = new Map<number, number>();
  /** By the number of a left part, the rank of the merge with each right part. */
  readonly #rows: (Map<number, number> | undefined)[] = [];
  /** By rank, the numbers of the two parts. */
  readonly #parts: Int32Array;
  /** By rank, the number of the merged string (-1 until needed). */
  readonly #merged: Int32Array;

  constructor(merges: unknown[][]) {
    this.#parts = new Int32Array(2 * merges.length);
    this.#merged = new Int32Array(merges.length).fill(-1);
    merges.forEach((pair, rank) => {
      const [a, b] = pair;
      if (pair.length !== 2 || typeof a !== 'string' || typeof b !== 'string') return;
      const left = this.#number(a);
      const right = this.#number(b);
      (this.#rows[left] ??= new Map()).set(right, rank);
      this.#parts[2 * rank] = left;
      this.#parts[2 * rank + 1] = right;
    });
  }

  /** The number of a string, if it has one. */
  numberOf(text: string): number | undefined {
    return this.#numbers.get(text);
  }

  /** The number of a character (by code point), -1 if it has none. */
  charNumber(codePoint: number): number {
    return this.#chars.get(codePoint) ?? -1;
  }

  text(number: number): string {
    return this.#texts[number]!;
  }

  /** The rank of merging two numbered strings, if they merge. */
  rank(left: number, right: number): number | undefined {
    return this.#rows[left]?.get(right);
  }

  /** The number of the string a merge makes. */
  merged(rank: number): number {
    let n = this.#merged[rank]!;
    if (n < 0) this.#merged[rank] = n = this.#number(this.#texts[this.#parts[2 * rank]!]! + this.#texts[this.#parts[2 * rank + 1]!]!);
    return n;
  }

  #number(text: string): number {
    let n = this.#numbers.get(text);
    if (n !== undefined) return n;
    this.#numbers.set(text, (n = this.#texts.push(text) - 1));
    const c = text.codePointAt(0);
    if (c !== undefined && text.length === (c > 0xffff ? 2 : 1)) this.#chars.set(c, n);
    return n;
  }
}

/** The library's BPE queues a symbol with the rank of the pair it starts; that rank is read
 * here without building the pair's JSON. */
function speedUpRanks(m: BpeModel, table: MergeTable): void {
  m.add_node = (queue, node) => {
    const left = table.numberOf(node.token);
    const right = table.numberOf(node.next!.token);
    const rank = left === undefined || right === undefined ? undefined : table.rank(left, right);
    if (rank === undefined) return;
    node.score = rank + node.bias;
    queue.push(node);
  };
}

/** Words longer than this are cut, into pieces of at least CUT_AT characters. */
const LONG_WORD = 256;
const CUT_AT = 128;

/** Routes the long words of a BPE model (the library's) through cutting and flat merging. */
function speedUpLongWords(m: BpeModel, table: MergeTable): void {
  // suffixes mark the ends of words, and ignore_merges looks words up whole: pieces would differ
  if (m.end_of_word_suffix || m.continuing_subword_suffix || m.ignore_merges || typeof m.bpe !== 'function') return;
  let crossed: Map<string, Set<string>> | undefined;
  const bpe = m.bpe.bind(m);
  const piece = (word: string) => (word.length <= LONG_WORD ? bpe(word) : merge(word, table));
  m.bpe = (word: string): string[] => {
    if (word.length <= LONG_WORD) return bpe(word);
    crossed ??= crossings(m.merges);
    const parts: string[][] = [];
    let start = 0;
    let i = 0;
    let previous = '';
    for (const c of word) {
      if (i - start >= CUT_AT && !crossed.get(previous)?.has(c)) {
        parts.push(piece(word.slice(start, i)));
        start = i;
      }
      previous = c;
      i += c.length;
    }
    parts.push(piece(word.slice(start)));
    return joined(parts);
  };
}

/**
 * For each character x, the characters y such that some merge joins a piece ending in x to
 * a piece starting with y. Between x and any other y (as before a ▁ that follows a letter)
 * BPE can never join the two sides, and each side's merges keep their order, so BPE on the
 * pieces gives the tokens of BPE on the whole.
 */
function crossings(merges: unknown[][]): Map<string, Set<string>> {
  const crossed = new Map<string, Set<string>>();
  for (const pair of merges) {
    const [a, b] = pair;
    if (pair.length !== 2 || typeof a !== 'string' || typeof b !== 'string') continue; // (never applies)
    const x = a.codePointAt(a.length - 2)! > 0xffff ? a.slice(-2) : a.slice(-1);
    let after = crossed.get(x);
    if (!after) crossed.set(x, (after = new Set()));
    after.add(b.codePointAt(0)! > 0xffff ? b.slice(0, 2) : b.slice(0, 1));
  }
  return crossed;
}

const POSITIONS = 2 ** 32;
/** The number of a symbol merged into the one before it. */
const GONE = -2;

/**
 * The library's BPE on one word: repeatedly merge the adjacent pair of lowest rank, the
 * leftmost of pairs of equal rank, until no pair has a rank. Symbols are numbers (-1 for a
 * character no merge has) in a linked list over arrays, and candidates are in a heap of
 * numbers (rank × 2^32 + position of the left symbol), checked against the list when taken
 * out.
 */
function merge(word: string, table: MergeTable): string[] {
  const symbols = new Int32Array(word.length);
  const starts = new Int32Array(word.length + 1);
  let n = 0;
  for (let i = 0; i < word.length; n++) {
    const c = word.codePointAt(i)!;
    starts[n] = i;
    symbols[n] = table.charNumber(c);
    i += c > 0xffff ? 2 : 1;
  }
  starts[n] = word.length;
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  const rankAt = (i: number): number | undefined => {
    const j = next[i]!;
    return j < 0 || symbols[i]! < 0 || symbols[j]! < 0 ? undefined : table.rank(symbols[i]!, symbols[j]!);
  };
  // n - 1 candidates at the start, and each merge takes one out and puts at most two in
  const heap = new Heap(2 * n);
  const candidate = (i: number) => {
    const rank = rankAt(i);
    if (rank !== undefined) heap.push(rank * POSITIONS + i);
  };
  for (let i = 0; i < n - 1; i++) candidate(i);
  while (heap.size > 0) {
    const key = heap.pop();
    const i = key % POSITIONS;
    const rank = (key - i) / POSITIONS;
    // merged away, or its pair changed since
    if (symbols[i] === GONE || rankAt(i) !== rank) continue;
    const j = next[i]!;
    symbols[i] = table.merged(rank);
    symbols[j] = GONE;
    next[i] = next[j]!;
    if (next[i]! >= 0) prev[next[i]!] = i;
    if (prev[i]! >= 0) candidate(prev[i]!);
    candidate(i);
  }
  const tokens: string[] = [];
  for (let i = 0; i >= 0; i = next[i]!) tokens.push(symbols[i]! >= 0 ? table.text(symbols[i]!) : word.slice(starts[i], starts[i + 1]));
  return tokens;
}

/** A heap of numbers, smallest first, of a fixed capacity. */
class Heap {
  readonly #keys: Float64Array;
  size = 0;

  constructor(capacity: number) {
    this.#keys = new Float64Array(capacity);
  }

  push(key: number): void {
    const keys = this.#keys;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[parent]! <= key) break;
      keys[i] = keys[parent]!;
      i = parent;
    }
    keys[i] = key;
  }

  pop(): number {
    const keys = this.#keys;
    const top = keys[0]!;
    const last = keys[--this.size]!;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= this.size) break;
      if (child + 1 < this.size && keys[child + 1]! < keys[child]!) child++;
      if (keys[child]! >= last) break;
      keys[i] = keys[child]!;
      i = child;
    }
    keys[i] = last;
    return top;
  }
}

/**
 * The model's tokens for pre-tokenized words, as the library's `_call` gives them: BPE, then
 * each piece outside the vocabulary as the <0xXX> tokens of its UTF-8 bytes. The byte tokens
 * are made once here. A piece whose byte tokens the vocabulary lacks, one outside it without
 * byte fallback, and a token whose id is the unknown token's (the library fuses runs of them)
 * send the words back to the library's own code, which decides what stands for them.
 */
function speedUpTokens(m: BpeModel): void {
  const ids = m.tokens_to_ids;
  const unknown = m.unk_token_id;
  const bytes = Array.from({ length: 256 }, (_, b) => {
    const token = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
    const id = ids.get(token);
    return id !== undefined && id !== unknown ? token : undefined;
  });
  const own = m._call;
  m._call = (words: string[]): string[] => {
    const tokens = new Gather<string>();
    for (const word of words) {
      if (m.ignore_merges && ids.has(word)) {
        if (ids.get(word) === unknown) return own.call(m, words);
        tokens.push(word);
        continue;
      }
      for (const piece of m.bpe(word)) {
        const id = ids.get(piece);
        if (id !== undefined && id !== unknown) tokens.push(piece);
        else if (id !== undefined || ids.has(piece) || !m.byte_fallback || !pushBytes(piece, bytes, tokens)) return own.call(m, words);
      }
    }
    return tokens.all();
  };
}

const LEAD = [0, 0xc0, 0xe0, 0xf0];

/** Appends the byte tokens of the UTF-8 of text, which writes a lone surrogate as U+FFFD (as
 * TextEncoder does); false if one of them is missing. */
function pushBytes(text: string, bytes: (string | undefined)[], tokens: Gather<string>): boolean {
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) {
      const low = c <= 0xdbff && i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (low >= 0xdc00 && low <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
        i++;
      } else c = 0xfffd;
    }
    // a lead byte with the top bits, then 6 bits in each continuation byte
    const more = c < 0x80 ? 0 : c < 0x800 ? 1 : c < 0x10000 ? 2 : 3;
    const lead = bytes[LEAD[more]! | (c >> (6 * more))];
    if (lead === undefined) return false;
    tokens.push(lead);
    for (let k = more - 1; k >= 0; k--) {
      const token = bytes[0x80 | ((c >> (6 * k)) & 0x3f)];
      if (token === undefined) return false;
      tokens.push(token);
    }
  }
  return true;
}

/** A node of a trie of strings, by UTF-16 code unit. */
interface TrieNode {
  next: Map<number, TrieNode>;
  /** The string that ends here. */
  word?: string;
}

/**
 * Splits text around the strings of a library splitter (added tokens): at each position in
 * turn, the longest string that starts there if one does. The library's splitter walks its
 * trie from every position, looking each character up by a string made for it (made anew
 * for every character outside Latin-1); this one skips positions no string starts with and
 * walks by code unit. The strings are read from the library's trie, left as it is if its
 * shape is not the one known here.
 */
function speedUpSplitter(splitter: { trie?: unknown; split(text: string): string[] }): void {
  if (typeof splitter !== 'object' || splitter === null) return;
  const kind = Object.getPrototypeOf(splitter) as { split?: unknown; _build_trie?: unknown } | null;
  if (typeof splitter.split !== 'function' || splitter.split !== kind?.split || typeof kind._build_trie !== 'function') return;
  const words = trieWords(splitter.trie);
  if (!words) return;
  const root: TrieNode = { next: new Map() };
  const starts = new Uint8Array(0x10000);
  for (const word of words) {
    if (word === '') continue; // (never matched, as in the library)
    let node = root;
    for (let i = 0; i < word.length; i++) {
      const c = word.charCodeAt(i);
      let child = node.next.get(c);
      if (!child) node.next.set(c, (child = { next: new Map() }));
      node = child;
    }
    node.word = word;
    starts[word.charCodeAt(0)] = 1;
  }
  splitter.split = (text: string): string[] => {
    const pieces: string[] = [];
    let start = 0;
    for (let i = 0; i < text.length; ) {
      let found: string | undefined;
      if (starts[text.charCodeAt(i)]) {
        let node: TrieNode | undefined = root;
        for (let j = i; j < text.length && (node = node.next.get(text.charCodeAt(j))); j++) found = node.word ?? found;
      }
      if (found === undefined) {
        i++;
        continue;
      }
      if (i > start) pieces.push(text.slice(start, i));
      pieces.push(found);
      i += found.length;
      start = i;
    }
    if (start < text.length) pieces.push(text.slice(start));
    return pieces;
  };
}

/** The strings of a library trie: objects keyed by one UTF-16 code unit, a string `end` where
 * one ends; null if it is not that. */
function trieWords(trie: unknown): string[] | null {
  const words: string[] = [];
  for (const nodes = [trie]; nodes.length > 0; ) {
    const node = nodes.pop();
    if (typeof node !== 'object' || node === null) return null;
    for (const [key, value] of Object.entries(node)) {
      if (key === 'end' && typeof value === 'string') words.push(value);
      else if (key.length === 1) nodes.push(value);
      else return null;
    }
  }
  return words;
}

/**
 * The library's tokens of a text without the post-processor: split around added tokens, which
 * with lstrip or rstrip take the whitespace next to them; each other section normalized, split
 * around the added tokens that match normalized text, pre-tokenized (knowing its section's
 * index) and given to the model. The same steps as the library's, joining the sections'
 * tokens once where the library copies them twice with flatMap. Two options that laminate's
 * tokenizers never set (remove_space, do_lowercase_and_remove_accent) keep the library's own.
 */
function speedUpSections(hf: Pipeline): void {
  if (hf.remove_space === true || hf.do_lowercase_and_remove_accent) return;
  if (typeof hf.splitter_unnormalized?.split !== 'function' || typeof hf.splitter_normalized?.split !== 'function' || !(hf.added_tokens_map instanceof Map)) return;
  const added = hf.added_tokens_map;
  hf.encode_text = (text: string | null): string[] | null => {
    if (text === null) return null;
    const parts: string[][] = [];
    stripAround(hf.splitter_unnormalized.split(text), added).forEach((section, index) => {
      if (section === '' || added.has(section)) {
        if (section !== '') parts.push([section]);
        return;
      }
      const normalized = hf.normalizer !== null ? hf.normalizer(section) : section;
      if (normalized === '') return;
      for (const part of stripAround(hf.splitter_normalized.split(normalized), added)) {
        if (part === '') continue;
        if (added.has(part)) parts.push([part]);
        else parts.push(hf.model!(hf.pre_tokenizer !== null ? hf.pre_tokenizer(part, { section_index: index }) : [part]));
      }
    });
    return joined(parts);
  };
}

/** Trims the whitespace before each added token with lstrip and after each with rstrip, from
 * the pieces next to it, in order (a trimmed piece is then looked up trimmed). */
function stripAround(pieces: string[], added: Pipeline['added_tokens_map']): string[] {
  pieces.forEach((piece, i) => {
    const token = added.get(piece);
    if (token?.lstrip && i > 0) pieces[i - 1] = pieces[i - 1]!.trimEnd();
    if (token?.rstrip && i < pieces.length - 1) pieces[i + 1] = pieces[i + 1]!.trimStart();
  });
  return pieces;
}

/**
 * Encodes as the library's `encode` does when laminate calls it (no pair, no special tokens,
 * no type ids) and its post-processor passes the tokens through unchanged then (none, or a
 * template of special tokens around one sequence): the tokens of `encode_text`, their ids,
 * and an attention mask of ones, without the copies of the tokens (and of a list of their
 * type ids) that post-processing makes.
 */
function speedUpEncode(hf: Pipeline): void {
  const own = hf.encode;
  const pp = hf.post_processor;
  const passesThrough = pp === null || (pp instanceof library.TemplateProcessingPostProcessor && pp.post_process === library.TemplateProcessingPostProcessor.prototype.post_process && pp._call === library.PostProcessor.prototype._call && oneSequence(pp.config?.single));
  if (!passesThrough || own !== library.Tokenizer.prototype.encode || hf.tokenize_helper !== library.Tokenizer.prototype.tokenize_helper) return;
  hf.encode = (text, options): Encoding => {
    if (typeof text !== 'string' || options?.add_special_tokens !== false || options.text_pair || options.return_token_type_ids) return own.call(hf, text, options);
    const tokens = hf.encode_text(text)!;
    const model = hf.model!;
    const ids = tokens.map((t) => hf.added_tokens_map.get(t)?.id ?? model.tokens_to_ids.get(t) ?? model.unk_token_id);
    return { ids, tokens, attention_mask: new Array<number>(ids.length).fill(1) };
  };
}

/** Whether a template, without its special tokens, is the one sequence A. */
function oneSequence(template: unknown): boolean {
  if (!Array.isArray(template)) return false;
  let sequences = 0;
  for (const item of template) {
    if (typeof item !== 'object' || item === null) return false;
    if ('SpecialToken' in item) continue;
    if (!('Sequence' in item) || (item as { Sequence?: { id?: unknown } }).Sequence?.id !== 'A') return false;
    sequences++;
  }
  return sequences === 1;
}

/**
 * Appends to an array in chunks. An array of more than some 32K elements (128 KiB) lives in
 * V8's large-object space, and each time push outgrows it, it is allocated there anew and
 * copied: fresh memory is slow to get in a virtual machine (a fault per page), and pushing the
 * tokens of a long text one by one took most of the time of encoding it. Chunks stay small,
 * and are joined once, into an array of the final length.
 */
class Gather<T> {
  #done: T[][] = [];
  #chunk: T[] = [];

  push(value: T): void {
    if (this.#chunk.length === CHUNK) {
      this.#done.push(this.#chunk);
      this.#chunk = [];
    }
    this.#chunk.push(value);
  }

  all(): T[] {
    this.#done.push(this.#chunk);
    return joined(this.#done);
  }
}

const CHUNK = 4096;

/** The arrays one after another, allocated once (the one array itself when there is one). */
function joined<T>(parts: T[][]): T[] {
  if (parts.length === 1) return parts[0]!;
  // (a bounded number of arguments per call)
  const batches: T[][] = [];
  for (let i = 0; i < parts.length; i += CHUNK) batches.push(([] as T[]).concat(...parts.slice(i, i + CHUNK)));
  return batches.length === 1 ? batches[0]! : ([] as T[]).concat(...batches);
}
