// The first API: config, forward, generate, progress, abort, dispose, and the JS thread
// staying free while native work runs.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cpuInfo, loadModel, type LoadProgress } from '../lib/index.js';
import { projectRoot } from './helpers/fixtures.js';
import { tmpDir, writeTinyCheckpoint, type TinyCheckpoint } from './helpers/checkpoint.js';
import { referenceGreedy } from './helpers/reference.js';
import { countTurns } from './helpers/event-loop.js';

const dirs: string[] = [];
let small: TinyCheckpoint;
let big: TinyCheckpoint;
beforeAll(async () => {
  dirs.push(tmpDir(), tmpDir());
  small = await writeTinyCheckpoint(dirs[0]!, { hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 50, dtype: 'BF16', seed: 21, maxPositions: 64 });
  // big enough that a long prompt takes a noticeable time on two cores
  big = await writeTinyCheckpoint(dirs[1]!, { hidden: 512, intermediate: 1536, layers: 4, heads: 8, kvHeads: 2, vocab: 256, dtype: 'F16', seed: 22 });
});
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('model.config', () => {
  it('has the normalized camelCase fields', async () => {
    await using model = await loadModel(small.dir);
    expect(model.config).toMatchObject({
      architecture: 'MistralForCausalLM', hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2, numAttentionHeads: 4,
      numKeyValueHeads: 2, headDim: 16, vocabSize: 50, rmsNormEps: 1e-5, ropeTheta: 1e6, tieWordEmbeddings: false,
      maxPositionEmbeddings: 64, slidingWindow: null, eosTokenIds: [2], bosTokenId: 1,
    });
    expect(model.info.contextSize).toBe(64);
  });
});

describe('generate', () => {
  it('is greedy at temperature 0 and reproducible with a seed otherwise', async () => {
    await using model = await loadModel(small.dir);
    const prompt = [1, 7, 9, 30];
    const greedy = await model.generate({ tokens: prompt, maxTokens: 10, stopAtEos: false });
    expect(greedy).toMatchObject({ tokens: referenceGreedy(small, prompt, 10), finishReason: 'length', promptTokens: 4 });
    const a = await model.generate({ tokens: prompt, maxTokens: 20, temperature: 1.5, seed: 7, stopAtEos: false });
    const b = await model.generate({ tokens: prompt, maxTokens: 20, temperature: 1.5, seed: 7, stopAtEos: false });
    const c = await model.generate({ tokens: prompt, maxTokens: 20, temperature: 1.5, seed: 8, stopAtEos: false });
    expect(a.tokens).toEqual(b.tokens);
    expect(c.tokens).not.toEqual(a.tokens);
    const streamed: number[] = [];
    for await (const chunk of model.generate(prompt, { maxTokens: 5, stopAtEos: false })) streamed.push(...chunk.tokens);
    expect(streamed).toEqual(greedy.tokens.slice(0, 5));
  });

  it('stops at EOS', async () => {
    await using model = await loadModel(small.dir);
    // make EOS the greedy choice by declaring the first greedy token to be EOS
    const prompt = [1, 3, 5];
    const [first] = referenceGreedy(small, prompt, 1);
    model.config.eosTokenIds.splice(0, Infinity, first!);
    expect(await model.generate({ tokens: prompt, maxTokens: 10 })).toMatchObject({ tokens: [first], finishReason: 'eos' });
  });

  it('validates its settings', async () => {
    await using model = await loadModel(small.dir);
    await expect(model.generate({ tokens: [1], temperature: -1 })).rejects.toThrow(/temperature/);
    await expect(model.generate({ tokens: [1], temperature: NaN })).rejects.toThrow(/temperature/);
    await expect(model.generate({ tokens: [1], maxTokens: -3 })).rejects.toThrow(/maxTokens/);
    await expect(model.generate([1], { temperatur: 1 } as never)).rejects.toThrow(/unknown option 'temperatur'/);
    await expect(model.generate('text')).rejects.toThrow(/no tokenizer\.json/);
    await expect(model.generate({ tokens: [1], topK: 1.5 })).rejects.toThrow(/topK/);
    await expect(model.generate({ tokens: [] })).rejects.toThrow(/empty/);
    await expect(model.generate({ tokens: [50] })).rejects.toThrow(/\[0, 50\)/);
    // past the context size (64)
    await expect(model.forward(Array.from({ length: 65 }, () => 3))).rejects.toThrow(/context size of 64/);
  });
});

describe('jobs off the JS thread', () => {
  it('reports load progress up to the weight bytes', async () => {
    const seen: LoadProgress[] = [];
    await using model = await loadModel(big.dir, { onProgress: (p) => seen.push(p) });
    expect(seen[0]!.phase).toBe('headers');
    const last = seen.at(-1)!;
    expect(last.phase).toBe('weights');
    expect(last.loaded).toBe(last.total);
    expect(last.total).toBe(model.info.weightBytes);
  });

  it('keeps the event loop turning during a long forward pass', async () => {
    await using model = await loadModel(big.dir, { threads: 2 });
    const tokens = Array.from({ length: 384 }, (_, i) => (i * 37) % 256);
    // A counter advanced once per turn of the loop. A pass that held the JavaScript thread
    // would leave it at most one turn (the one after the pass); on its native thread the
    // loop turns over and over while it runs.
    const loop = countTurns();
    await model.forward(tokens);
    await loop.stop();
    expect(loop.turns).toBeGreaterThan(10);
  });

  it('aborts a forward pass between layers and leaves the model usable', async () => {
    await using model = await loadModel(big.dir, { threads: 2 });
    const tokens = Array.from({ length: 512 }, (_, i) => (i * 11) % 256);
    const controller = new AbortController();
    const pending = model.forward(tokens, { signal: controller.signal });
    // at the loop's next turn the pass (about 7 GFLOP) has just begun on its native thread
    setImmediate(() => controller.abort());
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(model.cacheStats().pagesInUse).toBe(0);
    const already = new AbortController();
    already.abort();
    await expect(model.forward([1, 2], { signal: already.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect((await model.forward([1, 2])).length).toBe(256);
  });

  it('dispose frees at once; a step in flight completes, later calls throw', async () => {
    const model = await loadModel(big.dir, { threads: 2 });
    const pending = model.forward(Array.from({ length: 256 }, (_, i) => i));
    await new Promise((resolve) => setImmediate(resolve)); // the native pass is now running
    const queued = model.forward([1, 2, 3]);
    model.dispose();
    expect(model.disposed).toBe(true);
    const [running, waiting] = await Promise.allSettled([pending, queued]);
    // the running pass holds the engine until it ends; the queued one never starts
    expect(running).toMatchObject({ status: 'fulfilled', value: { length: 256 } });
    expect(waiting).toMatchObject({ status: 'rejected', reason: { message: expect.stringMatching(/disposed/) } });
    expect(() => model.createSequence()).toThrow(/disposed/);
    await expect(model.forward([1])).rejects.toThrow(/disposed/);
    model.dispose();
  });
});

describe('instruction sets', () => {
  it('LAMINATE_ISA picks the kernel family; an unsupported one is a clear error', () => {
    const script = `import('./dist/index.js').then(async ({ loadModel }) => {
      try { const m = await loadModel(process.argv[1]); console.log(m.info.isa); m.dispose(); }
      catch (e) { console.log('error: ' + e.message); }
    })`;
    const run = (isa: string) =>
      spawnSync(process.execPath, ['-e', script, small.dir], { cwd: projectRoot, env: { ...process.env, LAMINATE_ISA: isa }, encoding: 'utf8' }).stdout.trim();
    for (const isa of cpuInfo().isas) expect(run(isa)).toBe(isa);
    for (const isa of (['scalar', 'avx2', 'avx2vnni', 'avx512', 'avx512vnni'] as const).filter((i) => !cpuInfo().isas.includes(i)))
      expect(run(isa)).toBe(`error: instruction set '${isa}' is not supported by this CPU`);
    expect(run('mmx')).toMatch(/unknown instruction set 'mmx'/);
  });
});
