// The CUDA backend: its kernels against plain float64 references, and whole models against
// the CPU engine. They run on the CUDA build where a GPU answers (npm run test:gpu), else on
// the simulator build (npm run build:sim), which runs the same kernel code on the CPU with
// CUDA's thread, barrier, warp and tensor-core semantics; without either they are skipped
// with the reason in their name (under CI or LAMINATE_REQUIRE_SIM=1 they fail instead).
// Either way, cudaInfo() and the device option are checked.
import { cuda } from './helpers/cuda.js';

import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cudaInfo, loadModel, type Model, type StepCounts } from '../lib/index.js';
import type { NativeAddon } from '../lib/native.js';
import { writeNeedleCheckpoint } from './helpers/attention-needles.js';
import { encode, tmpDir, writeTinyCheckpoint } from './helpers/checkpoint.js';
import { xorshift as rng } from './helpers/random.js';

const demo = join(import.meta.dirname, '../models/tiny-mistral-bf16');
const info = cudaInfo();


describe('CUDA, on any machine', () => {
  it('cudaInfo() describes the build and devices, or says why there are none', () => {
    if (!info.built) expect(info.reason).toMatch(/npm run build:cuda|could not be loaded|not a CUDA build/);
    if (info.devices.length === 0) expect(info.reason).toMatch(/\S/);
    else expect(info.reason).toBeUndefined();
    if (info.built && !info.simulated) expect(info.runtimeVersion).toBeGreaterThanOrEqual(12000);
    for (const d of info.devices) {
      expect(d.name).toMatch(/\S/);
      expect(d.computeCapability).toMatch(/^\d+\.\d+$/);
      expect(d.freeBytes).toBeGreaterThan(0);
      expect(d.freeBytes).toBeLessThanOrEqual(d.totalBytes);
    }
  });

  it("device: 'cuda' is an Error that gives the reason where it cannot work; 'auto' never picks the simulator", async () => {
    if (info.devices.length === 0) await expect(loadModel(demo, { device: 'cuda' })).rejects.toThrow(info.reason!);
    await expect(loadModel(demo, { device: 'cuda:7' })).rejects.toThrow(info.devices.length === 0 ? info.reason! : /there is no GPU 7/);
    await expect(loadModel(demo, { device: 'tpu' as never })).rejects.toThrow(/device must be 'cpu', 'cuda', 'cuda:N' or 'auto'/);
    await using model = await loadModel(demo, { device: 'auto' });
    expect(model.info.device).toBe(info.devices.length > 0 && !info.simulated ? 'cuda' : 'cpu');
  });
});

/** The engine's top k of a batch (logits mode 3; k = 1 is greedy) against the largest
 * logits, sorted here, that it returns for the same batch on fresh sequences. */
async function checkTop(model: Model): Promise<void> {
  const engine = model._engine();
  const prompts = [[1, 5, 9], [7], [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]].map((p) => Int32Array.from(p));
  const ks = [1, 5, 40];
  const run = async (top: boolean) => {
    const seqs = prompts.map(() => engine.createSequence());
    const entry = (sequence: number, tokens: Int32Array, i: number) => (top ? { sequence, tokens, logits: 3 as const, topK: ks[i]! } : { sequence, tokens, logits: 1 as const });
    const out = await engine.step(prompts.map((tokens, i) => entry(seqs[i]!, tokens, i)), undefined);
    // a decode step too (the recorded graph on a GPU)
    const next = await engine.step(seqs.map((sequence, i) => entry(sequence, Int32Array.of(i + 3), i)), undefined);
    seqs.forEach((s) => engine.freeSequence(s));
    return [out, next];
  };
  const vocab = model.config.vocabSize;
  const [full, top] = [await run(false), await run(true)];
  for (let s = 0; s < 2; s++) {
    expect(top[s]!.logits.length).toBe(0);
    expect(top[s]!.topK).toBe(40);
    prompts.forEach((_, i) => {
      const row = full[s]!.logits.subarray(i * vocab, (i + 1) * vocab);
      const order = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b).slice(0, ks[i]);
      const at = i * 40;
      expect(Array.from(top[s]!.topIds.subarray(at, at + ks[i]!))).toEqual(order);
      expect(Array.from(top[s]!.topValues.subarray(at, at + ks[i]!))).toEqual(order.map((j) => row[j]));
    });
  }
}

/** Seeded top-k sampling draws the same tokens from the engine's top k as from whole rows of
 * logits (asking for log-probabilities makes the generator take whole rows). */
async function checkTopSampling(model: Model): Promise<void> {
  for (const seed of [1, 2]) {
    const options = { maxTokens: 8, stopAtEos: false, temperature: 0.9, topK: 30, topP: 0.95, minP: 0.01, seed };
    const fromTop = await model.generate('The function', options);
    const fromRows = await model.generate('The function', { ...options, logprobs: 1 });
    expect(fromTop.tokens).toEqual(fromRows.tokens);
  }
}

describe('top-k logits found by the engine', () => {
  it('on the CPU: the largest logits, sorted; sampling from them draws what whole rows give', async () => {
    await using model = await loadModel(demo, { device: 'cpu' });
    await checkTop(model);
    await checkTopSampling(model);
  });
});

/** max |a - b| over max |b|. */
function relativeDifference(a: Float32Array, b: Float32Array): number {
  let diff = 0, size = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    size = Math.max(size, Math.abs(b[i]!));
  }
  return diff / size;
}

function roundTo(x: number, dtype: 'F16' | 'BF16'): number {
  // through the library-independent encoder of the test checkpoints
  const bytes = encode([x], dtype);
  const bits = bytes[0]! | (bytes[1]! << 8);
  if (dtype === 'BF16') return new Float32Array(new Uint32Array([bits << 16]).buffer)[0]!;
  const sign = bits & 0x8000 ? -1 : 1, exp = (bits >> 10) & 31, man = bits & 1023;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 31) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

describe.skipIf(cuda.skip !== '')(`CUDA kernels and engine${cuda.label ? ` on ${cuda.label}` : ''}${cuda.skip}`, () => {
  // where the tests must run without a CUDA build (CI), every one of them fails with the reason
  let addon: NativeAddon;
  beforeAll(() => {
    addon = cuda.need();
  });

  it('dense matmul: the row kernel against float64, the tensor-core kernel against float64 of activations rounded to the weight type', () => {
    const r = rng(5);
    const n = 72, k = 96;
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const values = Array.from({ length: n * k }, () => (r() - 0.5) * 0.5);
      const bytes = encode(values, dtype);
      const w = dtype === 'F32' ? new Float32Array(bytes.buffer, bytes.byteOffset, n * k) : new Uint16Array(bytes.buffer, bytes.byteOffset, n * k);
      const exact = dtype === 'F32' ? Array.from(w as Float32Array) : Array.from(w as Uint16Array, (_, i) => roundTo(values[i]!, dtype));
      for (const m of [1, 3, 8, 9, 40]) {
        const x = Float32Array.from({ length: m * k }, () => (r() - 0.5) * 4);
        for (const tensorCores of dtype === 'F32' ? [false] : [false, true]) {
          const y = addon.cudaDenseMatmul!(w, dtype, n, k, x, m, tensorCores);
          for (let row = 0; row < m; row++)
            for (let c = 0; c < n; c++) {
              let want = 0, size = 0;
              for (let j = 0; j < k; j++) {
                const xv = tensorCores ? roundTo(x[row * k + j]!, dtype as 'F16' | 'BF16') : x[row * k + j]!;
                want += exact[c * k + j]! * xv;
                size += Math.abs(exact[c * k + j]! * xv);
              }
              expect(Math.abs(y[row * n + c]! - want), `${dtype} m=${m} tensorCores=${tensorCores} [${row}, ${c}]`).toBeLessThanOrEqual(1e-5 * size + 1e-30);
            }
        }
      }
    }
  });

  it('top-k and softmax against plain references (ties by lower index, NaN last)', () => {
    const r = rng(9);
    const rows = 3, vocab = 1000;
    const logits = Float32Array.from({ length: rows * vocab }, () => Math.round((r() - 0.5) * 40) / 4);
    logits[1 * vocab + 17] = NaN;
    logits[2 * vocab + 999] = 100;
    for (const k of [1, 5, 40]) {
      const { values, indices } = addon.cudaTopK!(logits, rows, vocab, k);
      for (let row = 0; row < rows; row++) {
        const order = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => {
          const va = logits[row * vocab + a]!, vb = logits[row * vocab + b]!;
          if (Number.isNaN(va) !== Number.isNaN(vb)) return Number.isNaN(va) ? 1 : -1;
          return vb - va || a - b;
        });
        expect(Array.from(indices.subarray(row * k, row * k + k))).toEqual(order.slice(0, k));
        expect(Array.from(values.subarray(row * k, row * k + k))).toEqual(order.slice(0, k).map((i) => logits[row * vocab + i]));
      }
    }
    const x = Float32Array.from({ length: 2 * 300 }, () => (r() - 0.5) * 30);
    const y = addon.cudaSoftmax!(x, 2, 300);
    for (let row = 0; row < 2; row++) {
      const xs = Array.from(x.subarray(row * 300, row * 300 + 300));
      const max = Math.max(...xs);
      const total = xs.reduce((s, v) => s + Math.exp(v - max), 0);
      xs.forEach((v, i) => expect(Math.abs(y[row * 300 + i]! - Math.exp(v - max) / total)).toBeLessThan(1e-6));
    }
  });

  describe('whole models against the CPU engine', () => {
    const dirs: string[] = [];
    afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
    let f32Dir = '', longDir = '', wideDir = '';
    beforeAll(async () => {
      // F32 weights (row kernels only), head_dim 64 and a sliding window of 6 positions
      f32Dir = tmpDir('laminate-gpu-');
      longDir = tmpDir('laminate-gpu-');
      wideDir = tmpDir('laminate-gpu-');
      dirs.push(f32Dir, longDir, wideDir);
      await writeTinyCheckpoint(f32Dir, { hidden: 128, intermediate: 256, layers: 2, heads: 4, kvHeads: 2, headDim: 64, vocab: 300, dtype: 'F32', seed: 31, slidingWindow: 6, maxPositions: 256 });
      // a small BF16 model for a long context
      await writeTinyCheckpoint(longDir, { hidden: 128, intermediate: 256, layers: 2, heads: 4, kvHeads: 1, headDim: 32, vocab: 300, dtype: 'BF16', seed: 32, maxPositions: 1024 });
      // head_dim 256: prompts go through the split-KV kernels, not flash attention
      await writeTinyCheckpoint(wideDir, { hidden: 128, intermediate: 256, layers: 2, heads: 2, kvHeads: 1, headDim: 256, vocab: 300, dtype: 'F32', seed: 33, maxPositions: 512 });
    });

    // Tolerances, as max |difference| over max |logit|. The GPU keeps keys and values in
    // fp16 (F32_TOLERANCE: measured up to 2.3e-4); its tensor-core kernels, which do every
    // BF16 and F16 matmul, round activations to the weight type, bf16 here with 8 significant
    // bits, where the CPU multiplies in float32 (BF16_TOLERANCE: measured up to 4.4e-3).
    const F32_TOLERANCE = 1e-3, BF16_TOLERANCE = 1e-2;

    async function both(dir: string, run: (m: Model) => Promise<Float32Array[]>): Promise<[Float32Array[], Float32Array[]]> {
      await using cpu = await loadModel(dir, { device: 'cpu' });
      await using gpu = await loadModel(dir, { device: 'cuda' });
      expect(gpu.info.device).toBe('cuda');
      expect(gpu.info.deviceName).toBe(cuda.label);
      expect(gpu.info.deviceBytes).toBeGreaterThan(0);
      return [await run(cpu), await run(gpu)];
    }

    it('the demo model (BF16): a prompt of 20 tokens on the tensor cores and flash attention, then 6 decode steps that replay a recorded graph', async () => {
      const prompt = Array.from({ length: 20 }, (_, i) => (i * 37 + 5) % 2048);
      const counts: StepCounts[] = [];
      const [a, b] = await both(demo, async (m) => {
        const seq = m.createSequence();
        const out = await m.step([{ sequence: seq, tokens: prompt, logits: 'all' }]);
        for (let t = 0; t < 6; t++) out.push(...(await m.step([{ sequence: seq, tokens: [(t * 101 + 7) % 2048], logits: 'last' }])));
        seq.dispose();
        counts.push(m.stepCounts());
        return out;
      });
      for (let t = 0; t < a.length; t++) expect(relativeDifference(b[t]!, a[t]!), `step ${t}`).toBeLessThan(BF16_TOLERANCE);
      // the CPU runs every step; the GPU runs the prompt and the first decode step, records
      // the second and replays it for the other four
      expect(counts).toEqual([{ eager: 7, recorded: 0, replayed: 0 }, { eager: 2, recorded: 1, replayed: 4 }]);
    });

    it('a short prompt and a batch of three sequences of different lengths (decode kernels, graphs per batch shape)', async () => {
      let counts: StepCounts | undefined;
      const [a, b] = await both(demo, async (m) => {
        const seqs = [m.createSequence(), m.createSequence(), m.createSequence()];
        const out = await m.step(seqs.map((s, i) => ({ sequence: s, tokens: Array.from({ length: 3 + 2 * i }, (_, j) => (j * 13 + i) % 2048), logits: 'all' as const })));
        for (let t = 0; t < 3; t++) out.push(...(await m.step(seqs.map((s, i) => ({ sequence: s, tokens: [(t * 7 + i * 3) % 2048] })))));
        out.push(...(await m.step([{ sequence: seqs[1]!, tokens: [42] }])));
        seqs.forEach((s) => s.dispose());
        if (m.info.device === 'cuda') counts = m.stepCounts();
        return out;
      });
      // a graph per batch shape: three sequences (run, recorded, replayed), one (run)
      expect(counts).toEqual({ eager: 3, recorded: 1, replayed: 1 });
      // the first step has 15 tokens: the tensor-core kernels
      for (let i = 0; i < a.length; i++) expect(relativeDifference(b[i]!, a[i]!), `output ${i}`).toBeLessThan(BF16_TOLERANCE);
    });

    it('F32 weights, head_dim 64, a sliding window, a prompt longer than one flash tile and decode past the window', async () => {
      const [a, b] = await both(f32Dir, async (m) => {
        const seq = m.createSequence();
        const out = await m.step([{ sequence: seq, tokens: Array.from({ length: 19 }, (_, j) => (j * 11 + 3) % 300), logits: 'all' }]);
        for (let t = 0; t < 4; t++) out.push(...(await m.step([{ sequence: seq, tokens: [(t * 29 + 1) % 300] }])));
        seq.dispose();
        return out;
      });
      for (let i = 0; i < a.length; i++) expect(relativeDifference(b[i]!, a[i]!), `output ${i}`).toBeLessThan(F32_TOLERANCE);
    });

    it('a long context: flash attention over many key tiles, then decode over more than one split of 256 positions', async () => {
      const [a, b] = await both(longDir, async (m) => {
        const seq = m.createSequence();
        const out = await m.step([{ sequence: seq, tokens: Array.from({ length: 300 }, (_, j) => (j * 7 + 1) % 300), logits: 'all' }]);
        for (let t = 0; t < 3; t++) out.push(...(await m.step([{ sequence: seq, tokens: [(t * 13 + 2) % 300] }])));
        seq.dispose();
        return out;
      });
      for (let i = 0; i < a.length; i++) expect(relativeDifference(b[i]!, a[i]!), `output ${i}`).toBeLessThan(BF16_TOLERANCE);
    });

    // Attention that rests on two keys, each the last position of a split of 256 positions
    // (255 and 511, also the last of a tile of 32 keys of flash attention): a kernel that
    // skips either is wrong by 22% to 180% of the largest logit (test/forward.test.ts
    // measures that on the CPU), where this test allows 0.1% (measured here: 3.6e-4).
    it('a long context whose attention rests on the last position of each split of 256: prompt (flash) and decode (split-KV)', async () => {
      const dir = tmpDir('laminate-gpu-');
      dirs.push(dir);
      const { prompt, filler } = await writeNeedleCheckpoint(dir, 512, [255, 511]);
      const [a, b] = await both(dir, async (m) => {
        const seq = m.createSequence();
        const out = await m.step([{ sequence: seq, tokens: prompt, logits: 'all' }]);
        for (let t = 0; t < 3; t++) out.push(...(await m.step([{ sequence: seq, tokens: [filler(600 + t)] }])));
        seq.dispose();
        return out;
      });
      const vocab = 300;
      for (let p = 0; p < prompt.length; p++) {
        const row = (x: Float32Array) => x.subarray(p * vocab, (p + 1) * vocab);
        expect(relativeDifference(row(b[0]!), row(a[0]!)), `prompt position ${p}`).toBeLessThan(F32_TOLERANCE);
      }
      for (let i = 1; i < a.length; i++) expect(relativeDifference(b[i]!, a[i]!), `decode step ${i}`).toBeLessThan(F32_TOLERANCE);
    });

    it('head_dim 256: a prompt through the split-KV kernels, its tokens taken in parts that fit the scratch memory', async () => {
      const [a, b] = await both(wideDir, async (m) => {
        const seq = m.createSequence();
        const out = await m.step([{ sequence: seq, tokens: Array.from({ length: 40 }, (_, j) => (j * 17 + 5) % 300), logits: 'all' }]);
        for (let t = 0; t < 3; t++) out.push(...(await m.step([{ sequence: seq, tokens: [(t * 31 + 4) % 300] }])));
        seq.dispose();
        return out;
      });
      for (let i = 0; i < a.length; i++) expect(relativeDifference(b[i]!, a[i]!), `output ${i}`).toBeLessThan(F32_TOLERANCE);
    });

    it('top-k logits found on the GPU are the largest of its logits', async () => {
      await using gpu = await loadModel(demo, { device: 'cuda' });
      await checkTop(gpu);
    });

    it('greedy generation on the GPU gives the CPU text; top-k sampling from the top k found on the GPU draws what the whole row gives', async () => {
      await using cpu = await loadModel(demo, { device: 'cpu' });
      await using gpu = await loadModel(demo, { device: 'cuda' });
      const a = await cpu.generate('The function', { maxTokens: 8, stopAtEos: false });
      const b = await gpu.generate('The function', { maxTokens: 8, stopAtEos: false });
      expect(b.tokens).toEqual(a.tokens);
      await checkTopSampling(gpu);
    });

    it('a KV cache that does not fit is an Error with the numbers, and nothing is left allocated', async () => {
      const before = cudaInfo().devices[0]!.freeBytes;
      const huge = Math.floor((before / (8 * 2 * 2 * 32 * 2)) * 1.5); // positions whose keys and values overflow free memory
      await expect(loadModel(demo, { device: 'cuda', contextSize: 4096, kvCacheTokens: huge })).rejects.toThrow(/not enough free memory on GPU 0 .*KV cache/);
      const m = await loadModel(demo, { device: 'cuda' });
      expect(cudaInfo().devices[0]!.freeBytes).toBeLessThan(before);
      m.dispose();
      if (cuda.simulated) expect(cudaInfo().devices[0]!.freeBytes).toBe(before);
    });
  });
});
