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
import { exactCase, kernelWeights, layerArrays, randomLayer, rng } from './helpers/exl2-cases.js';
import { referenceLogits } from './helpers/reference.js';
import { readModelTensors } from './helpers/safetensors-read.js';
import { readSource } from '../lib/model/load.js';
import { resolvePlan } from '../lib/model/plan.js';
import { native, type NativeAddon } from '../lib/native.js';

const dirs: string[] = [];
const fresh = () => {
  const d = tmpDir('laminate-exl2-');
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));



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
  const LAYOUTS: [number, 8 | 6 | 5 | 4 | 3 | 2][][] = [[[1, 8]], [[0.25, 8], [0.25, 6], [0.25, 5], [0.25, 4]], [[0.5, 4], [0.5, 3]], [[0.25, 3], [0.75, 2]], [[0.5, 6], [0.5, 2]]];
  type Kernel = 'cpu' | 'cuda' | 'cuda-mma';
  // The CUDA kernels (on a GPU, or on the simulator build) take the same tests: 'cuda' is
  // the decode kernel (dp4a, up to 8 rows a launch), 'cuda-mma' the int8 tensor-core kernel
  // (64 rows by 4 blocks of 32 columns a grid block).
  const SHAPES: { n: number; k: number; layouts: typeof LAYOUTS; rows: Record<Kernel, number[]> }[] = [
    // 72 columns: one partly used 32-column block; 8 segments; every width
    { n: 72, k: 256, layouts: LAYOUTS, rows: { cpu: [1, 2, 3, 4, 5, 9], cuda: [1, 2, 3, 4, 5, 9], 'cuda-mma': [1, 9, 17, 70] } },
    // 200 columns: a second grid block of the tensor-core kernel, three of its four warps
    // with columns; 1088 rows, 34 segments: the decode kernel's 16 warps take segments s
    // and s + 16 together, and a second round; 70 rows: a second tile of 64 rows
    { n: 200, k: 1088, layouts: [LAYOUTS[1]!, LAYOUTS[3]!], rows: { cpu: [1, 5], cuda: [1, 9], 'cuda-mma': [17, 70] } },
  ];
  const kindOf = (isa: string): Kernel => (isa === 'cuda' || isa === 'cuda-mma' ? isa : 'cpu');


  function checkProducts(isa: string, addon: NativeAddon) {
    for (const [si, { n, k, layouts, rows }] of SHAPES.entries())
      for (const [li, parts] of layouts.entries()) {
        const layer = randomLayer(n, k, layoutGroups(k, parts, 64), 700 + 10 * si + li);
        const tensors = layerArrays(packExl2(layer), n, k);
        const w = kernelWeights(layer);
        const r = rng(900 + 10 * si + li);
        for (const m of rows[kindOf(isa)]) {
          // a few large inputs, and one row of zeros
          const x = Float32Array.from({ length: m * k }, (_, i) => (m > 2 && Math.floor(i / k) === 1 ? 0 : ((r(2001) - 1000) / 1000) * (r(20) === 0 ? 30 : 1)));
          const out = addon.exl2Matmul(tensors, x, m, isa);
          for (let row = 0; row < m; row++) {
            // the rounding: each input within half a step of its segment's scale
            const xs: number[] = [];
            let j0 = 0;
            out.segmentRows.forEach((segmentRows, s) => {
              const d = out.scale[row * out.segmentRows.length + s]!;
              let amax = 0;
              for (let j = j0; j < j0 + segmentRows; j++) amax = Math.max(amax, Math.abs(x[row * k + layer.perm[j]!]!));
              expect(d).toBe(Math.fround(amax / 127));
              for (let j = j0; j < j0 + segmentRows; j++) {
                const q = out.xq[row * k + j]!;
                expect(Math.abs(q * d - x[row * k + layer.perm[j]!]!)).toBeLessThanOrEqual(d * 0.5001);
                xs.push(q * d);
              }
              j0 += segmentRows;
            });
            for (let c = 0; c < n; c++) {
              let want = 0, size = 0;
              for (let j = 0; j < k; j++) {
                want += w[c]![j]! * xs[j]!;
                size += Math.abs(w[c]![j]! * xs[j]!);
              }
              expect(Math.abs(out.y[row * n + c]! - want), `${n} x ${k}, layout ${li}, ${m} rows, row ${row}, column ${c}`).toBeLessThanOrEqual(1e-5 * size);
            }
          }
        }
      }
  }

  it.each(cpuInfo().isas)('compute their int8 products exactly: every width, 1 to 9 rows (%s)', (isa) => checkProducts(isa, native()));
  it.skipIf(cuda.skip !== '').each(['cuda', 'cuda-mma'])(`compute their int8 products exactly: every width, 1 to 70 rows (%s)${cuda.skip}`, (isa) => checkProducts(isa, cuda.need()));


  function expectExact(isa: string, addon: NativeAddon) {
    const c = exactCase(kindOf(isa) === 'cuda-mma' ? 17 : kindOf(isa) === 'cuda' ? 9 : 5);
    const out = addon.exl2Matmul(c.layer, c.x, c.rows, isa);
    expect(Array.from(out.scale)).toEqual(Array.from(c.scales));
    expect(Array.from(out.xq)).toEqual(Array.from(c.xq));
    for (let i = 0; i < c.want.length; i++) if (out.y[i] !== c.want[i]) expect(out.y[i], `${isa}: row ${Math.floor(i / c.layer.n)}, column ${i % c.layer.n}`).toBe(c.want[i]);
    return { case: c, out };
  }

  it.each(cpuInfo().isas)('give the exact integer sums where every float step is exact (%s)', (isa) => {
    expectExact(isa, native());
  });

  // The README's promise: the GPU kernels' integer sums are the CPU kernels'. Compared
  // directly, output for output, on the inputs above (and so also with the exact values).
  it.skipIf(cuda.skip !== '').each(['cuda', 'cuda-mma'])(`give the CPU kernels' integer sums, bit for bit (%s)${cuda.skip}`, (isa) => {
    const gpu = expectExact(isa, cuda.need());
    const cpu = native().exl2Matmul(gpu.case.layer, gpu.case.x, gpu.case.rows, cpuInfo().best);
    expect(Array.from(gpu.out.xq)).toEqual(Array.from(cpu.xq));
    expect(Array.from(gpu.out.scale)).toEqual(Array.from(cpu.scale));
    for (let i = 0; i < cpu.y.length; i++) if (gpu.out.y[i] !== cpu.y[i]) expect(gpu.out.y[i], `${isa} against the CPU: output ${i}`).toBe(cpu.y[i]);
  });

  it('exl2Matmul checks its arguments', () => {
    const t = packExl2(randomLayer(8, 32, [{ bits: 4, rows: 32 }], 1));
    const tensors = layerArrays(t, 8, 32);
    expect(() => native().exl2Matmul(tensors, new Float32Array(31), 1, 'scalar')).toThrow(/m \* k/);
    expect(() => native().exl2Matmul({ ...tensors, qScale: new Float32Array(4) as never }, new Float32Array(32), 1, 'scalar')).toThrow(/qScale has the wrong array type/);
    expect(() => native().exl2Matmul({ ...tensors, qGroups: Int16Array.of(7, 0) }, new Float32Array(32), 1, 'scalar')).toThrow(/width 7/);
    expect(() => native().exl2Matmul(tensors, new Float32Array(32), 1, 'sse9')).toThrow(/unknown instruction set/);
  });
});

describe('the trained model, quantized', () => {
  // 4-bit round-to-nearest with mixed groups (and the 8/6-bit head), and its fp16 export
  let dir = '', exported = '';
  beforeAll(async () => {
    const demo = join(import.meta.dirname, '../models/tiny-mistral-bf16');
    const { readSafetensors } = await import('./helpers/safetensors-read.js');
    const tensors = readSafetensors(join(demo, 'model.safetensors')).tensors;
    const ckpt = { dir: demo, tensors: new Map([...tensors].map(([k, v]) => [k, { shape: v.shape, values: v.values }])), config: {}, spec: {} } as unknown as TinyCheckpoint;
    dir = fresh();
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) copyFileSync(join(demo, f), join(dir, f));
    const { readFileSync } = await import('node:fs');
    ckpt.config = JSON.parse(readFileSync(join(demo, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeExl2(dir, ckpt, (name, w, n, k) =>
      quantizeRtn(w, n, k, name.startsWith('lm_head') ? layoutGroups(k, [[0.15, 8], [0.85, 6]], 32) : layoutGroups(k, [[0.1, 8], [0.9, 4]], 32)),
    );
    // a stale index copied from the source model names files that are not there
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': 'model-00001-of-00002.safetensors' } }));
    exported = join(fresh(), 'fp16');
    await exportModel(dir, exported, { dtype: 'float16' });
  });

  it('4-bit round-to-nearest with mixed groups runs close to its exported fp16 checkpoint', async () => {
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
  });

  // The CUDA engine (a GPU, or the simulator build) on the same EXL2 files. Its integer
  // sums are the CPU's, but its float epilogue and fp16 KV cache move some activations
  // across an int8 rounding boundary, and from there the two runs round independently: so
  // each is held to the exported fp16 model, the GPU within twice the CPU's distance. A
  // prompt of more than 8 tokens takes the tensor-core kernel, each decode step dp4a.
  it.skipIf(cuda.skip !== '')(`on the CUDA engine, as close to the fp16 checkpoint as the CPU engine${cuda.skip}`, async () => {
    cuda.need();
    await using q = await loadModel(dir, { device: 'cpu' });
    await using f = await loadModel(exported, { device: 'cpu' });
    await using g = await loadModel(dir, { device: 'cuda' });
    expect(g.info.device).toBe('cuda');
    const prompt = q.tokenize('The function');
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
  const UP = 'model.layers.0.mlp.up_proj';

  /** An EXL2 model (groups of 32 rows: up_proj has one of 8 bits, then one of 4) whose up_proj
   * tensors are changed by `mutate` and stored with the dtypes of `dtypes` (same bytes). */
  async function malformed(mutate: (t: Exl2Tensors) => void, dtypes: Partial<Record<keyof Exl2Tensors, string>> = {}): Promise<string> {
    const dir = fresh();
    writeExl2(dir, base, (name, w, n, k) => quantizeRtn(w, n, k, layoutGroups(k, [[0.5, 8], [0.5, 4]])));
    const { readSafetensors } = await import('./helpers/safetensors-read.js');
    const file = readSafetensors(join(dir, 'output.safetensors'));
    const get = (suffix: string) => file.tensors.get(`${UP}.${suffix}`)!;
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
      const part = name.startsWith(`${UP}.`) ? (name.slice(UP.length + 1) as keyof Exl2Tensors) : undefined;
      return { name, dtype: (part && dtypes[part]) ?? v.dtype, shape: v.shape, data: part ? bytes(t[part].data) : new Uint8Array(v.bytes) };
    });
    writeSafetensors(join(dir, 'output.safetensors'), rewritten);
    return dir;
  }

  /** The errors of loading and of exporting the model in `dir`. */
  async function failures(dir: string): Promise<Error[]> {
    const load = await loadModel(dir).then((m) => (m.dispose(), null), (e: unknown) => e as Error);
    const exported = await exportModel(dir, join(fresh(), 'x')).then(() => null, (e: unknown) => e as Error);
    return [load, exported].map((err, i) => {
      expect(err, i === 0 ? 'loadModel' : 'exportModel').toBeInstanceOf(Error);
      return err!;
    });
  }

  const fp16Bits = (v: number) => new Uint16Array(encode([v], 'F16').buffer)[0]!;
  it.each<[string, (t: Exl2Tensors) => void, RegExp]>([
    ['widths out of order', (t) => t.q_groups.data.set([4, 0, 8, 4]), /q_groups': .*widths must come in the order/],
    ['a width that is not allowed', (t) => { t.q_groups.data[0] = 7; }, /q_groups': .*width 7/],
    ['groups that do not cover the rows', (t) => { t.q_groups.data[t.q_groups.data.length - 1] = t.q_weight.shape[0] - 1; }, /q_groups': .*(groups cover|not ordered|whole number)/],
    ['a permutation with a repeat', (t) => { t.q_invperm.data[1] = t.q_invperm.data[0]!; }, /q_invperm': .*not a permutation/],
    // a group maximum that would make every logit NaN, or flip the group's weights
    ['a NaN maximum scale', (t) => { t.q_scale_max.data[1] = 0x7e00; }, /q_scale_max': group 1 has maximum scale nan; it must be a finite number, not negative/],
    ['an infinite maximum scale', (t) => { t.q_scale_max.data[1] = 0x7c00; }, /q_scale_max': group 1 has maximum scale inf; /],
    ['a maximum scale of minus infinity', (t) => { t.q_scale_max.data[0] = 0xfc00; }, /q_scale_max': group 0 has maximum scale -inf; /],
    ['a negative maximum scale', (t) => { t.q_scale_max.data[1] = fp16Bits(-0.01); }, /q_scale_max': group 1 has maximum scale -0\.01000\d*; /],
  ])('%s: an Error naming the file and tensor, at load and at export', async (_name, mutate, pattern) => {
    const dir = await malformed(mutate);
    for (const err of await failures(dir)) {
      expect(err.message).toMatch(pattern);
      expect(err.message).toContain(`${join(dir, 'output.safetensors')}: tensor '${UP}.q_`);
    }
  });

  // ExLlamaV2 stores fp16(M * p): for a group of zero weights M is about 1e-12, and fp16 0.
  it('a zero maximum scale, as the converter writes for a group of zeros, loads: that group decodes to zeros', async () => {
    const dir = await malformed((t) => { t.q_scale_max.data[1] = 0; });
    await using model = await loadModel(dir);
    expect(Array.from(await model.forward([1, 2, 3])).every(Number.isFinite)).toBe(true);
    const out = join(fresh(), 'f32');
    await exportModel(dir, out, { dtype: 'float32' });
    const up = readModelTensors(out, readdirSync(out).filter((f) => f.endsWith('.safetensors'))).get(`${UP}.weight`)!;
    // identity permutation: group 1 holds input channels 32..63 of every output
    const [n, k] = up.shape as [number, number];
    for (let o = 0; o < n; o++) for (let i = 32; i < k; i++) expect(Math.abs(up.values[o * k + i]!), `[${o}, ${i}]`).toBe(0);
    expect(up.values.some((v) => v !== 0)).toBe(true);
  });

  // Every dtype a safetensors header can give: the error names the file, the tensor, the
  // dtype found and the one expected, including dtypes the engine does not read at all.
  it.each<[keyof Exl2Tensors, string, string]>([
    ['q_groups', 'U16', 'I16'],
    ['q_scale_max', 'BF16', 'F16'],
    ['q_weight', 'F32', 'I32'],
    ['q_scale', 'U32', 'I32'],
    ['q_invperm', 'F32', 'I32 or I16'],
  ])('%s stored as %s: an Error naming the file, the tensor and the dtypes', async (part, dtype, expected) => {
    const dir = await malformed(() => undefined, { [part]: dtype });
    for (const err of await failures(dir))
      expect(err.message).toBe(`${join(dir, 'output.safetensors')}: tensor '${UP}.${part}': has dtype ${dtype}; an EXL2 ${part} must be ${expected}`);
  });

  it('the engine names the file and tensor of a dtype it does not read, when handed one directly', async () => {
    const dir = await malformed(() => undefined);
    const source = await readSource(dir);
    const spec = resolvePlan(source.config, source.checkpoint, source.plan, { isa: 'auto', threads: 1, contextSize: 16, kvCacheTokens: 16, kvPageSize: 16 });
    const i = spec.tensors.findIndex((t) => t.name === `${UP}.q_groups`);
    spec.tensors[i] = { ...spec.tensors[i]!, dtype: 'U16' as never };
    expect(() => new (native().Engine)({ ...spec, device: 'cpu' })).toThrow(`${join(dir, 'output.safetensors')}: tensor '${UP}.q_groups': unsupported dtype 'U16'`);
  });
});
