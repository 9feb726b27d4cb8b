// tokenizer.json, checked before @huggingface/tokenizers reads it: the structure that
// laminate and the library rely on (the model with its vocabulary and merges, the added
// tokens, and the normalizer, pre-tokenizer, post-processor and decoder with the fields each
// reads), so that a corrupt file gives a FormatError that names the field, not the
// library's TypeError, or a tokenizer that quietly gives other ids.
import { FormatError } from '../errors.js';
import { LIMITS } from '../model/config.js';

class Problem extends Error {}

/** Checks a value found at `at` (a path such as `model.merges[5]`); throws a Problem. */
type Check = (value: unknown, at: string, depth: number) => void;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const show = (v: unknown): string => {
  const s = v === undefined ? 'undefined' : JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 40)}...` : s;
};
const must = (ok: boolean, at: string, what: string, v: unknown): void => {
  if (!ok) throw new Problem(`${at} must be ${what}, not ${show(v)}`);
};
const oneOf =
  (...values: string[]): Check =>
  (v, at) =>
    must(values.includes(v as string), at, `one of ${values.join(', ')}`, v);
const list =
  (item: Check): Check =>
  (v, at, depth) => {
    must(Array.isArray(v), at, 'a list', v);
    (v as unknown[]).forEach((x, i) => item(x, `${at}[${i}]`, depth));
  };
/** A long list whose items are each checked by `ok`; the first that fails is reported. */
const longList =
  (ok: (x: unknown) => boolean, what: string): Check =>
  (v, at) => {
    must(Array.isArray(v), at, 'a list', v);
    const items = v as unknown[];
    for (let i = 0; i < items.length; i++) if (!ok(items[i])) must(false, `${at}[${i}]`, what, items[i]);
  };
const pair = (v: unknown, second: 'string' | 'number'): boolean => Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === second;

const tokenId: Check = (v, at) => {
  must(Number.isSafeInteger(v), at, 'a token id (an integer)', v);
  // token ids past any real vocabulary would make the library build tables of that size
  if ((v as number) < 0 || (v as number) >= LIMITS.vocab) throw new Problem(`token id ${String(v)} is outside [0, ${LIMITS.vocab}) (${at})`);
};

const KINDS: Record<string, Check> = {
  string: (v, at) => must(typeof v === 'string', at, 'a string', v),
  bool: (v, at) => must(typeof v === 'boolean', at, 'true or false', v),
  count: (v, at) => must(Number.isSafeInteger(v) && (v as number) >= 0, at, 'a non-negative integer', v),
  number: (v, at) => must(typeof v === 'number', at, 'a number', v),
  pattern: (v, at) => must(isObject(v) && (typeof v['Regex'] === 'string' || typeof v['String'] === 'string'), at, '{"Regex": string} or {"String": string}', v),
  prepend_scheme: oneOf('always', 'first', 'never'),
  behavior: oneOf('Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous'),
  // post-processors: ["<s>", 1]; template pieces: {"SpecialToken": {"id": "<s>", "type_id": 0}} or {"Sequence": {"id": "A", ...}}
  special: (v, at) => must(pair(v, 'number') && Number.isSafeInteger((v as unknown[])[1]), at, 'a [token, id] pair', v),
  template: list((v, at) => {
    const piece = isObject(v) ? (v['SpecialToken'] ?? v['Sequence']) : undefined;
    must(isObject(piece) && typeof piece['id'] === 'string', at, '{"SpecialToken": {"id": ...}} or {"Sequence": {"id": ...}}', v);
  }),
  vocab: (v, at) => {
    must(isObject(v), at, 'an object of token ids', v);
    const ids = v as Record<string, unknown>;
    for (const token in ids) {
      const id = ids[token];
      if (!(Number.isSafeInteger(id) && (id as number) >= 0 && (id as number) < LIMITS.vocab)) tokenId(id, `${at}[${JSON.stringify(token)}]`, 0);
    }
  },
  // Unigram: [["<unk>", 0], ["▁the", -3.2], ...]
  scores: longList((x) => pair(x, 'number'), 'a [token, score] pair'),
  // all "a b", or all ["a", "b"]
  merges: (v, at, depth) => {
    const pairs = Array.isArray(v) && Array.isArray(v[0]);
    longList(pairs ? (x) => pair(x, 'string') : (x) => typeof x === 'string' && x.includes(' '), `a merge (${pairs ? '["a", "b"]' : '"a b"'}, as the first is)`)(v, at, depth);
  },
  added_token: (v, at) => fields(v, at, 0, { id: 'tokenId', content: 'string', special: 'bool?', lstrip: 'bool?', rstrip: 'bool?', normalized: 'bool?', single_word: 'bool?' }),
  tokenId,
};

const BYTE_LEVEL = { add_prefix_space: 'bool?', trim_offsets: 'bool?', use_regex: 'bool?' };
const REPLACE = { pattern: 'pattern', content: 'string' };
/** The normalizers, pre-tokenizers, post-processors and decoders the library knows, each
 * with the fields it reads (`?`: may be absent or null). */
const COMPONENTS: Record<string, Record<string, Record<string, string>>> = {
  normalizer: {
    Sequence: { normalizers: 'normalizer[]' },
    Replace: REPLACE,
    Prepend: { prepend: 'string' },
    Strip: { strip_left: 'bool?', strip_right: 'bool?' },
    BertNormalizer: { clean_text: 'bool?', handle_chinese_chars: 'bool?', strip_accents: 'bool?', lowercase: 'bool?' },
    Precompiled: { precompiled_charsmap: 'string?' },
    NFC: {},
    NFD: {},
    NFKC: {},
    NFKD: {},
    StripAccents: {},
    Lowercase: {},
  },
  pre_tokenizer: {
    Sequence: { pretokenizers: 'pre_tokenizer[]' },
    Metaspace: { replacement: 'string?', str_rep: 'string?', prepend_scheme: 'prepend_scheme?', add_prefix_space: 'bool?', split: 'bool?' },
    ByteLevel: BYTE_LEVEL,
    Split: { pattern: 'pattern', behavior: 'behavior', invert: 'bool?' },
    Replace: REPLACE,
    Digits: { individual_digits: 'bool?' },
    FixedLength: { length: 'count' },
    Punctuation: { behavior: 'behavior?' },
    BertPreTokenizer: {},
    Whitespace: {},
    WhitespaceSplit: {},
  },
  post_processor: {
    Sequence: { processors: 'post_processor[]' },
    TemplateProcessing: { single: 'template', pair: 'template' },
    BertProcessing: { sep: 'special', cls: 'special' },
    RobertaProcessing: { sep: 'special', cls: 'special', trim_offsets: 'bool?', add_prefix_space: 'bool?' },
    ByteLevel: BYTE_LEVEL,
  },
  decoder: {
    Sequence: { decoders: 'decoder[]' },
    Replace: REPLACE,
    Strip: { content: 'string?', start: 'count?', stop: 'count?' },
    Metaspace: { replacement: 'string?', prepend_scheme: 'prepend_scheme?', add_prefix_space: 'bool?', split: 'bool?' },
    WordPiece: { prefix: 'string?', cleanup: 'bool?' },
    BPEDecoder: { suffix: 'string?' },
    CTC: { pad_token: 'string?', word_delimiter_token: 'string?', cleanup: 'bool?' },
    ByteLevel: BYTE_LEVEL,
    ByteFallback: {},
    Fuse: {},
  },
};

/** The models the library knows, with their fields. */
const MODELS: Record<string, Record<string, string>> = {
  BPE: { vocab: 'vocab', merges: 'merges', unk_token: 'string?', byte_fallback: 'bool?', fuse_unk: 'bool?', ignore_merges: 'bool?', continuing_subword_prefix: 'string?', end_of_word_suffix: 'string?', dropout: 'number?' },
  WordPiece: { vocab: 'vocab', unk_token: 'string', continuing_subword_prefix: 'string?', max_input_chars_per_word: 'count?' },
  WordLevel: { vocab: 'vocab', unk_token: 'string?' },
  Unigram: { vocab: 'scores', unk_id: 'count?', byte_fallback: 'bool?' },
};

/** Sequences nest no deeper than this (the library builds them recursively). */
const MAX_DEPTH = 64;

for (const [kind, types] of Object.entries(COMPONENTS)) {
  const component: Check = (v, at, depth) => {
    if (depth > MAX_DEPTH) throw new Problem(`${at} nests more than ${MAX_DEPTH} Sequences`);
    must(isObject(v), at, `a ${kind.replace('_', '-')} object with a "type"`, v);
    const { type } = v as { type?: unknown };
    must(typeof type === 'string' && Object.hasOwn(types, type), `${at}.type`, `one of ${Object.keys(types).join(', ')}`, type);
    fields(v, at, depth + 1, types[type as string]!);
  };
  KINDS[kind] = component;
  KINDS[`${kind}[]`] = list(component);
}

/** Checks the fields of an object, each by its kind (`kind?`: may be absent or null). */
function fields(v: unknown, at: string, depth: number, kinds: Record<string, string>): void {
  must(isObject(v), at, 'an object', v);
  for (const [name, kind] of Object.entries(kinds)) {
    const value = (v as Record<string, unknown>)[name];
    const where = at ? `${at}.${name}` : name;
    const optional = kind.endsWith('?');
    if (value === undefined || value === null) {
      if (optional) continue;
      throw new Problem(`${where} is missing`);
    }
    KINDS[optional ? kind.slice(0, -1) : kind]!(value, where, depth);
  }
}

/** Throws a FormatError naming `path` and the field when `json` (a parsed tokenizer.json)
 * is not a tokenizer that @huggingface/tokenizers can run as laminate uses it. */
export function checkTokenizerJson(path: string, json: Record<string, unknown>): void {
  try {
    const model = json['model'];
    must(isObject(model), 'model', 'an object', model);
    const m = model as Record<string, unknown>;
    // files without a model type: the library's guess
    const type = m['type'] ?? (Array.isArray(m['vocab']) ? 'Unigram' : 'merges' in m ? 'BPE' : 'WordLevel');
    must(typeof type === 'string' && Object.hasOwn(MODELS, type), 'model.type', `one of ${Object.keys(MODELS).join(', ')}`, type);
    fields(m, 'model', 0, MODELS[type as string]!);
    if (type === 'Unigram' && m['unk_id'] != null) must((m['unk_id'] as number) < (m['vocab'] as unknown[]).length, 'model.unk_id', 'an index into model.vocab', m['unk_id']);
    list(KINDS['added_token']!)(json['added_tokens'], 'added_tokens', 0);
    // the library wants each key, null when there is none
    for (const kind of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) {
      if (!(kind in json)) throw new Problem(`${kind} is missing (null when there is none)`);
      if (json[kind] !== null) KINDS[kind]!(json[kind], kind, 0);
    }
  } catch (e) {
    if (e instanceof Problem) throw new FormatError(path, e.message);
    throw e;
  }
}
