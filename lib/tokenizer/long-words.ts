// BPE on long words, with the tokens of @huggingface/tokenizers. Its BPE keeps an object per
// symbol and per merge candidate, and on one long word (Mistral's pre-tokenizer makes a
// whole text one word) they all stay alive at once, past the garbage collector's young
// generation: several µs per character, a second for a prompt that fits a context. So a long
// word is first cut where no merge can cross, and the library runs on the pieces; a piece
// that stays long (a run of one character, text without such places) is merged here over
// flat arrays.

/** The parts of the library's BPE model used here. */
interface BpeModel {
  merges: [string, string][];
  bpe_ranks: Map<string, number>;
  bpe(word: string): string[];
  end_of_word_suffix?: string;
  continuing_subword_suffix: string | null;
  ignore_merges: boolean;
}

/** Words longer than this are cut, into pieces of at least CUT_AT characters. */
const LONG_WORD = 256;
const CUT_AT = 128;

/** Routes the long words of a BPE model (the library's) through cutting and flat merging. */
export function speedUpLongWords(model: unknown): void {
  const m = model as BpeModel;
  // (ranks below 2^21 keep the heap keys of `merge` exact)
  if (!Array.isArray(m.merges) || !(m.bpe_ranks instanceof Map) || typeof m.bpe !== 'function' || m.merges.length >= 2 ** 21) return;
  // suffixes mark the ends of words, and ignore_merges looks words up whole: pieces would differ
  if (m.end_of_word_suffix || m.continuing_subword_suffix || m.ignore_merges) return;
  let crossed: Map<string, Set<string>> | undefined;
  const bpe = m.bpe.bind(m);
  const piece = (word: string) => (word.length <= LONG_WORD ? bpe(word) : merge(word, m.bpe_ranks));
  m.bpe = (word: string): string[] => {
    if (word.length <= LONG_WORD) return bpe(word);
    crossed ??= crossings(m.merges);
    const tokens: string[] = [];
    let start = 0;
    let i = 0;
    let previous = '';
    for (const c of word) {
      if (i - start >= CUT_AT && !crossed.get(previous)?.has(c)) {
        for (const t of piece(word.slice(start, i))) tokens.push(t);
        start = i;
      }
      previous = c;
      i += c.length;
    }
    for (const t of piece(word.slice(start))) tokens.push(t);
    return tokens;
  };
}

/**
 * For each character x, the characters y such that some merge joins a piece ending in x to
 * a piece starting with y. Between x and any other y (as before a ▁ that follows a letter)
 * BPE can never join the two sides, and each side's merges keep their order, so BPE on the
 * pieces gives the tokens of BPE on the whole.
 */
function crossings(merges: [string, string][]): Map<string, Set<string>> {
  const crossed = new Map<string, Set<string>>();
  for (const [a, b] of merges) {
    const x = a.codePointAt(a.length - 2)! > 0xffff ? a.slice(-2) : a.slice(-1);
    let after = crossed.get(x);
    if (!after) crossed.set(x, (after = new Set()));
    after.add(b.codePointAt(0)! > 0xffff ? b.slice(0, 2) : b.slice(0, 1));
  }
  return crossed;
}

const POSITIONS = 2 ** 32;

/**
 * The library's BPE on one word: repeatedly merge the adjacent pair of lowest rank, the
 * leftmost of pairs of equal rank, until no pair has a rank. Symbols are kept in a linked
 * list over arrays, and candidates in a heap of numbers (rank × 2^32 + position of the left
 * symbol), checked against the list when taken out.
 */
function merge(word: string, ranks: Map<string, number>): string[] {
  const symbols = Array.from(word);
  const n = symbols.length;
  const next = Int32Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
  const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
  const heap: number[] = [];
  // the ranks of the pairs met so far, by left and right symbol (a long word repeats them)
  const known = new Map<string, Map<string, number | undefined>>();
  const rankAt = (i: number): number | undefined => {
    if (next[i]! < 0) return undefined;
    const [a, b] = [symbols[i]!, symbols[next[i]!]!];
    let row = known.get(a);
    if (!row) known.set(a, (row = new Map()));
    if (!row.has(b)) row.set(b, ranks.get(JSON.stringify([a, b])));
    return row.get(b);
  };
  const candidate = (i: number) => {
    const rank = rankAt(i);
    if (rank !== undefined) push(heap, rank * POSITIONS + i);
  };
  for (let i = 0; i < n - 1; i++) candidate(i);
  while (heap.length > 0) {
    const key = pop(heap);
    const i = key % POSITIONS;
    // merged away, or its pair changed since
    if (symbols[i] === '' || rankAt(i) !== (key - i) / POSITIONS) continue;
    const j = next[i]!;
    symbols[i] += symbols[j]!;
    symbols[j] = '';
    next[i] = next[j]!;
    if (next[i]! >= 0) prev[next[i]!] = i;
    if (prev[i]! >= 0) candidate(prev[i]!);
    candidate(i);
  }
  const tokens: string[] = [];
  for (let i = 0; i >= 0; i = next[i]!) tokens.push(symbols[i]!);
  return tokens;
}

function push(heap: number[], key: number): void {
  let i = heap.length;
  heap.push(key);
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent]! <= key) break;
    heap[i] = heap[parent]!;
    i = parent;
  }
  heap[i] = key;
}

function pop(heap: number[]): number {
  const top = heap[0]!;
  const last = heap.pop()!;
  if (heap.length > 0) {
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= heap.length) break;
      if (child + 1 < heap.length && heap[child + 1]! < heap[child]!) child++;
      if (heap[child]! >= last) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
  }
  return top;
}
