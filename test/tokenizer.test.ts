// Tokenization against ids from the official Hugging Face tokenizers (Rust) on the real
// Mistral v0.3 tokenizer.json, plain vs parse special tokens, decoding, incremental
// detokenization that never shows a broken character, long words cut before BPE with the
// same tokens, and corrupt tokenizer.json files.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tokenizers from '@huggingface/tokenizers';
import { beforeAll, describe, expect, it, vi } from 'vitest';

import { Detokenizer, FormatError, Tokenizer } from '../lib/index.js';
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
