// The KV cache's formats: half floats (the default) and int8 with a scale per position and
// KV head (kvCacheType 'q8'), against the float64 reference storing keys and values the
// same way; what each costs in memory; and bit-for-bit batch invariance with int8.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cpuInfo, loadModel } from '../lib/index.js';
import { decodeBatch, expectBatchInvariant, mixedBatch, tokenRun } from './helpers/batch.js';
import { tmpDir, writeTinyCheckpoint, type TinyCheckpoint } from './helpers/checkpoint.js';
import { referenceLogits, roundToHalf, roundToInt8 } from './helpers/reference.js';

// head_dim 24: one and a half vectors of sixteen, so the value rows end in a scalar tail;
// GQA 3:1 and a sliding window that cuts key groups in the middle.
const SPEC = { hidden: 72, intermediate: 160, layers: 2, heads: 3, kvHeads: 1, vocab: 90, dtype: 'BF16', seed: 21, slidingWindow: 21 } as const;
// as in forward.test.ts: float32 sums against float64, both sides storing alike
const TOLERANCE = 5e-4;

let ckpt: TinyCheckpoint;
const dir = tmpDir();
beforeAll(async () => {
  ckpt = await writeTinyCheckpoint(dir, SPEC);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function relativeError(got: Float32Array, want: Float64Array): number {
  let scale = 1, err = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!));
  for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!));
  return err / scale;
}

describe.each(cpuInfo().isas)('KV cache formats (%s)', (isa) => {
  it.each(['f16', 'q8'] as const)('%s: logits of every position match the reference that stores keys and values alike', async (kvCacheType) => {
    await using model = await loadModel(dir, { isa, threads: 2, kvCacheType, kvCacheTokens: 64 });
    expect(model.info.kvCacheType).toBe(kvCacheType);
    const tokens = tokenRun(45, 3, SPEC.vocab);
    const want = referenceLogits(ckpt, tokens, kvCacheType);
    const seq = model.createSequence();
    const [all] = await model.step([{ sequence: seq, tokens, logits: 'all' }]);
    for (let p = 0; p < tokens.length; p++)
      expect(relativeError(all!.subarray(p * SPEC.vocab, (p + 1) * SPEC.vocab), want[p]!), `position ${p}`).toBeLessThan(TOLERANCE);
    seq.dispose();
  });

  it('q8: batch invariant, bit for bit', async () => {
    await using model = await loadModel(dir, { isa, threads: 2, kvCacheType: 'q8', kvCacheTokens: 4096 });
    for (const [seed, size] of [1, 3, 9, 17].entries()) await expectBatchInvariant(model, mixedBatch(size, seed + 40, SPEC.vocab, [2, 5, 16, 17, 31]), `${size} mixed`);
    await expectBatchInvariant(model, decodeBatch(9, 50, SPEC.vocab), '9 decode');
  });
});

describe('KV cache formats', () => {
  it("the reference's half-float rounding: every finite half maps to itself, midpoints to the even one", () => {
    const halves: number[] = [];
    for (let bits = 0; bits < 0x7c00; bits++) {
      const e = bits >> 10, m = bits & 1023;
      halves.push(e === 0 ? m * 2 ** -24 : (1024 + m) * 2 ** (e - 25));
    }
    for (let i = 0; i < halves.length; i++) {
      expect(roundToHalf(halves[i]!)).toBe(halves[i]);
      expect(roundToHalf(-halves[i]!)).toBe(-halves[i]!);
      if (i + 1 < halves.length) {
        const mid = (halves[i]! + halves[i + 1]!) / 2;
        expect(roundToHalf(mid)).toBe(halves[i % 2 === 0 ? i : i + 1]);
        expect(roundToHalf(mid * (1 + 1e-12))).toBe(halves[i + 1]);
      }
    }
    expect(roundToHalf(65519)).toBe(65504);
    expect(roundToHalf(65520)).toBe(Infinity);
  });

  it('q8 differs from the float cache by its rounding only', async () => {
    // the int8 reference is not the float one: the test above would notice a q8 cache
    // that kept floats
    const tokens = tokenRun(30, 4, SPEC.vocab);
    const exact = referenceLogits(ckpt, tokens, 'f16');
    const q8 = referenceLogits(ckpt, tokens, 'q8');
    let worst = 0;
    for (let p = 0; p < tokens.length; p++) worst = Math.max(worst, relativeError(Float32Array.from(q8[p]!), exact[p]!));
    expect(worst).toBeGreaterThan(10 * TOLERANCE);
    expect(worst).toBeLessThan(0.05);
    expect(Array.from(roundToInt8(Float64Array.from([0.5, -1, 0.25, 0]), 1, 4))).toEqual([64 / 127, -1, 32 / 127, 0]);
  });

  it('q8 takes (head_dim + 4) / (2 head_dim) of the half-float memory', async () => {
    const bytes = async (kvCacheType: 'f16' | 'q8') => {
      await using model = await loadModel(dir, { threads: 1, kvCacheType, kvCacheTokens: 256 });
      const seq = model.createSequence();
      await model.step([{ sequence: seq, tokens: tokenRun(100, 1, SPEC.vocab), logits: 'none' }]);
      const stats = model.cacheStats();
      seq.dispose();
      return stats.bytesAllocated;
    };
    const f16 = await bytes('f16');
    const headDim = SPEC.hidden / SPEC.heads;
    // 7 pages of 16 positions: layers x (k, v) x kv heads x head_dim x 2 bytes
    expect(f16).toBe(7 * 16 * SPEC.layers * 2 * SPEC.kvHeads * headDim * 2);
    expect(await bytes('q8')).toBe((f16 * (headDim + 4)) / (2 * headDim));
  });

  it('a load whose weights and full KV cache exceed the memory is refused, giving both sizes', async () => {
    const headDim = SPEC.hidden / SPEC.heads;
    // 2^40 positions: 1 TiB of positions times 288 bytes, more than any machine has
    const tokens = 2 ** 40;
    const perToken = { f16: SPEC.layers * 2 * SPEC.kvHeads * headDim * 2, q8: SPEC.layers * 2 * SPEC.kvHeads * (headDim + 4) };
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
    const err = await loadModel(dir, { threads: 1, kvCacheTokens: tokens }).then(() => null, (e: Error) => e);
    expect(err).toBeInstanceOf(RangeError);
    expect(err!.message).toContain(`a f16 KV cache of ${tokens} tokens ${gib(tokens * perToken.f16)} (kvCacheType 'q8' would take ${gib(tokens * perToken.q8)})`);
    expect(err!.message).toMatch(/the weights take 0\.\d+ GiB .* where this machine.* has \d+\.\d GiB/);
    const q8 = await loadModel(dir, { threads: 1, kvCacheTokens: tokens, kvCacheType: 'q8' }).then(() => null, (e: Error) => e);
    expect(q8!.message).toContain(`a q8 KV cache of ${tokens} tokens ${gib(tokens * perToken.q8)}, `);
    // the default context fits, and what fits loads
    await using model = await loadModel(dir, { threads: 1, kvCacheTokens: 1 << 20 });
    expect(model.info.kvCacheType).toBe('f16');
  });

  it('rejects an unknown format, and q8 on a GPU', async () => {
    await expect(loadModel(dir, { kvCacheType: 'q4' as never })).rejects.toThrow(/kvCacheType must be 'f16' or 'q8' \(got q4\)/);
    await expect(loadModel(dir, { kvCacheType: 'q8', device: 'cuda' })).rejects.toThrow(/'q8' is supported on the CPU only/);
  });
});
