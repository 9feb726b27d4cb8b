// What happens to a generation's pages when its caller goes away: a loop left early, a chat
// disposed mid-turn, a sequence dropped without dispose(); a step that would take pages
// promised to generations; a logit bias that leaves nothing to choose.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { CapacityError, loadModel, type Model } from '../lib/index.js';

let model: Model;
beforeAll(async () => {
  model = await loadModel(undefined, { threads: 2 });
});
afterAll(() => model.dispose());

const settle = async (check: () => boolean) => {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  return check();
};

describe('a caller that goes away', () => {
  it('leaving a for await early stops the generation and frees its pages', async () => {
    const generation = model.generate('The function', { maxTokens: 3000, stopAtEos: false });
    let chunks = 0;
    for await (const _ of generation) if (++chunks === 3) break;
    await expect(generation).rejects.toThrow(/aborted/);
    expect(await settle(() => model.pendingRequests.active === 0 && model.cacheStats().pagesInUse === 0)).toBe(true);
  });

  it('a chat disposed mid-turn stops its turn; the generations batched with it go on untouched', async () => {
    const alone = await model.generate('Python is', { maxTokens: 40, stopAtEos: false });
    const chat = model.createChat();
    const turn = chat.send('Tell me about lists', { maxTokens: 400, stopAtEos: false });
    const other = model.generate('Python is', { maxTokens: 40, stopAtEos: false });
    for await (const _ of turn) {
      chat.dispose();
      break;
    }
    await expect(turn).rejects.toThrow(/aborted/);
    expect((await other).tokens).toEqual(alone.tokens);
    expect(await settle(() => model.cacheStats().pagesInUse === 0)).toBe(true);
  });

  it('a sequence dropped without dispose() gives its pages back when collected', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const before = model.cacheStats().pagesInUse;
    await (async () => {
      for (let i = 0; i < 4; i++) {
        const s = model.createSequence();
        await model.step([{ sequence: s, tokens: [1, 366, 474, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23] }]);
      }
    })();
    expect(model.cacheStats().pagesInUse).toBe(before + 8);
    expect(await settle(() => (gc(), model.cacheStats().pagesInUse === before))).toBe(true);
  });
});

describe('pages promised to generations', () => {
  it('a step on a caller sequence cannot take them', async () => {
    await using small = await loadModel(undefined, { threads: 2, kvCacheTokens: 128 });
    const generation = small.generate('The function', { maxTokens: 100, stopAtEos: false }); // 7 of 8 pages promised
    const own = small.createSequence();
    await expect(small.step([{ sequence: own, tokens: Array.from({ length: 40 }, (_, i) => 3 + i) }])).rejects.toThrow(CapacityError);
    expect((await generation).tokens.length).toBe(100);
    await small.step([{ sequence: own, tokens: Array.from({ length: 40 }, (_, i) => 3 + i) }]);
    own.dispose();
  });
});

describe('a logit bias that bans every token', () => {
  it('is an error, greedy or sampling, never a banned token', async () => {
    const all = Object.fromEntries(Array.from({ length: model.config.vocabSize }, (_, i) => [i, -Infinity]));
    await expect(model.generate('The function', { logitBias: all })).rejects.toThrow(/every token is banned/);
    await expect(model.generate('The function', { logitBias: all, temperature: 1, seed: 1 })).rejects.toThrow(/every token is banned/);
    expect(await settle(() => model.cacheStats().pagesInUse === 0)).toBe(true);
  });
});
