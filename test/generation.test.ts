// Text generation end to end on the bundled demo model: reference texts, streaming, stop
// strings, abort, continuous batching, KV cache limits, logprobs, chat sessions.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Detokenizer, loadModel, type GenerationChunk, type Model } from '../lib/index.js';
import { logSoftmax } from '../lib/generate/sampler.js';
import { fixturesDir, haveFixtures } from './helpers/fixtures.js';
import { countTurns } from './helpers/event-loop.js';

let model: Model;
beforeAll(async () => {
  model = await loadModel(undefined, { threads: 2 });
});
afterAll(() => model.dispose());

interface Reference {
  prompt: string;
  prompt_ids: number[];
  greedy_ids: number[];
  step_top1_top2_margins: number[];
  continuation: string;
}
const references: Reference[] = haveFixtures
  ? (JSON.parse(readFileSync(join(fixturesDir, 'models/reference_generations.json'), 'utf8')) as { generations: Reference[] }).generations
  : [];

describe('demo model', () => {
  it('is the bundled tiny Mistral with its tokenizer', () => {
    expect(model.config.numHiddenLayers).toBe(8);
    expect(model.tokenizer?.vocabSize).toBe(2048);
    expect(model.tokenize('The function')).toEqual([1, 366, 474]);
  });

  it.skipIf(!haveFixtures)('writes the reference generations, as text', async () => {
    for (const g of references) {
      expect(model.tokenize(g.prompt)).toEqual(g.prompt_ids);
      const result = await model.generate(g.prompt, { maxTokens: 64, stopAtEos: false });
      expect(result.finishReason).toBe('length');
      expect(result.tokens).toEqual(g.greedy_ids);
      expect(result.text).toBe(g.continuation);
    }
  });

  it('streams chunks that add up to the result', async () => {
    const generation = model.generate('A list is', { maxTokens: 40, stopAtEos: false });
    const chunks: GenerationChunk[] = [];
    for await (const chunk of generation) chunks.push(chunk);
    const result = await generation;
    expect(chunks.map((c) => c.text).join('')).toBe(result.text);
    expect(chunks.flatMap((c) => c.tokens)).toEqual(result.tokens);
    // the text a whole-sequence decode gives after the prompt (leading space included)
    const prompt = model.tokenize('A list is');
    const decode = (ids: number[]) => model.detokenize(ids, { skipSpecialTokens: true });
    expect(result.text).toBe(decode([...prompt, ...result.tokens]).slice(decode(prompt).length));
    expect(result.timeToFirstTokenMs).toBeGreaterThan(0);
  });

  it('stops at a stop string that spans tokens, without emitting it', async () => {
    const full = await model.generate('The function', { maxTokens: 40, stopAtEos: false });
    const at = full.text.indexOf('value is');
    expect(at).toBeGreaterThan(0);
    const generation = model.generate('The function', { maxTokens: 40, stopAtEos: false, stop: ['zzz', 'value is'] });
    let streamed = '';
    for await (const chunk of generation) streamed += chunk.text;
    const result = await generation;
    expect(result.finishReason).toBe('stop');
    expect(result.text).toBe(full.text.slice(0, at));
    expect(streamed).toBe(result.text);
  });

  it('streams characters split over byte tokens whole', () => {
    const tokenizer = model.tokenizer!;
    const text = 'naïve 東京 🚀 done';
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    expect(ids.some((id) => /^<0x/.test(tokenizer.tokenText(id)!))).toBe(true);
    const detok = new Detokenizer(tokenizer);
    const pieces = ids.map((id) => detok.push(id));
    pieces.forEach((p) => expect(p).not.toContain('\uFFFD'));
    expect(pieces.join('') + detok.flush()).toBe(text);
  });

  it('reports logprobs of the model distribution', async () => {
    const prompt = model.tokenize('Python is');
    const result = await model.generate(prompt, { maxTokens: 3, logprobs: 5, stopAtEos: false });
    const first = result.logprobs![0]!;
    const lp = logSoftmax(await model.forward(prompt));
    expect(first.token).toBe(result.tokens[0]);
    expect(first.logprob).toBeCloseTo(lp[first.token]!, 5);
    expect(first.top.length).toBe(5);
    expect(first.top[0]!.token).toBe(first.token);
    for (let i = 1; i < 5; i++) expect(first.top[i]!.logprob).toBeLessThanOrEqual(first.top[i - 1]!.logprob);
  });

  it('samples reproducibly with a seed', async () => {
    const a = await model.generate('If the file', { maxTokens: 20, temperature: 0.9, topP: 0.95, seed: 11, stopAtEos: false });
    const b = await model.generate('If the file', { maxTokens: 20, temperature: 0.9, topP: 0.95, seed: 11, stopAtEos: false });
    expect(a.tokens).toEqual(b.tokens);
    // the sampling options are used: another seed, or greedy decoding, gives other tokens
    const other = await model.generate('If the file', { maxTokens: 20, temperature: 0.9, topP: 0.95, seed: 12, stopAtEos: false });
    const greedy = await model.generate('If the file', { maxTokens: 20, stopAtEos: false });
    expect(other.tokens).not.toEqual(a.tokens);
    expect(greedy.tokens).not.toEqual(a.tokens);
  });
});

describe('concurrency', () => {
  const prompts = ['The function', 'To install the package', 'Python is', 'A list is', 'If the file does not exist', 'Return the', 'The value of', 'An object'];

  it('8 concurrent greedy requests equal 8 sequential ones', async () => {
    const sequential = [];
    for (const p of prompts) sequential.push((await model.generate(p, { maxTokens: 24, stopAtEos: false })).tokens);
    const concurrent = await Promise.all(prompts.map((p) => model.generate(p, { maxTokens: 24, stopAtEos: false })));
    expect(concurrent.map((r) => r.tokens)).toEqual(sequential);
    expect(model.cacheStats().pagesInUse).toBe(0);
  });

  it('keeps the event loop turning during generation', async () => {
    // the loop turns between the passes (each runs on a native thread): every token of a
    // stream arrives in its own turn, so a counter that advances once per turn moves on
    // between any two tokens
    const loop = countTurns();
    const seen: number[] = [];
    for await (const chunk of model.generate(prompts[0]!, { maxTokens: 24, stopAtEos: false })) if (chunk.tokens.length) seen.push(loop.turns);
    await loop.stop();
    expect(seen).toHaveLength(24);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!, `token ${i}`).toBeGreaterThan(seen[i - 1]!);
  });

  it('aborts one request within a step and frees its sequence, leaving the others', async () => {
    const controller = new AbortController();
    const victim = model.generate('The function', { maxTokens: 500, stopAtEos: false, signal: controller.signal });
    const bystander = model.generate('Python is', { maxTokens: 30, stopAtEos: false });
    let seen = 0;
    await expect(
      (async () => {
        for await (const chunk of victim) {
          seen += chunk.tokens.length;
          if (seen === 3) controller.abort();
        }
      })(),
    ).rejects.toMatchObject({ name: 'AbortError' });
    expect(seen).toBeLessThanOrEqual(4);
    await expect(victim).rejects.toMatchObject({ name: 'AbortError' });
    const alone = await model.generate('Python is', { maxTokens: 30, stopAtEos: false });
    expect((await bystander).tokens).toEqual(alone.tokens);
    expect(model.cacheStats().pagesInUse).toBe(0);
  });
});

describe('limits', () => {
  it('long text tokenizes without overflowing the stack; text that cannot fit is refused before tokenizing', async () => {
    expect(model.tokenize('word '.repeat(200_000), { specialTokens: 'parse' }).length).toBeGreaterThan(200_000);
    await expect(model.chat([{ role: 'user', content: 'word '.repeat(200_000) }])).rejects.toThrow(/at least \d+ tokens \(\d+ characters\)/);
    await expect(model.generate('x'.repeat(1_000_000))).rejects.toThrow(/at least \d+ tokens/);
  });

  it('a prompt longer than the context is a clear error; generation stops at the context', async () => {
    await using small = await loadModel(undefined, { threads: 1, contextSize: 32 });
    const long = Array.from({ length: 33 }, (_, i) => 3 + i);
    await expect(small.generate(long)).rejects.toThrow(/33 tokens, more than the context size of 32/);
    const result = await small.generate(long.slice(0, 30), { maxTokens: 50, stopAtEos: false });
    expect(result).toMatchObject({ finishReason: 'length' });
    expect(result.tokens.length).toBe(3);
  });

  it('without room in the KV cache a request fails, or waits in the queue when allowed', async () => {
    await using strict = await loadModel(undefined, { threads: 1, kvCacheTokens: 64 });
    const first = strict.generate('The function', { maxTokens: 50, stopAtEos: false });
    await expect(strict.generate('Python is', { maxTokens: 50, stopAtEos: false })).rejects.toThrow(/KV cache is full/);
    await first;
    await expect(strict.generate('Python is', { maxTokens: 200, stopAtEos: false })).rejects.toThrow(/KV cache too small/);

    await using queued = await loadModel(undefined, { threads: 1, kvCacheTokens: 64, maxQueue: 1 });
    const a = queued.generate('The function', { maxTokens: 50, stopAtEos: false });
    const b = queued.generate('Python is', { maxTokens: 50, stopAtEos: false });
    expect(queued.pendingRequests).toEqual({ active: 1, waiting: 1 });
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.tokens.length).toBe(50);
    expect(rb.tokens).toEqual((await queued.generate('Python is', { maxTokens: 50, stopAtEos: false })).tokens);
  });

  it('a request that arrives while a pass runs fits when the cache holds every request in full', async () => {
    // 8 requests of 13 pages each in a cache of exactly 8 x 13 pages, started one after
    // another as earlier ones run: the pages the running pass took count once
    await using exact = await loadModel(undefined, { threads: 2, contextSize: 208, kvCacheTokens: 8 * 208, prefixCache: false });
    const prompt = (i: number) => Array.from({ length: 128 }, (_, j) => 3 + ((i * 37 + j * 11) % 2000));
    const loops = [...Array(8)].map(async (_, i) => {
      for (let round = 0; round < 3; round++) {
        await new Promise((r) => setTimeout(r, i * 3));
        const r = await exact.generate({ tokens: prompt(i * 3 + round), maxTokens: 64, stopAtEos: false });
        expect(r.tokens.length).toBe(64);
      }
    });
    await Promise.all(loops);
  });

  it('dispose during generation ends the streams with an error', async () => {
    const own = await loadModel(undefined, { threads: 1 });
    const generation = own.generate('The function', { maxTokens: 500, stopAtEos: false });
    const consumed = (async () => {
      for await (const chunk of generation) if (chunk.tokens.length) own.dispose();
    })();
    await expect(consumed).rejects.toThrow(/disposed/);
    await expect(generation).rejects.toThrow(/disposed/);
    await expect(own.generate('x')).rejects.toThrow(/disposed/);
  });
});

describe('chat', () => {
  it('answers with the chat template, keeping user text plain', async () => {
    const result = await model.chat([{ role: 'user', content: 'What is a list?' }], { maxTokens: 20 });
    expect(result.promptTokens).toBe(model.tokenize('[INST] What is a list?[/INST]').length);
    expect(['eos', 'length']).toContain(result.finishReason);
    await expect(model.chat([{ role: 'assistant', content: 'x' }])).rejects.toThrow(/alternate/);
  });

  it('a conversation reuses its KV cache: a new turn prefills only new tokens, same replies', async () => {
    using chat = model.createChat();
    const first = await chat.send('What is a list?', { maxTokens: 16 });
    expect(chat.messages).toEqual([{ role: 'user', content: 'What is a list?' }, { role: 'assistant', content: first.text }]);
    const cachedAfterFirst = chat.cachedTokens;
    expect(cachedAfterFirst).toBe(first.promptTokens + first.tokens.length - 1);
    const second = await chat.send('And a tuple?', { maxTokens: 16 });
    // only the tokens after the shared prefix were fed
    const full = model.tokenize(`[INST] What is a list?[/INST] ${first.text.trim()}</s>[INST] And a tuple?[/INST]`);
    expect(second.promptTokens).toBeLessThan(full.length);
    expect(second.promptTokens).toBeGreaterThanOrEqual(full.length - cachedAfterFirst);
    // the same as answering the whole conversation from scratch
    const fresh = await model.chat(chat.messages.slice(0, 3), { maxTokens: 16 });
    expect(second.tokens).toEqual(fresh.tokens);
    const running = chat.send('again', { maxTokens: 4 });
    await expect(chat.send('too soon')).rejects.toThrow(/still running/);
    await running;
    expect(chat.messages.length).toBe(6);
  });
});
