// Tokenization against ids from the official Hugging Face tokenizers (Rust) on the real
// Mistral v0.3 tokenizer.json, plain vs parse special tokens, decoding, and incremental
// detokenization that never shows a broken character.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

import { Detokenizer, Tokenizer } from '../lib/index.js';
import { fixturesDir, fixturesSkipReason, haveFixtures } from './helpers/fixtures.js';

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
});
