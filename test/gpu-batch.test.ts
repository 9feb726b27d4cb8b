// Batch invariance on the CUDA engine, bit for bit: each sequence's logits are the same
// alone or in any batch (prompt chunks and decode tokens mixed, 1 to 33 sequences), with
// dense weights on the tensor cores (BF16, F16) and on the row kernel (F32), flash and
// split-KV attention, a sliding window and head_dim 256. Runs where test/gpu.test.ts runs:
// on a GPU with the CUDA build, else on the simulator build, else skipped with the reason.
import { cuda } from './helpers/cuda.js';

import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, type Model } from '../lib/index.js';
import { chunkedLogits, decodeBatch, expectBatchInvariant, expectSameBits, mixedBatch, tokenRun } from './helpers/batch.js';
import { encode, tmpDir, writeTinyCheckpoint, type TinySpec } from './helpers/checkpoint.js';
import { xorshift as rng } from './helpers/random.js';

// Batch sizes around the kernels' tiles (the dense row kernel takes 8 rows at a time, the
// tensor-core kernel 16 or 32, flash attention 16 queries) and prompt chunks around them.
// On the simulator (every GPU thread a fiber on the CPU) the full lists take minutes, so
// there each model gets the sizes that cross a tile boundary, and only the first one 33.
const ALL_SIZES = [1, 2, 3, 8, 9, 10, 17, 33];
const sizes = (full: number[], simulated: number[]) => (cuda.simulated ? simulated : full);
const CHUNKS = [2, 3, 7, 8, 9, 15, 16, 17, 31, 33];
const VOCAB = 300;

interface Case {
  spec: Omit<TinySpec, 'seed' | 'vocab'>;
  sizes: number[];
  decodeSizes: number[];
  /** Whether every token goes through the split-KV kernels (head_dim 256), so that one-token steps are as any other. */
  splitKvOnly?: boolean;
}
const cases: [string, Case][] = [
  ['BF16 (tensor cores)', { spec: { hidden: 128, intermediate: 256, layers: 2, heads: 4, kvHeads: 2, headDim: 32, dtype: 'BF16', maxPositions: 1024 }, sizes: sizes(ALL_SIZES, [2, 9, 17, 33]), decodeSizes: sizes([2, 9, 10, 33], [9, 33]) }],
  ['F16 (tensor cores)', { spec: { hidden: 128, intermediate: 256, layers: 1, heads: 4, kvHeads: 1, headDim: 32, dtype: 'F16', maxPositions: 512 }, sizes: sizes([3, 10, 33], [3, 10]), decodeSizes: sizes([10, 33], [10]) }],
  ['F32, head_dim 64, sliding window 20 (row kernel)', { spec: { hidden: 128, intermediate: 192, layers: 1, heads: 2, kvHeads: 1, headDim: 64, dtype: 'F32', slidingWindow: 20, maxPositions: 512 }, sizes: sizes(ALL_SIZES, [2, 9, 17]), decodeSizes: sizes([9, 33], [9]) }],
  ['BF16, head_dim 256 (prompts through split-KV)', { spec: { hidden: 128, intermediate: 256, layers: 1, heads: 2, kvHeads: 1, headDim: 256, dtype: 'BF16', maxPositions: 1024 }, sizes: sizes([3, 10, 33], [3, 10]), decodeSizes: sizes([10, 33], [10]), splitKvOnly: true }],
];


describe.skipIf(cuda.skip !== '')(`CUDA batch invariance${cuda.label ? ` on ${cuda.label}` : ''}${cuda.skip}`, () => {
  const addon = cuda.addon!;

  it('dense matmul: a row of the tensor-core kernel is the same bit for bit among 1 to 40 rows, and as near float64 as before', () => {
    const r = rng(7);
    const n = 40;
    // k: one slice of k ending in 16 inputs; two slices of 544; eight slices
    for (const k of [112, 1088, 4160]) {
      for (const dtype of ['F16', 'BF16'] as const) {
        const bytes = encode(Array.from({ length: n * k }, () => (r() - 0.5) * 0.5), dtype);
        const w = new Uint16Array(bytes.buffer, bytes.byteOffset, n * k);
        const x = Float32Array.from({ length: 40 * k }, () => (r() - 0.5) * 4);
        const all = addon.cudaDenseMatmul!(w, dtype, n, k, x, 40, true);
        for (const m of [1, 2, 3, 8, 9, 16, 17, 33]) {
          // the last m rows, so that each sits elsewhere in its tile than among all 40
          const y = addon.cudaDenseMatmul!(w, dtype, n, k, x.subarray((40 - m) * k), m, true);
          expectSameBits(y, all.subarray((40 - m) * n), `${dtype} k=${k} m=${m}`);
        }
        // against float64 of the activations rounded to the weight type (as test/gpu.test.ts)
        const wv = Array.from(w, (h) => decodeHalf(h, dtype));
        for (const row of [0, 17, 39])
          for (let c = 0; c < n; c++) {
            let want = 0, size = 0;
            for (let j = 0; j < k; j++) {
              const p = wv[c * k + j]! * decodeHalf(encodeHalf(x[row * k + j]!, dtype), dtype);
              want += p;
              size += Math.abs(p);
            }
            expect(Math.abs(all[row * n + c]! - want), `${dtype} k=${k} [${row}, ${c}]`).toBeLessThanOrEqual(1e-5 * size + 1e-30);
          }
      }
    }
  });

  describe.each(cases.map(([name, c], i) => [name, c, 40 + i] as const))('%s', (name, c, seed) => {
    const dir = tmpDir('laminate-gpu-batch-');
    let m: Model;
    beforeAll(async () => {
      await writeTinyCheckpoint(dir, { ...c.spec, vocab: VOCAB, seed });
      m = await loadModel(dir, { device: 'cuda', kvCacheTokens: 4096 });
      expect(m.info.device).toBe('cuda');
    });
    afterAll(() => {
      m?.dispose();
      rmSync(dir, { recursive: true, force: true });
    });

    it(`prompt chunks and decode tokens: each entry alone and in batches of ${c.sizes.join(', ')} sequences`, async () => {
      // one history of 300 positions: two splits of split-KV decode
      for (const [i, size] of c.sizes.entries()) await expectBatchInvariant(m, mixedBatch(size, seed + i, VOCAB, CHUNKS, 300), `${name}: ${size} mixed`);
    });

    it(`decode tokens only (run, recorded, replayed): each sequence alone and in batches of ${c.decodeSizes.join(', ')}`, async () => {
      for (const [i, size] of c.decodeSizes.entries()) {
        const batch = decodeBatch(size, seed + i, VOCAB);
        for (let run = 0; run < 3; run++) await expectBatchInvariant(m, batch, `${name}: ${size} decode, run ${run}`);
      }
    });

    it(`a prompt gives the same logits in one step or in steps of ${c.splitKvOnly ? 'any length' : 'two tokens or more'}`, async () => {
      const prompt = tokenRun(40, seed, VOCAB);
      const whole = await chunkedLogits(m, prompt, [40]);
      const splits = [[2, 17, 5, 16], [33, 7], [13, 2, 25]];
      // a step of one token runs the split-KV kernel, not flash attention: its sums may differ
      if (c.splitKvOnly) splits.push(Array<number>(40).fill(1));
      for (const chunks of splits) expectSameBits(await chunkedLogits(m, prompt, chunks), whole, `${name}: chunks [${chunks.join(',')}]`);
    });
  });
});

function encodeHalf(x: number, dtype: 'F16' | 'BF16'): number {
  const b = encode([x], dtype);
  return b[0]! | (b[1]! << 8);
}

function decodeHalf(bits: number, dtype: 'F16' | 'BF16'): number {
  if (dtype === 'BF16') return new Float32Array(new Uint32Array([bits << 16]).buffer)[0]!;
  const sign = bits & 0x8000 ? -1 : 1, exp = (bits >> 10) & 31, man = bits & 1023;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 31) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}
