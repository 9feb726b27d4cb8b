// EXL2: the library's writer against the spec's worked examples, dequantization against the
// plain reference decoder written from the spec (test/helpers/exl2-reference.ts), bit for
// bit, the packed-code matmul against float64, a quantized version of the trained model,
// and malformed layers.
import { cuda } from './helpers/cuda.js';

import { copyFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { cpuInfo, exportModel, layoutGroups, loadModel, packExl2, quantizeRtn, type Exl2Codes, type Exl2Group, type Exl2Tensors } from '../lib/index.js';
import { decode, encode, tmpDir, writeSafetensors, writeTinyCheckpoint, type TinyCheckpoint } from './helpers/checkpoint.js';
import { DEQUANT_EXAMPLE, fp16, PACKING_EXAMPLES, referenceDequantize } from './helpers/exl2-reference.js';
import { referenceLogits } from './helpers/reference.js';
import { readModelTensors } from './helpers/safetensors-read.js';
import { native, type NativeAddon } from '../lib/native.js';

const dirs: string[] = [];
const fresh = () => {
  const d = tmpDir('laminate-exl2-');
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

/** Random codes, scales and permutation for a layout. */
function randomLayer(n: number, k: number, groups: Exl2Group[], seed: number): Exl2Codes {
  const r = rng(seed);
  const perm = Int32Array.from({ length: k }, (_, i) => i);
  for (let i = k - 1; i > 0; i--) {
    const j = r(i + 1);
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  const codes = new Uint8Array(k * n);
  let row = 0;
  for (const g of groups) {
    for (let j = 0; j < g.rows * n; j++) codes[row * n + j] = r(2 ** g.bits);
    row += g.rows;
  }
  // maxima from 0.001 to 0.05, some giving subnormal m = max / 256
  const scaleMax = Float64Array.from(groups, () => fp16(0.001 + r(1000) * 0.000049));
  return { inFeatures: k, outFeatures: n, groups, perm, codes, scaleCodes: Uint8Array.from({ length: groups.length * n }, () => r(16)), scaleMax };
}

const asTensors = (t: Exl2Tensors, n: number, k: number) => ({
  qWeight: t.q_weight.data, qInvperm: t.q_invperm.data, qScale: t.q_scale.data,
  qScaleMax: Float64Array.from(t.q_scale_max.data, (h) => decode(new Uint8Array(new Uint16Array([h]).buffer), 'F16')[0]!),
  qGroups: t.q_groups.data, K: k, N: n,
});

const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Writes an EXL2 model directory from a tiny checkpoint: every linear layer quantized by
 * `quantize` (name, W [N x K], N, K), everything else in fp16, as ExLlamaV2 stores it. */
function writeExl2(dir: string, ckpt: TinyCheckpoint, quantize: (name: string, w: Float64Array, n: number, k: number) => Exl2Codes, extra: Record<string, unknown> = {}) {
  const out: { name: string; dtype: string; shape: number[]; data: Uint8Array }[] = [];
  const dequantized = new Map<string, { shape: number[]; values: Float64Array }>();
  for (const [name, t] of ckpt.tensors) {
    const linear = /(proj|lm_head)\.weight$/.test(name);
    if (!linear) {
      out.push({ name, dtype: 'F16', shape: t.shape, data: encode(t.values, 'F16') });
      dequantized.set(name, { shape: t.shape, values: decode(encode(t.values, 'F16'), 'F16') });
      continue;
    }
    const [n, k] = t.shape as [number, number];
    const packed = packExl2(quantize(name, t.values, n, k));
    const key = name.replace(/\.weight$/, '');
    out.push({ name: `${key}.q_weight`, dtype: 'I32', shape: packed.q_weight.shape, data: bytes(packed.q_weight.data) });
    out.push({ name: `${key}.q_invperm`, dtype: 'I32', shape: packed.q_invperm.shape, data: bytes(packed.q_invperm.data) });
    out.push({ name: `${key}.q_scale`, dtype: 'I32', shape: packed.q_scale.shape, data: bytes(packed.q_scale.data) });
    out.push({ name: `${key}.q_scale_max`, dtype: 'F16', shape: packed.q_scale_max.shape, data: bytes(packed.q_scale_max.data) });
    out.push({ name: `${key}.q_groups`, dtype: 'I16', shape: packed.q_groups.shape, data: bytes(packed.q_groups.data) });
    dequantized.set(name, { shape: [n, k], values: referenceDequantize(asTensors(packed, n, k)) });
  }
  writeSafetensors(join(dir, 'output.safetensors'), out);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...ckpt.config, quantization_config: { quant_method: 'exl2', version: '0.2.7', bits: 4.0, head_bits: 6 }, ...extra }));
  copyFileSync(join(ckpt.dir, 'generation_config.json'), join(dir, 'generation_config.json'));
  // the dequantized model, for the float64 reference
  return { ...ckpt, dir, tensors: dequantized } as TinyCheckpoint;
}

describe('writer', () => {
  it.each(PACKING_EXAMPLES.map((e, i) => [e.bits, i, e] as const))('packs the %i-bit worked example %i of the spec', (bits, _i, example) => {
    // one column, one group of 32 rows: the example chunk repeated
    const chunk = example.codes.length;
    const codes = Uint8Array.from({ length: 32 }, (_, r) => example.codes[r % chunk]!);
    const packed = packExl2({ inFeatures: 32, outFeatures: 1, groups: [{ bits: bits as 8, rows: 32 }], perm: Int32Array.from({ length: 32 }, (_, i) => i), codes, scaleCodes: new Uint8Array(1), scaleMax: Float64Array.of(1) });
    const np = 32;
    const column = Array.from({ length: packed.q_weight.shape[0] }, (_, q) => packed.q_weight.data[q * np]!);
    const words = example.words.length;
    for (let q = 0; q < column.length; q++) expect(column[q], `qrow ${q}`).toBe(example.words[q % words]! >>> 0);
    // padded columns hold the zero point
    expect(packed.q_weight.data[1]).toBe(packExl2({ inFeatures: 32, outFeatures: 1, groups: [{ bits: bits as 8, rows: 32 }], perm: Int32Array.from({ length: 32 }, (_, i) => i), codes: new Uint8Array(32).fill(2 ** (bits - 1)), scaleCodes: new Uint8Array(1), scaleMax: Float64Array.of(1) }).q_weight.data[0]);
  });

  it('rejects layouts the format does not allow', () => {
    const layer = (groups: Exl2Group[]) => randomLayer(8, 64, groups, 1);
    expect(() => packExl2(layer([{ bits: 4, rows: 32 }, { bits: 8, rows: 32 }]))).toThrow(/order 8, 6, 5, 4, 3, 2/);
    expect(() => packExl2(layer([{ bits: 4, rows: 32 }]))).toThrow(/groups cover 32 rows, in_features is 64/);
    expect(() => packExl2(layer([{ bits: 7 as 8, rows: 64 }]))).toThrow(/width 7/);
  });
});

describe('dequantization and matmul', () => {
  let source: TinyCheckpoint;
  let quant: TinyCheckpoint;
  beforeAll(async () => {
    source = await writeTinyCheckpoint(fresh(), { hidden: 128, intermediate: 192, layers: 2, heads: 4, kvHeads: 2, vocab: 100, dtype: 'BF16', seed: 31 });
    // every width and mixed layouts across the layers; the head in the 6-bit head recipe
    const layouts: [number, 8 | 6 | 5 | 4 | 3 | 2][][] = [[[1, 8]], [[0.25, 6], [0.75, 5]], [[0.5, 4], [0.5, 3]], [[0.25, 4], [0.75, 2]], [[0.25, 8], [0.5, 6], [0.25, 2]], [[1, 3]], [[1, 5]]];
    let i = 0;
    quant = writeExl2(fresh(), source, (name, _w, n, k) => {
      const parts = name.startsWith('lm_head') ? ([[0.25, 8], [0.75, 6]] as [number, 6][]) : layouts[i++ % layouts.length]!;
      return randomLayer(n, k, layoutGroups(k, parts), 100 + i);
    });
  });

  it('exports exactly the weights the spec defines, fp16 subnormal scales included', async () => {
    const out = join(fresh(), 'f32');
    await exportModel(quant.dir, out, { dtype: 'float32' });
    const exported = readModelTensors(out, readdirSync(out).filter((f) => f.endsWith('.safetensors')));
    let subnormalGroups = 0;
    for (const [name, t] of quant.tensors) {
      const got = exported.get(name)!;
      expect(got.shape, name).toEqual(t.shape);
      for (let i = 0; i < t.values.length; i++) if (got.values[i] !== t.values[i]) expect(got.values[i], `${name}[${i}]`).toBe(t.values[i]);
    }
    for (const name of exported.keys()) expect(name).not.toMatch(/\.q_(weight|invperm|scale|scale_max|groups)$/);
    // some groups of this model have m = max / 256 below 2^-14
    for (const t of quant.tensors.values()) if (t.values.some((v) => v !== 0 && Math.abs(v) < 2 ** -14)) subnormalGroups++;
    expect(subnormalGroups).toBeGreaterThan(0);
  });

  it("the spec's worked example: q = 11, s = 5, max = fp16(0.0123)", async () => {
    const e = DEQUANT_EXAMPLE;
    const layer: Exl2Codes = { inFeatures: 32, outFeatures: 8, groups: [{ bits: 4, rows: 32 }], perm: Int32Array.from({ length: 32 }, (_, i) => i), codes: new Uint8Array(32 * 8).fill(8), scaleCodes: new Uint8Array(8).fill(e.s), scaleMax: Float64Array.of(e.scaleMax) };
    layer.codes[3 * 8 + 2] = e.q; // stored row 3, column 2
    const packed = packExl2(layer);
    const w = referenceDequantize(asTensors(packed, 8, 32));
    expect(w[2 * 32 + 3]).toBe(e.w);
  });

  it.each(cpuInfo().isas)('logits match the float64 reference on the dequantized weights, decode and prefill (%s)', async (isa) => {
    await using model = await loadModel(quant.dir, { isa, threads: 2 });
    expect(model.config.quantization).toEqual({ method: 'exl2', bits: 4, headBits: 6 });
    for (const length of [1, 3, 9]) {
      const tokens = Array.from({ length }, (_, i) => (i * 17 + 5) % 100);
      const got = await model.forward(tokens, { allLogits: true });
      const worst = (want: Float64Array, p: number) => {
        const scale = Math.max(1, ...Array.from(want, Math.abs));
        return Math.max(...Array.from(want, (w, i) => Math.abs(got[p * 100 + i]! - w) / scale));
      };
      // The kernels round each layer's input to int8, one scale (max |x| / 127) per 32 stored
      // rows: each input moves by at most 1/254 of its segment's largest, which comes to a
      // few percent of the largest logit of this random model (3.3% measured); a wrongly
      // decoded code moves logits by tens of percent.
      const plain = referenceLogits(quant, tokens);
      for (let p = 0; p < length; p++) expect(worst(plain[p]!, p), `${length} tokens, position ${p}`).toBeLessThan(5e-2);
    }
  });
});

describe('the kernels', () => {
  // The kernels' arithmetic, checked one matmul at a time: activations rounded to int8 per
  // 32 stored rows (scale max |x| / 127), times (q - z) * fp16((s + 1)^2 * m), the spec's
  // weight before its final fp16 rounding. Integer sums are exact, so what is left is a few
  // float32 roundings per segment; a wrongly decoded code is off by a whole step.
  const layouts: [number, 8 | 6 | 5 | 4 | 3 | 2][][] = [[[1, 8]], [[0.25, 8], [0.25, 6], [0.25, 5], [0.25, 4]], [[0.5, 4], [0.5, 3]], [[0.25, 3], [0.75, 2]], [[0.5, 6], [0.5, 2]]];
  // The CUDA kernels (on a GPU, or on the simulator build) take the same test: 'cuda' is the
  // decode kernel (dp4a), 'cuda-mma' the int8 tensor-core kernel, here also over more than
  // one tile of 64 rows.
  const kernels: [string, NativeAddon][] = [...cpuInfo().isas.map((isa): [string, NativeAddon] => [isa, native()])];
  if (cuda.addon) kernels.push(['cuda', cuda.addon], ['cuda-mma', cuda.addon]);
  it.each(kernels)('compute their int8 products exactly: every width, 1 to 9 rows (%s)', (isa, addon) => {
    const n = 72, k = 256; // 72 columns: one partly used 32-column block
    for (const [li, parts] of layouts.entries()) {
      const layer = randomLayer(n, k, layoutGroups(k, parts, 64), 700 + li);
      const t = packExl2(layer);
      const tensors = { qWeight: new Int32Array(t.q_weight.data.buffer), qInvperm: t.q_invperm.data, qScale: new Int32Array(t.q_scale.data.buffer), qScaleMax: t.q_scale_max.data, qGroups: t.q_groups.data, n, k };
      // w[c][j], stored row j, as the kernels define it
      const w: number[][] = [];
      for (let c = 0; c < n; c++) {
        w.push([]);
        let row = 0;
        layer.groups.forEach((g, gi) => {
          const m = fp16(layer.scaleMax[gi]! / 256), z = 2 ** (g.bits - 1);
          const scale = fp16((layer.scaleCodes[gi * n + c]! + 1) ** 2 * m);
          for (let j = row; j < row + g.rows; j++) w[c]!.push((layer.codes[j * n + c]! - z) * scale);
          row += g.rows;
        });
      }
      const r = rng(900 + li);
      for (const m of isa === 'cuda-mma' ? [1, 9, 17, 70] : [1, 2, 3, 4, 5, 9]) {
        // a few large inputs, and one row of zeros
        const x = Float32Array.from({ length: m * k }, (_, i) => (m > 2 && Math.floor(i / k) === 1 ? 0 : ((r(2001) - 1000) / 1000) * (r(20) === 0 ? 30 : 1)));
        const out = addon.exl2Matmul(tensors, x, m, isa);
        for (let row = 0; row < m; row++) {
          // the rounding: each input within half a step of its segment's scale
          const xs: number[] = [];
          let j0 = 0;
          out.segmentRows.forEach((rows, s) => {
            const d = out.scale[row * out.segmentRows.length + s]!;
            let amax = 0;
            for (let j = j0; j < j0 + rows; j++) amax = Math.max(amax, Math.abs(x[row * k + layer.perm[j]!]!));
            expect(d).toBe(Math.fround(amax / 127));
            for (let j = j0; j < j0 + rows; j++) {
              const q = out.xq[row * k + j]!;
              expect(Math.abs(q * d - x[row * k + layer.perm[j]!]!)).toBeLessThanOrEqual(d * 0.5001);
              xs.push(q * d);
            }
            j0 += rows;
          });
          for (let c = 0; c < n; c++) {
            let want = 0, size = 0;
            for (let j = 0; j < k; j++) {
              want += w[c]![j]! * xs[j]!;
              size += Math.abs(w[c]![j]! * xs[j]!);
            }
            expect(Math.abs(out.y[row * n + c]! - want), `layout ${li}, ${m} rows, row ${row}, column ${c}`).toBeLessThanOrEqual(1e-5 * size);
          }
        }
      }
    }
  });

  it('exl2Matmul checks its arguments', () => {
    const t = packExl2(randomLayer(8, 32, [{ bits: 4, rows: 32 }], 1));
    const tensors = { qWeight: new Int32Array(t.q_weight.data.buffer), qInvperm: t.q_invperm.data, qScale: new Int32Array(t.q_scale.data.buffer), qScaleMax: t.q_scale_max.data, qGroups: t.q_groups.data, n: 8, k: 32 };
    expect(() => native().exl2Matmul(tensors, new Float32Array(31), 1, 'scalar')).toThrow(/m \* k/);
    expect(() => native().exl2Matmul({ ...tensors, qScale: new Float32Array(4) as never }, new Float32Array(32), 1, 'scalar')).toThrow(/qScale has the wrong array type/);
    expect(() => native().exl2Matmul({ ...tensors, qGroups: Int16Array.of(7, 0) }, new Float32Array(32), 1, 'scalar')).toThrow(/width 7/);
    expect(() => native().exl2Matmul(tensors, new Float32Array(32), 1, 'sse9')).toThrow(/unknown instruction set/);
  });
});

describe('the trained model, quantized', () => {
  it('4-bit round-to-nearest with mixed groups runs close to its exported fp16 checkpoint', async () => {
    const demo = join(import.meta.dirname, '../models/tiny-mistral-bf16');
    const { readSafetensors } = await import('./helpers/safetensors-read.js');
    const tensors = readSafetensors(join(demo, 'model.safetensors')).tensors;
    const ckpt = { dir: demo, tensors: new Map([...tensors].map(([k, v]) => [k, { shape: v.shape, values: v.values }])), config: {}, spec: {} } as unknown as TinyCheckpoint;
    const dir = fresh();
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) copyFileSync(join(demo, f), join(dir, f));
    const { readFileSync } = await import('node:fs');
    ckpt.config = JSON.parse(readFileSync(join(demo, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeExl2(dir, ckpt, (name, w, n, k) =>
      quantizeRtn(w, n, k, name.startsWith('lm_head') ? layoutGroups(k, [[0.15, 8], [0.85, 6]], 32) : layoutGroups(k, [[0.1, 8], [0.9, 4]], 32)),
    );
    // a stale index copied from the source model names files that are not there
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': 'model-00001-of-00002.safetensors' } }));
    const exported = join(fresh(), 'fp16');
    await exportModel(dir, exported, { dtype: 'float16' });
    await using q = await loadModel(dir);
    await using f = await loadModel(exported);
    const prompt = q.tokenize('The function');
    const a = await q.forward(prompt);
    const b = await f.forward(prompt);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    expect(worst).toBeLessThan(0.05);
    const text = await q.generate('The function', { maxTokens: 16, stopAtEos: false });
    expect(text.tokens.length).toBe(16);

    // The CUDA engine (a GPU, or the simulator build) on the same EXL2 files. Its integer
    // sums are the CPU's, but its float epilogue and fp16 KV cache move some activations
    // across an int8 rounding boundary, and from there the two runs round independently: so
    // each is held to the exported fp16 model, the GPU within twice the CPU's distance. A
    // prompt of more than 8 tokens takes the tensor-core kernel, each decode step dp4a.
    if (!cuda.addon) return;
    await using g = await loadModel(dir, { device: 'cuda' });
    expect(g.info.device).toBe('cuda');
    const long = [...prompt, ...q.tokenize(' returns the sum of its arguments')];
    expect(long.length).toBeGreaterThan(8);
    const run = async (m: typeof q, tokens: number[]) => {
      const seq = m.createSequence();
      const out = await m.step([{ sequence: seq, tokens, logits: 'all' }]);
      for (const t of [5, 9, 13]) out.push(...(await m.step([{ sequence: seq, tokens: [t] }])));
      seq.dispose();
      return out;
    };
    const distance = (x: Float32Array, y: Float32Array) => x.reduce((d, v, j) => Math.max(d, Math.abs(v - y[j]!)), 0);
    for (const tokens of [prompt, long]) {
      const [outC, outG, outF] = [await run(q, tokens), await run(g, tokens), await run(f, tokens)];
      outF.forEach((ref, i) => {
        const cpu = distance(outC[i]!, ref), gpu = distance(outG[i]!, ref);
        expect(gpu, `${tokens.length}-token prompt, output ${i}: GPU ${gpu}, CPU ${cpu} from fp16`).toBeLessThan(Math.max(2 * cpu, 0.05));
      });
    }
  });
});

describe('malformed layers', () => {
  let base: TinyCheckpoint;
  beforeAll(async () => {
    base = await writeTinyCheckpoint(fresh(), { hidden: 64, intermediate: 96, layers: 1, heads: 2, kvHeads: 1, vocab: 40, dtype: 'F16', seed: 7 });
  });
  it.each<[string, (t: Exl2Tensors) => void, RegExp]>([
    ['widths out of order', (t) => t.q_groups.data.set([4, 0, 8, 4]), /widths must come in the order/],
    ['a width that is not allowed', (t) => { t.q_groups.data[0] = 7; }, /width 7/],
    ['groups that do not cover the rows', (t) => { t.q_groups.data[t.q_groups.data.length - 1] = t.q_weight.shape[0] - 1; }, /groups cover|not ordered|whole number/],
    ['a permutation with a repeat', (t) => { t.q_invperm.data[1] = t.q_invperm.data[0]!; }, /not a permutation/],
  ])('%s', async (_name, mutate, pattern) => {
    const dir = fresh();
    writeExl2(dir, base, (name, w, n, k) => quantizeRtn(w, n, k, layoutGroups(k, [[0.5, 8], [0.5, 4]])));
    // rewrite the up_proj tensors with the mutation
    const { readSafetensors } = await import('./helpers/safetensors-read.js');
    const file = readSafetensors(join(dir, 'output.safetensors'));
    const get = (suffix: string) => file.tensors.get(`model.layers.0.mlp.up_proj.${suffix}`)!;
    const view = <T extends Int16Array | Int32Array | Uint32Array>(C: { new (b: ArrayBuffer): T }, suffix: string) => new C(new Uint8Array(get(suffix).bytes).buffer);
    const t = {
      q_weight: { shape: get('q_weight').shape as [number, number], data: view(Uint32Array, 'q_weight') },
      q_invperm: { shape: get('q_invperm').shape as [number], data: view(Int32Array, 'q_invperm') },
      q_scale: { shape: get('q_scale').shape as [number, number], data: view(Uint32Array, 'q_scale') },
      q_scale_max: { shape: get('q_scale_max').shape as [number], data: new Uint16Array(new Uint8Array(get('q_scale_max').bytes).buffer) },
      q_groups: { shape: get('q_groups').shape as [number], data: view(Int16Array, 'q_groups') },
    } satisfies Exl2Tensors;
    mutate(t);
    const rewritten = [...file.tensors].map(([name, v]) => {
      const part = /up_proj\.(q_\w+)$/.exec(name)?.[1] as keyof Exl2Tensors | undefined;
      return { name, dtype: v.dtype, shape: v.shape, data: part ? bytes(t[part].data) : new Uint8Array(v.bytes) };
    });
    writeSafetensors(join(dir, 'output.safetensors'), rewritten);
    const err = await loadModel(dir).then((m) => (m.dispose(), null), (e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toMatch(pattern);
    expect(err!.message).toContain('model.layers.0.mlp.up_proj.q_');
    await expect(exportModel(dir, join(fresh(), 'x'))).rejects.toThrow(pattern);
  });
});
