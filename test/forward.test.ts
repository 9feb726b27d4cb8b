// The engine against an independent float64 reference forward pass (test/helpers/reference.ts)
// on tiny random checkpoints: every dtype, GQA ratio, odd sizes, sharding, tying, RoPE
// variants, and every instruction-set path this CPU has.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cpuInfo, loadModel, type Isa } from '../lib/index.js';
import { writeNeedleCheckpoint } from './helpers/attention-needles.js';
import { tmpDir, writeTinyCheckpoint, type TinyCheckpoint, type TinySpec } from './helpers/checkpoint.js';
import { referenceLogits } from './helpers/reference.js';

// float32 accumulation against float64, with keys and values rounded to half floats on
// both sides: logits may differ by this much relative to the largest reference logit of
// the position. Most errors stay below 1e-6; where the engine's float32 key or value and
// the reference's float64 one round to neighbouring half floats, up to 2e-4 (without
// rounding the reference's cache, errors reach 3e-4 at most positions).
const LOGIT_TOLERANCE = 5e-4;

const CASES: [string, TinySpec][] = [
  ['mistral f32, GQA 4:1', { hidden: 64, intermediate: 160, layers: 2, heads: 4, kvHeads: 1, vocab: 97, dtype: 'F32', seed: 1 }],
  ['mistral f16, GQA 2:1, sharded', { hidden: 96, intermediate: 200, layers: 3, heads: 6, kvHeads: 3, vocab: 130, dtype: 'F16', shards: 3, seed: 2 }],
  ['mistral bf16, MHA, tied', { hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 4, vocab: 64, dtype: 'BF16', tied: true, seed: 3 }],
  ['hidden 320, 5 heads, bf16, 2 shards', { hidden: 320, intermediate: 864, layers: 2, heads: 5, kvHeads: 1, vocab: 211, dtype: 'BF16', shards: 2, seed: 4 }],
  ['llama f16, head_dim 24 != hidden/heads, llama3 rope', {
    arch: 'llama', hidden: 80, intermediate: 200, layers: 2, heads: 4, kvHeads: 2, headDim: 24, vocab: 150, dtype: 'F16', seed: 5,
    ropeTheta: 500000, ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
  }],
  ['llama f32, tied, linear rope', { arch: 'llama', hidden: 48, intermediate: 100, layers: 2, heads: 3, kvHeads: 1, vocab: 77, dtype: 'F32', tied: true, seed: 6, ropeScaling: { rope_type: 'linear', factor: 2 } }],
  ['mistral bf16, sliding window 5', { hidden: 64, intermediate: 96, layers: 2, heads: 4, kvHeads: 2, vocab: 90, dtype: 'BF16', slidingWindow: 5, seed: 7 }],
];

const isas = cpuInfo().isas;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function maxRelativeError(got: Float32Array, want: Float64Array): number {
  let scale = 1;
  for (const w of want) scale = Math.max(scale, Math.abs(w));
  let err = 0;
  for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!) / scale);
  return err;
}

function prompt(n: number, vocab: number, seed: number): number[] {
  let x = seed;
  return Array.from({ length: n }, () => ((x = (x * 1103515245 + 12345) % 2 ** 31), x % vocab));
}

describe.each(CASES)('%s', (_name, spec) => {
  let ckpt: TinyCheckpoint;
  beforeAll(async () => {
    const dir = tmpDir();
    dirs.push(dir);
    ckpt = await writeTinyCheckpoint(dir, spec);
  });

  it.each(isas)('logits of every position match the float64 reference (%s)', async (isa) => {
    await using model = await loadModel(ckpt.dir, { isa, threads: 2 });
    expect(model.info.isa).toBe(isa);
    const tokens = prompt(19, spec.vocab, spec.seed);
    const want = referenceLogits(ckpt, tokens);
    const got = await model.forward(tokens, { allLogits: true });
    expect(got.length).toBe(tokens.length * spec.vocab);
    for (let p = 0; p < tokens.length; p++) {
      const row = got.subarray(p * spec.vocab, (p + 1) * spec.vocab);
      expect(maxRelativeError(row, want[p]!), `position ${p}`).toBeLessThan(LOGIT_TOLERANCE);
    }
  });

  it.each(isas)('greedy tokens are the reference argmax at every step (%s)', async (isa) => {
    await using model = await loadModel(ckpt.dir, { isa, threads: 2 });
    const tokens = prompt(5, spec.vocab, spec.seed + 100);
    const { tokens: generated } = await model.generate({ tokens, maxTokens: 12, stopAtEos: false });
    expect(generated.length).toBe(12);
    // Teacher-forced on our own tokens: each choice must be a reference argmax, up to ties
    // closer than the tolerance.
    const all = [...tokens, ...generated];
    const ref = referenceLogits(ckpt, all);
    for (let i = 0; i < generated.length; i++) {
      const row = ref[tokens.length - 1 + i]!;
      const best = Math.max(...row);
      expect(best - row[generated[i]!]!, `step ${i}`).toBeLessThanOrEqual(LOGIT_TOLERANCE * Math.max(1, best) * 2);
    }
  });
});

// Attention that rests on a few keys: two "needles" at positions 255 and 511, the last
// position of each block of 256 (the CUDA engine's split-KV blocks, test/gpu.test.ts) and
// of each tile of 32 keys, hold all but about 1e-6 of every later query's weight. The CPU
// engine matches the float64 reference there, and the case is sharp: a run that loses
// either needle (here: the needle token replaced) moves the logits by at least 10% of the
// largest (measured: 22% to 180%), ten thousand times LOGIT_TOLERANCE.
describe('attention resting on keys at the ends of blocks of 256 positions', () => {
  let needles: Awaited<ReturnType<typeof writeNeedleCheckpoint>>;
  beforeAll(async () => {
    const dir = tmpDir();
    dirs.push(dir);
    needles = await writeNeedleCheckpoint(dir, 512, [255, 511]);
  });
  const steps = [600, 601, 602];
  async function run(isa: Isa, prompt: number[]): Promise<Float32Array[]> {
    await using model = await loadModel(needles.ckpt.dir, { isa, threads: 2 });
    const seq = model.createSequence();
    const out = await model.step([{ sequence: seq, tokens: prompt, logits: 'all' }]);
    for (const t of steps) out.push(...(await model.step([{ sequence: seq, tokens: [needles.filler(t)] }])));
    seq.dispose();
    return out;
  }

  it.each(isas)('logits match the float64 reference, prompt and decode (%s)', async (isa) => {
    const { ckpt, prompt, filler } = needles;
    const want = referenceLogits(ckpt, [...prompt, ...steps.map(filler)]);
    const got = await run(isa, prompt);
    const vocab = ckpt.spec.vocab;
    for (let p = 0; p < prompt.length; p++) expect(maxRelativeError(got[0]!.subarray(p * vocab, (p + 1) * vocab), want[p]!), `position ${p}`).toBeLessThan(LOGIT_TOLERANCE);
    for (let i = 1; i < got.length; i++) expect(maxRelativeError(got[i]!, want[prompt.length - 1 + i]!), `decode step ${i}`).toBeLessThan(LOGIT_TOLERANCE);
  });

  it('each needle matters: without either one, every decode step moves by over 10% of the largest logit', async () => {
    const { prompt, filler } = needles;
    const base = await run(cpuInfo().best, prompt);
    for (const drop of [255, 511]) {
      const without = await run(cpuInfo().best, prompt.map((t, i) => (i === drop ? filler(i) : t)));
      for (let i = 1; i < base.length; i++) expect(maxRelativeError(without[i]!, Float64Array.from(base[i]!)), `needle at ${drop} replaced, decode step ${i}`).toBeGreaterThan(0.1);
    }
  });
});
