// The prefix cache: full KV pages published by one generation are taken by the next whose
// prompt begins with the same tokens, with the same logits as computing them; pages are
// shared, never written by a second sequence, and reclaimed least recently used first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, type ChatMessage, type Model } from '../lib/index.js';

let cached: Model;
let plain: Model;
beforeAll(async () => {
  cached = await loadModel(undefined, { threads: 2 });
  plain = await loadModel(undefined, { threads: 2, prefixCache: false });
});
afterAll(() => {
  cached.dispose();
  plain.dispose();
});

const PAGE = 16;
const story = 'The function of the heart is to pump blood through the body. The lungs take in air and give out carbon dioxide. The stomach';

describe('generations through the prefix cache', () => {
  it('take the full pages of an earlier prompt and give the same tokens and log-probabilities', async () => {
    const prompt = cached.tokenize(story);
    const first = await cached.generate(story, { maxTokens: 24, logprobs: 3 });
    expect(first.cachedTokens).toBe(0);
    const again = await cached.generate(story, { maxTokens: 24, logprobs: 3 });
    // every full page of the prompt but the one that holds its last token
    expect(again.cachedTokens).toBe(Math.floor((prompt.length - 1) / PAGE) * PAGE);
    expect(again.cachedTokens).toBeGreaterThan(0);
    const reference = await plain.generate(story, { maxTokens: 24, logprobs: 3 });
    expect(reference.cachedTokens).toBe(0);
    expect(again.tokens).toEqual(reference.tokens);
    expect(again.logprobs).toEqual(reference.logprobs);
    expect(first.logprobs).toEqual(reference.logprobs);
    expect(cached.cacheStats().pagesInUse).toBe(0);
    expect(cached.cacheStats().cachedPages).toBeGreaterThan(0);
  });

  it('a prompt that departs inside a page reuses only the pages before it', async () => {
    const ids = cached.tokenize(story);
    await cached.generate({ tokens: ids, maxTokens: 2 });
    const changed = [...ids];
    changed[PAGE + 3] = (changed[PAGE + 3]! + 1) % 2048;
    const r = await cached.generate({ tokens: changed, maxTokens: 8, logprobs: 1 });
    expect(r.cachedTokens).toBe(PAGE);
    const reference = await plain.generate({ tokens: changed, maxTokens: 8, logprobs: 1 });
    expect(r.logprobs).toEqual(reference.logprobs);
  });

  it('a page matches only after the same pages: the same tokens at another position are not a hit', async () => {
    const ids = cached.tokenize(story);
    await cached.generate({ tokens: ids, maxTokens: 1 });
    const shifted = ids.slice(PAGE);
    const r = await cached.generate({ tokens: shifted, maxTokens: 8, logprobs: 1 });
    expect(r.cachedTokens).toBe(0);
    expect(r.logprobs).toEqual((await plain.generate({ tokens: shifted, maxTokens: 8, logprobs: 1 })).logprobs);
  });

  it('a ten-turn conversation prefills only each new turn and says what the plain model says', async () => {
    // (no system message: Mistral's template moves it to the last user turn, so it would
    // change the prompt's beginning every turn)
    const messages: ChatMessage[] = [];
    const questions = ['What is a list?', 'And a tuple?', 'What is a dict?', 'How do I loop?', 'What is a set?', 'What does len do?', 'What is None?', 'What is a class?', 'What is import?', 'What is pip?'];
    let previousPrompt = 0;
    for (const [turn, q] of questions.entries()) {
      messages.push({ role: 'user', content: q });
      const r = await cached.chat(messages, { maxTokens: 12 });
      const reference = await plain.chat(messages, { maxTokens: 12 });
      expect(r.tokens).toEqual(reference.tokens);
      if (turn > 0) expect(r.cachedTokens).toBeGreaterThanOrEqual(Math.floor(previousPrompt / PAGE) * PAGE - PAGE);
      previousPrompt = r.promptTokens;
      messages.push({ role: 'assistant', content: r.text });
    }
  });

  it('equal prompts at once end up sharing their pages, and every one gets the same text', async () => {
    const prompt = `${story} is where food`;
    const results = await Promise.all([...Array(5)].map(() => cached.generate(prompt, { maxTokens: 6 })));
    const reference = await plain.generate(prompt, { maxTokens: 6 });
    for (const r of results) expect(r.tokens).toEqual(reference.tokens);
    expect(cached.cacheStats().pagesInUse).toBe(0);
  });
});

describe('pages', () => {
  it('are shared: a second sequence holds the published pages without new ones, and cannot cut inside them', async () => {
    const engine = cached._engine();
    const tokens = Int32Array.from(cached.tokenize(`${story} breaks down food with acid`)).subarray(0, 40);
    const before = cached.cacheStats();
    const a = engine.createSequence(true);
    const first = await engine.step([{ sequence: a, tokens, logits: 1 }], undefined);
    expect(cached.cacheStats().pagesInUse).toBe(before.pagesInUse + 3);
    const b = engine.createSequence(true);
    expect(engine.attachPrefix(b, tokens)).toBe(32);
    // the two full pages are held by both; no page was taken
    expect(cached.cacheStats().pagesInUse).toBe(before.pagesInUse + 3);
    const second = await engine.step([{ sequence: b, tokens: tokens.subarray(32), logits: 1 }], undefined);
    expect(second.logits).toEqual(first.logits);
    expect(cached.cacheStats().pagesInUse).toBe(before.pagesInUse + 4);
    expect(() => engine.truncateSequence(b, 20)).toThrow(/other sequences share/);
    engine.freeSequence(a);
    // b alone holds the shared pages now: cutting inside one takes it back from the cache
    engine.truncateSequence(b, 20);
    const c = engine.createSequence(true);
    expect(engine.attachPrefix(c, tokens)).toBe(16);
    engine.freeSequence(b);
    engine.freeSequence(c);
    expect(cached.cacheStats().pagesInUse).toBe(before.pagesInUse);
  });

  it('are reclaimed when the pool runs short, least recently used first', async () => {
    // 12 pages of 16 positions; each prompt below fills 3 full pages and a partial one
    await using small = await loadModel(undefined, { threads: 2, kvCacheTokens: 12 * PAGE });
    const prompt = (i: number) => Array.from({ length: 3 * PAGE + 5 }, (_, j) => 3 + ((i * 131 + j * 7) % 2000));
    const hit = async (i: number, maxTokens = 1) => (await small.generate({ tokens: prompt(i), maxTokens })).cachedTokens;
    expect(await hit(0)).toBe(0);
    expect(await hit(1)).toBe(0);
    expect(await hit(2)).toBe(0);
    expect(small.cacheStats().cachedPages).toBe(9);
    expect(await hit(0)).toBe(3 * PAGE); // 0 is now the most recent
    // 3 needs 4 pages and only 3 were never used: the least recent cached page goes (1's last)
    expect(await hit(3)).toBe(0);
    expect(await hit(0)).toBe(3 * PAGE);
    expect(await hit(2)).toBe(3 * PAGE);
    expect(await hit(1)).toBe(2 * PAGE);
    // a request that needs the whole pool takes every cached page
    const long = await small.generate({ tokens: prompt(9).slice(0, 20), maxTokens: 12 * PAGE - 20, stopAtEos: false });
    expect(long.tokens.length).toBe(12 * PAGE - 20);
    expect(small.cacheStats().pagesInUse).toBe(0);
    expect(await hit(0)).toBe(0);
  });
});
