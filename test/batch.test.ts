// One step runs several sequences at once: prompt chunks and single decode tokens in one
// batch give the logits of the float64 reference, and each sequence's logits are the same
// bit for bit alone or in any batch, with every instruction set this CPU runs.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cpuInfo, loadModel, type Model } from '../lib/index.js';
import { chunkedLogits, decodeBatch, expectBatchInvariant, expectSameBits, mixedBatch, tokenRun } from './helpers/batch.js';
import { tmpDir, writeTinyCheckpoint, type TinyCheckpoint } from './helpers/checkpoint.js';
import { referenceLogits } from './helpers/reference.js';

// Against the float64 reference: max |difference| over max |logit| (float32 sums, and keys
// and values in half floats; see forward.test.ts).
const TOLERANCE = 5e-4;

// The down projection's input (intermediate 1100) ends in a partial vector: the lanes and
// the tail decide the order of the float32 sums.
const SPEC = { hidden: 96, intermediate: 1100, layers: 2, heads: 6, kvHeads: 2, vocab: 120, dtype: 'BF16', seed: 11 } as const;

let ckpt: TinyCheckpoint;
let model: Model;
const dir = tmpDir();
beforeAll(async () => {
  ckpt = await writeTinyCheckpoint(dir, SPEC);
  model = await loadModel(dir, { threads: 2, kvCacheTokens: 64 });
});
afterAll(() => {
  model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function close(got: ArrayLike<number>, want: ArrayLike<number>): void {
  let scale = 1;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!));
  let err = 0;
  for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!));
  expect(err / scale).toBeLessThan(TOLERANCE);
}

describe('batched steps', () => {
  it('prefill chunks and decode tokens of different sequences in one step', async () => {
    const a = [5, 17, 3, 99, 42, 8];
    const b = [7, 7, 7];
    const c = [100, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    const sa = model.createSequence();
    const sb = model.createSequence();
    const sc = model.createSequence();
    // a: prompt of 5 then one decode token; b: whole prompt in one go; c: prompt in two chunks
    await model.step([{ sequence: sa, tokens: a.slice(0, 5), logits: 'none' }, { sequence: sc, tokens: c.slice(0, 4), logits: 'all' }]);
    const [la, lb, lc] = await model.step([
      { sequence: sa, tokens: a.slice(5) },
      { sequence: sb, tokens: b, logits: 'all' },
      { sequence: sc, tokens: c.slice(4), logits: 'last' },
    ]);
    expect(la!.length).toBe(120);
    expect(lb!.length).toBe(3 * 120);
    expect(lc!.length).toBe(120);
    expect([sa.length, sb.length, sc.length]).toEqual([6, 3, 10]);
    close(la!, referenceLogits(ckpt, a)[5]!);
    const rb = referenceLogits(ckpt, b);
    for (let p = 0; p < 3; p++) close(lb!.subarray(p * 120, (p + 1) * 120), rb[p]!);
    close(lc!, referenceLogits(ckpt, c)[9]!);
    // alone, the same sequence gives the same logits
    expectSameBits(await model.forward(a), la!, 'a alone');
    for (const s of [sa, sb, sc]) s.dispose();
    expect(model.cacheStats().pagesInUse).toBe(0);
  });

  it('a truncated sequence continues as if the dropped tokens were never fed', async () => {
    const s = model.createSequence();
    await model.step([{ sequence: s, tokens: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18], logits: 'none' }]);
    s.truncate(3);
    const [l] = await model.step([{ sequence: s, tokens: [50, 60] }]);
    close(l!, referenceLogits(ckpt, [1, 2, 3, 50, 60])[4]!);
    s.dispose();
  });

  it('rejects a step that does not fit the KV cache and leaves the sequences as they were', async () => {
    const s = model.createSequence();
    await model.step([{ sequence: s, tokens: Array.from({ length: 40 }, (_, i) => i % 120), logits: 'none' }]);
    const t = model.createSequence();
    await expect(model.step([{ sequence: t, tokens: Array.from({ length: 40 }, () => 3) }])).rejects.toThrow(/KV cache is full/);
    expect(t.length).toBe(0);
    expect(s.length).toBe(40);
    // still usable afterwards
    const [l] = await model.step([{ sequence: t, tokens: [3, 4] }]);
    close(l!, referenceLogits(ckpt, [3, 4])[1]!);
    s.dispose();
    t.dispose();
  });

  it('rejects bad batches with clear errors', async () => {
    const s = model.createSequence();
    await expect(model.step([])).rejects.toThrow(/non-empty/);
    await expect(model.step([{ sequence: s, tokens: [] }])).rejects.toThrow(/empty/);
    await expect(model.step([{ sequence: s, tokens: [120] }])).rejects.toThrow(/not a token id in \[0, 120\)/);
    await expect(model.step([{ sequence: s, tokens: [1.5] }])).rejects.toThrow(/not a token id/);
    await expect(model.step([{ sequence: s, tokens: [1] }, { sequence: s, tokens: [2] }])).rejects.toThrow(/twice/);
    await expect(model.step([{ sequence: {} as never, tokens: [1] }])).rejects.toThrow(/not a Sequence/);
    s.dispose();
    await expect(model.step([{ sequence: s, tokens: [1] }])).rejects.toThrow(/disposed/);
  });
});

// Batch sizes around the CPU kernels' tiles (3 or 6 activation rows, 4 weight rows, blocks
// of 32 outputs per thread) and prompt chunks of lengths around them.
const SIZES = [1, 2, 3, 8, 9, 10, 17, 33];
const CHUNKS = [2, 3, 4, 5, 6, 7, 12, 13, 31, 32, 33];

describe.each(cpuInfo().isas)('batch invariance, bit for bit (%s)', (isa) => {
  let m: Model;
  beforeAll(async () => {
    m = await loadModel(dir, { isa, threads: 2, kvCacheTokens: 4096 });
    expect(m.info.isa).toBe(isa);
  });
  afterAll(() => m.dispose());

  it('prompt chunks and decode tokens: each entry alone and in batches of 1 to 33 sequences', async () => {
    let rows = 0;
    for (const [seed, size] of SIZES.entries()) rows += await expectBatchInvariant(m, mixedBatch(size, seed + 1, SPEC.vocab, CHUNKS), `${size} mixed`);
    expect(rows).toBeGreaterThan(60);
  });

  it('decode tokens only: each sequence alone and in batches of 2 to 33', async () => {
    for (const [seed, size] of [2, 3, 8, 9, 10, 17, 33].entries()) await expectBatchInvariant(m, decodeBatch(size, seed + 20, SPEC.vocab), `${size} decode`);
  });

  it('a prompt gives the same logits at every position in one step, in chunks, or token by token (the decode path)', async () => {
    const prompt = tokenRun(40, 5, SPEC.vocab);
    const whole = await chunkedLogits(m, prompt, [40]);
    for (const chunks of [Array<number>(40).fill(1), [3, 6, 1, 13, 17], [32, 8], [1, 33, 6]])
      expectSameBits(await chunkedLogits(m, prompt, chunks), whole, `chunks [${chunks.join(',')}]`);
    // one thread or two
    await using one = await loadModel(dir, { isa, threads: 1, kvCacheTokens: 64 });
    expectSameBits(await chunkedLogits(one, prompt, [7, 33]), whole, 'one thread');
  });
});
