// Tokenization against ids from the official Hugging Face tokenizers (Rust) on the real
// Mistral v0.3 tokenizer.json, plain vs parse special tokens, decoding, incremental
// detokenization that never shows a broken character, long words cut before BPE with the
// same tokens, the encoding fast paths (byte fallback, added-token splitting, post-processing)
// with the same ids and tokens as the library alone, and corrupt tokenizer.json files.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tokenizers from '@huggingface/tokenizers';
import { beforeAll, describe, expect, it, vi } from 'vitest';

import { Detokenizer, FormatError, Tokenizer } from '../lib/index.js';
import { speedUpEncoding } from '../lib/tokenizer/fast-encoding.js';
import { fixturesDir, fixturesSkipReason, haveFixtures, projectRoot } from './helpers/fixtures.js';

interface Row {
  text: string;
  ids: number[];
  ids_no_special: number[];
  decoded: string;
  decoded_skip_special: string;
}

/** Random valid Unicode: ASCII, accents, CJK, emoji (with ZWJ sequences), controls. */
function randomText(seed: number, length: number): string {
  let x = seed;
  const rand = (n: number) => ((x = (x * 1103515245 + 12345) % 2 ** 31), x % n);
  const ranges: [number, number][] = [[0x20, 0x7e], [0x20, 0x7e], [0xc0, 0x24f], [0x4e00, 0x9fff], [0x1f300, 0x1faff], [0x0900, 0x097f], [0x0600, 0x06ff], [0x9, 0xa], [0x200d, 0x200d]];
  let s = '';
  while ([...s].length < length) {
    const [lo, hi] = ranges[rand(ranges.length)]!;
    s += String.fromCodePoint(lo + rand(hi - lo + 1));
  }
  return s.replace(/^\s+/, 'a');
}

/**
 * Text for the encoding fast paths: CJK (and beyond the BMP), emoji sequences, other scripts,
 * control characters, runs of newlines and spaces, characters only byte fallback can write
 * (private use, unpaired surrogates), the text of added tokens whole and in part, and prose;
 * `length` code points.
 */
function stressText(seed: number, length: number): string {
  let x = seed;
  const rand = (n: number) => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0), (x >>> 8) % n);
  const cp = (lo: number, hi: number) => String.fromCodePoint(lo + rand(hi - lo + 1));
  const pick = (list: string[]) => list[rand(list.length)]!;
  const pieces = [
    () => cp(0x4e00, 0x9fff),
    () => cp(0x3040, 0x30ff) + cp(0xac00, 0xd7a3),
    () => cp(0x20000, 0x2a6df),
    () => cp(0x1f300, 0x1faff),
    () => pick(['👩‍👩‍👧', '👍🏽', '🏳️‍🌈', '🇯🇵', '❤️', '🧑🏿‍🚀']),
    () => cp(0x0400, 0x04ff) + cp(0x0370, 0x03ff) + cp(0x0600, 0x06ff) + cp(0x0900, 0x097f) + cp(0x0e00, 0x0e7f),
    () => cp(0xc0, 0x24f),
    () => cp(0, 0x1f) + cp(0x7f, 0x9f),
    () => pick(['\u2028', '\u200d', '\ufeff', '\u00a0']),
    () => '\n'.repeat(1 + rand(40)),
    () => '\r\n'.repeat(1 + rand(4)),
    () => ' '.repeat(1 + rand(40)),
    () => '\t',
    () => cp(0xe000, 0xf8ff),
    () => cp(0xf0000, 0x10ffff),
    () => String.fromCharCode(0xd800 + rand(0x800)), // unpaired, unless the next one pairs it
    () => pick(['[INST]', '[/INST]', '</s>', '<s>', '<unk>', '[control_8]', '[TOOL_CALLS]', '[INS', '</', '<0x0A>', '▁', '▁▁']),
    () => pick(['the quick brown fox ', 'straße über ', 'x=y+1;', 'jumpsoverthelazydog']),
    () => String(rand(1e9)),
  ];
  const out: string[] = [];
  while (out.length < length) out.push(...pieces[rand(pieces.length)]!());
  return out.slice(0, length).join('');
}

describe.skipIf(!haveFixtures)('Mistral v0.3 tokenizer', () => {
  if (!haveFixtures) it.skip(fixturesSkipReason, () => {});
  let tokenizer: Tokenizer;
  let rows: Row[];
  beforeAll(async () => {
    tokenizer = await Tokenizer.load(join(fixturesDir, 'mistral-7b-instruct-v0.3'));
    rows = readFileSync(join(fixturesDir, 'tokenization/mistral_v03.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Row);
  });

  it('parse tokenization and decoding equal Hugging Face on every fixture row', () => {
    expect(rows.length).toBe(74);
    for (const r of rows) {
      expect(tokenizer.encode(r.text), JSON.stringify(r.text)).toEqual(r.ids);
      expect(tokenizer.encode(r.text, { addSpecialTokens: false }), JSON.stringify(r.text)).toEqual(r.ids_no_special);
      expect(tokenizer.decode(r.ids), JSON.stringify(r.text)).toBe(r.decoded);
      expect(tokenizer.decode(r.ids, { skipSpecialTokens: true }), JSON.stringify(r.text)).toBe(r.decoded_skip_special);
    }
  });

  it("plain tokenization never makes control tokens, and equals parse where there is no special text", () => {
    let withSpecialText = 0;
    for (const r of rows) {
      const plain = tokenizer.encode(r.text, { specialTokens: 'plain', addSpecialTokens: false });
      expect(plain.some((id) => tokenizer.isSpecial(id))).toBe(false);
      if (r.ids_no_special.some((id) => tokenizer.isSpecial(id))) withSpecialText++;
      else expect(plain, JSON.stringify(r.text)).toEqual(r.ids_no_special);
      expect(tokenizer.decode(plain)).toBe(tokenizer.decode(r.ids_no_special));
    }
    expect(withSpecialText).toBeGreaterThan(0);
    expect(tokenizer.encode('[INST] hi </s>', { specialTokens: 'plain', addSpecialTokens: false })).not.toContain(3);
    expect(tokenizer.encode('[INST] hi </s>')).toContain(3);
  });

  it('round-trips random Unicode through the byte fallback', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const text = randomText(seed, 60);
      const ids = tokenizer.encode(text, { addSpecialTokens: false });
      expect(tokenizer.decode(ids)).toBe(text);
    }
  });

  it('streams text that never holds a broken character and adds up to the whole', () => {
    for (let seed = 100; seed < 130; seed++) {
      const text = randomText(seed, 40);
      const ids = tokenizer.encode(text, { addSpecialTokens: false });
      const detok = new Detokenizer(tokenizer);
      let streamed = '';
      let byteTokens = 0;
      for (const id of ids) {
        const piece = detok.push(id);
        expect(piece).not.toContain('\uFFFD');
        streamed += piece;
        if (/^<0x[0-9A-F]{2}>$/.test(tokenizer.tokenText(id) ?? '')) byteTokens++;
      }
      streamed += detok.flush();
      expect(streamed).toBe(text);
      expect(byteTokens).toBeGreaterThan(0);
    }
  });

  it('keeps the leading space of a continuation after its prompt', () => {
    const prompt = tokenizer.encode('Hello');
    const detok = new Detokenizer(tokenizer, prompt);
    const pieces = tokenizer.encode(' world, again', { addSpecialTokens: false }).map((id) => detok.push(id));
    expect(pieces.join('') + detok.flush()).toBe(' world, again');
  });

  /** Text with long words: prose, prose without spaces, runs of one character, spaces and
   * newlines, CJK and emoji, digits, code, special-token text and random Unicode. */
  function longWords(seed: number, length: number): string {
    let x = seed;
    const rand = (n: number) => ((x = (x * 1103515245 + 12345) % 2 ** 31), x % n);
    const words = ['the', 'quick', 'brown', 'fox', 'über', 'straße', 'x=y+1;', '42'];
    const pieces = [
      () => 'the quick brown fox ',
      () => Array.from({ length: 1 + rand(120) }, () => words[rand(words.length)]).join(''),
      () => 'aaab'[rand(4)]!.repeat(1 + rand(700)),
      () => ' '.repeat(1 + rand(700)),
      () => '\n'.repeat(1 + rand(5)),
      () => '=-'.repeat(1 + rand(300)),
      () => '東京都の天気は晴れです',
      () => '👩‍👩‍👧🎉',
      () => String(rand(1e9)),
      () => '[INST]</s>',
      () => randomText(seed + x, 20),
    ];
    let s = '';
    while (s.length < length) s += pieces[rand(pieces.length)]!();
    return s;
  }

  it('tokenizes long words as the library alone does', () => {
    const dir = join(fixturesDir, 'mistral-7b-instruct-v0.3');
    const reference = new tokenizers.Tokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')));
    const same = (text: string) => {
      expect(tokenizer.encode(text, { addSpecialTokens: false }), JSON.stringify(text.slice(0, 40))).toEqual(reference.encode(text, { add_special_tokens: false }).ids);
      const plain = text.replaceAll('[INST]</s>', '');
      expect(tokenizer.encode(plain, { specialTokens: 'plain', addSpecialTokens: false }), JSON.stringify(plain.slice(0, 40))).toEqual(reference.encode(plain, { add_special_tokens: false }).ids);
    };
    for (let seed = 1; seed <= 60; seed++) same(longWords(seed, 300 + 60 * seed));
    // runs around the length where words start being cut or merged here
    for (const c of [' ', 'a', '0', '\n', '=', '▁', 'ab', 'é', '中', '🎉'])
      for (const n of [128, 255, 256, 257, 300, 511, 512, 513, 1000, 1024, 1025]) same(`x${c.repeat(n)}y`);
  });

  /** The library as published, with none of laminate's speed-ups. */
  let referenceTokenizer: tokenizers.Tokenizer | undefined;
  const reference = (): tokenizers.Tokenizer => {
    const dir = join(fixturesDir, 'mistral-7b-instruct-v0.3');
    return (referenceTokenizer ??= new tokenizers.Tokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'))));
  };

  it('encodes every kind of text to the ids of the library alone, in both modes', () => {
    const ref = reference();
    const model = ref.model!;
    // plain: the text as one section, as laminate gives it to the library's parts
    const plainIds = (text: string) =>
      text === '' ? [] : model._call(ref.pre_tokenizer!._call(text, { section_index: 0 })).map((t: string) => model.tokens_to_ids.get(t) ?? model.unk_token_id ?? 0);
    const same = (text: string) => {
      const label = JSON.stringify(text.slice(0, 60));
      expect(tokenizer.encode(text, { addSpecialTokens: false }), label).toEqual(ref.encode(text, { add_special_tokens: false }).ids);
      expect(tokenizer.encode(text, { specialTokens: 'plain', addSpecialTokens: false }), label).toEqual(plainIds(text));
    };
    // lengths around the cuts of long words (128, 256) and beyond
    const lengths = [0, 1, 2, 3, 7, 31, 127, 128, 129, 255, 256, 257, 258, 300, 511, 512, 513, 1500];
    for (let seed = 1; seed <= 12; seed++) for (const n of lengths) same(stressText(seed * 7919 + n, n));
    // the kinds one at a time, long
    for (const kind of ['東京都の天気は晴れです', '🎉👩‍👩‍👧', '\n', '\x01\x7f', 'аб', '\ud800', '\udc00x', '[INST]a</s>']) same(kind.repeat(2000));
    // around 4096 tokens, where the model's tokens are gathered in chunks
    for (const n of [4094, 4095, 4096, 8191, 8192]) same(`a${'\n'.repeat(n)}`);
    // more sections (added tokens and the text between) than are joined at once
    same(Array.from({ length: 5000 }, (_, i) => (i % 3 ? '[INST]' : `${i}東`)).join(''));
  });

  it('hands what it does not do fast back to the library, whose results it keeps', () => {
    const dir = join(fixturesDir, 'mistral-7b-instruct-v0.3');
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- free-form edits of parsed JSON
    type Json = Record<string, any>;
    const published = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as Json;
    const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Json;
    interface Internals {
      model: ((words: string[]) => string[]) & object;
      pre_tokenizer: ((text: string, options: object) => string[]) | null;
      splitter_unnormalized: object;
      encode(text: string, options?: object): unknown;
    }
    const variants: [string, (j: Json) => void][] = [
      ['as published', () => {}],
      // CJK, emoji and newlines lack a byte token: the unknown token, runs of it fused
      ['without some byte tokens', (j) => ['<0xE5>', '<0xE6>', '<0xF0>', '<0x0A>'].forEach((t) => delete j['model'].vocab[t])],
      ['without byte fallback', (j) => (j['model'].byte_fallback = false)],
      // a token BPE makes is the unknown token: runs of it fused
      ['with a common unknown token', (j) => (j['model'].unk_token = '▁the')],
      // a post-processor that does more than pass the tokens through
      ['with a template that repeats the text', (j) => (j['post_processor'].single = [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 1 } }])],
      // SentencePiece style: a normalizer, no pre-tokenizer or post-processor, added tokens that
      // strip whitespace, that match normalized text, and that start others
      [
        'normalizing and stripping',
        (j) => {
          j['normalizer'] = { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] };
          j['pre_tokenizer'] = null;
          j['post_processor'] = null;
          const tokens = j['added_tokens'] as Json[];
          Object.assign(tokens.find((t) => t['content'] === '[INST]')!, { lstrip: true, rstrip: true });
          Object.assign(tokens.find((t) => t['content'] === '[/INST]')!, { rstrip: true });
          Object.assign(tokens.find((t) => t['content'] === '[TOOL_CALLS]')!, { normalized: true });
          tokens.push({ id: 32768, content: ' hello world', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false });
          tokens.push({ id: 32769, content: '[IN', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
        },
      ],
    ];
    const texts = [
      ...Array.from({ length: 24 }, (_, i) => stressText(1000 + i, [5, 60, 130, 300][i % 4]!)),
      ' hello world [INST]  a  [/INST]  b [TOOL_CALLS] hello world',
      'the the the fox the',
      `[INST]${'東京\n'.repeat(300)}[/INST]  ${'🎉'.repeat(200)}</s>`,
      '',
    ];
    for (const [name, edit] of variants) {
      const json = structuredClone(published);
      edit(json);
      const ref = new tokenizers.Tokenizer(structuredClone(json), config) as unknown as Internals;
      const fast = new tokenizers.Tokenizer(json, config) as unknown as Internals;
      speedUpEncoding(fast);
      if (name === 'as published') {
        // every speed-up is in place for Mistral's tokenizer
        for (const own of ['encode', 'encode_text']) expect(Object.hasOwn(fast, own), own).toBe(true);
        for (const own of ['_call', 'bpe', 'add_node']) expect(Object.hasOwn(fast.model, own), own).toBe(true);
        expect(Object.hasOwn(fast.splitter_unnormalized, 'split')).toBe(true);
      }
      for (const text of texts) {
        const label = `${name}: ${JSON.stringify(text.slice(0, 40))}`;
        expect(fast.encode(text, { add_special_tokens: false }), label).toEqual(ref.encode(text, { add_special_tokens: false }));
        expect(fast.encode(text), label).toEqual(ref.encode(text));
        const words = ref.pre_tokenizer ? ref.pre_tokenizer(text, { section_index: 0 }) : [text];
        expect(fast.model(words), label).toEqual(ref.model(words));
      }
    }
  });

  it('gives the library no word longer than 256 characters to merge', async () => {
    // the library's BPE, watched (Tokenizer.load binds it when loading)
    const bpe = vi.spyOn((tokenizers as unknown as { BPE: { prototype: { bpe(word: string): string[] } } }).BPE.prototype, 'bpe');
    try {
      const watched = await Tokenizer.load(join(fixturesDir, 'mistral-7b-instruct-v0.3'));
      bpe.mockClear();
      // one 20K-character word for Mistral's pre-tokenizer
      const text = longWords(7, 20_000).replaceAll('[INST]</s>', '');
      expect(watched.encode(text)).toEqual(tokenizer.encode(text));
      const longest = Math.max(...bpe.mock.calls.map(([word]) => word.length));
      expect(longest).toBeGreaterThan(100);
      expect(longest).toBeLessThanOrEqual(256);
    } finally {
      bpe.mockRestore();
    }
  });
});

describe('a corrupt tokenizer.json', () => {
  // the bundled demo model's tokenizer: BPE with byte fallback, Metaspace, a decoder chain
  const good = readFileSync(join(projectRoot, 'models/tiny-mistral-bf16/tokenizer.json'), 'utf8');
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- free-form edits of parsed JSON
  type Json = Record<string, any>;
  const corruptions: [string, (j: Json) => void, string | RegExp][] = [
    ['no model', (j) => delete j['model'], 'model must be an object, not undefined'],
    ['an unknown model type', (j) => (j['model'].type = 'Transformer'), 'model.type must be one of BPE, WordPiece, WordLevel, Unigram, not "Transformer"'],
    ['no vocabulary', (j) => delete j['model'].vocab, 'model.vocab is missing'],
    ['a vocabulary as a list', (j) => (j['model'].vocab = [['a', 0]]), 'model.vocab must be an object of token ids, not [["a",0]]'],
    ['a token id that is a string', (j) => (j['model'].vocab['▁the'] = '7'), 'model.vocab["▁the"] must be a token id (an integer), not "7"'],
    ['a token id that is a fraction', (j) => (j['model'].vocab['▁the'] = 7.5), 'model.vocab["▁the"] must be a token id (an integer), not 7.5'],
    ['a negative token id', (j) => (j['model'].vocab['▁the'] = -1), 'token id -1 is outside [0, 4194304) (model.vocab["▁the"])'],
    ['merges as an object', (j) => (j['model'].merges = { a: 'b' }), 'model.merges must be a list, not {"a":"b"}'],
    ['a merge that is a number', (j) => (j['model'].merges[3] = 42), 'model.merges[3] must be a merge ("a b", as the first is), not 42'],
    ['a merge pair among strings', (j) => (j['model'].merges[3] = ['▁', 't']), 'model.merges[3] must be a merge ("a b", as the first is), not ["▁","t"]'],
    ['a merge of one piece', (j) => (j['model'].merges = [['▁', 't'], ['a']]), 'model.merges[1] must be a merge (["a", "b"], as the first is), not ["a"]'],
    ['byte_fallback not a boolean', (j) => (j['model'].byte_fallback = 'yes'), 'model.byte_fallback must be true or false, not "yes"'],
    ['no added_tokens', (j) => delete j['added_tokens'], 'added_tokens must be a list, not undefined'],
    ['an added token that is null', (j) => (j['added_tokens'][1] = null), 'added_tokens[1] must be an object, not null'],
    ['an added token without an id', (j) => delete j['added_tokens'][1].id, 'added_tokens[1].id is missing'],
    ['an added token whose content is a number', (j) => (j['added_tokens'][2].content = 2), 'added_tokens[2].content must be a string, not 2'],
    ['no normalizer key', (j) => delete j['normalizer'], 'normalizer is missing (null when there is none)'],
    ['a normalizer without a type', (j) => (j['normalizer'] = { pattern: { String: ' ' } }), 'normalizer.type must be one of Sequence, Replace, Prepend'],
    ['a Replace normalizer without a pattern', (j) => (j['normalizer'] = { type: 'Replace', content: '▁' }), 'normalizer.pattern is missing'],
    ['a pre-tokenizer given as a string', (j) => (j['pre_tokenizer'] = 'Metaspace'), 'pre_tokenizer must be a pre-tokenizer object with a "type", not "Metaspace"'],
    ['a Metaspace replacement that is a number', (j) => (j['pre_tokenizer'].replacement = 9601), 'pre_tokenizer.replacement must be a string, not 9601'],
    ['an unknown prepend_scheme', (j) => (j['pre_tokenizer'].prepend_scheme = 'sometimes'), 'pre_tokenizer.prepend_scheme must be one of always, first, never, not "sometimes"'],
    ['a Split without a behavior', (j) => (j['pre_tokenizer'] = { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: '\\s' } }] }), 'pre_tokenizer.pretokenizers[0].behavior is missing'],
    ['decoders that are not a list', (j) => (j['decoder'].decoders = { type: 'Fuse' }), 'decoder.decoders must be a list, not {"type":"Fuse"}'],
    ['a decoder that is null', (j) => (j['decoder'].decoders[1] = null), 'decoder.decoders[1] must be a decoder object with a "type", not null'],
    ['a decoder pattern that is a string', (j) => (j['decoder'].decoders[0].pattern = '▁'), 'decoder.decoders[0].pattern must be {"Regex": string} or {"String": string}, not "▁"'],
    ['a Strip decoder with a string start', (j) => (j['decoder'].decoders[3].start = '1'), 'decoder.decoders[3].start must be a non-negative integer, not "1"'],
    ['a template that is not a list', (j) => (j['post_processor'].single = '<s> $A'), 'post_processor.single must be a list, not "<s> $A"'],
    ['Sequences nested without end', (j) => { let d: Json = { type: 'Fuse' }; for (let i = 0; i < 100; i++) d = { type: 'Sequence', decoders: [d] }; j['decoder'] = d; }, /tokenizer\.json: decoder(\.decoders\[0\])+ nests more than 64 Sequences$/],
  ];
  it.each(corruptions)('with %s is a FormatError naming the field', async (_name, corrupt, message) => {
    const dir = mkdtempSync(join(tmpdir(), 'laminate-tokenizer-'));
    const json = JSON.parse(good) as Json;
    corrupt(json);
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
    const load = Tokenizer.load(dir);
    await expect(load).rejects.toThrow(FormatError);
    await expect(load).rejects.toThrow(typeof message === 'string' ? `${join(dir, 'tokenizer.json')}: ${message}` : message);
  });

  it('is not the only kind: the demo tokenizer and a merges list of pairs load', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'laminate-tokenizer-'));
    writeFileSync(join(dir, 'tokenizer.json'), good);
    const plain = await Tokenizer.load(dir);
    const json = JSON.parse(good) as Json;
    json['model'].merges = (json['model'].merges as string[]).map((m) => m.split(' '));
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
    const pairs = await Tokenizer.load(dir);
    expect(pairs.encode('Hello world, again')).toEqual(plain.encode('Hello world, again'));
  });
});
