// Merging against references written here from the arithmetic mergekit performs (float32
// operations, each result rounded to the storage dtype), the seed configuration's layer
// mapping and file layout, virtual merges, and bad configurations.
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, merge, type MergeConfig, type Parameters as MergeParameters } from '../lib/index.js';
import { loadMergeConfig } from '../lib/merge/config.js';
import { readSource } from '../lib/model/load.js';
import { resolvePlan } from '../lib/model/plan.js';
import type { NativeModelSpec } from '../lib/native.js';
import { shardHeader, shardTensors } from '../lib/formats/safetensors-write.js';
import { writeOrder } from '../lib/merge/merge.js';
import { planMerge } from '../lib/merge/plan.js';
import { decode, encode, tmpDir, writeTinyCheckpoint, type DType, type TinyCheckpoint, type TinySpec } from './helpers/checkpoint.js';
import { readModelTensors, readSafetensors } from './helpers/safetensors-read.js';

const dirs: string[] = [];
const fresh = (prefix = 'laminate-merge-') => {
  const d = tmpDir(prefix);
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

// Rounding of a float32 result to the storage dtype (round to nearest even).
const f32 = Math.fround;
const roundTo = (dtype: DType) => (x: number) => (dtype === 'F32' ? f32(x) : decode(encode([f32(x)], dtype), dtype)[0]!);

const shape: Omit<TinySpec, 'dtype' | 'seed'> = { hidden: 32, intermediate: 48, layers: 2, heads: 4, kvHeads: 2, vocab: 64 };
const models: Record<string, TinyCheckpoint[]> = {};
beforeAll(async () => {
  for (const dtype of ['BF16', 'F32'] as const) {
    models[dtype] = [];
    for (const seed of [1, 2, 3, 4]) models[dtype]!.push(await writeTinyCheckpoint(fresh(), { ...shape, dtype, seed }));
  }
});

async function runMerge(config: MergeConfig, options: Parameters<typeof merge>[2] = {}) {
  const out = join(fresh(), 'out');
  const result = await merge(config, out, options);
  return { out, result, tensors: readModelTensors(out, result.shards) };
}

/** Every output tensor against a per-element reference over the inputs' values. */
function expectElementwise(out: Map<string, { values: Float64Array }>, inputs: TinyCheckpoint[], reference: (xs: number[], name: string) => number) {
  expect(out.size).toBe(inputs[0]!.tensors.size);
  for (const [name, t] of out) {
    const xs = inputs.map((m) => m.tensors.get(name)!.values);
    for (let i = 0; i < t.values.length; i++) {
      const want = reference(xs.map((x) => x[i]!), name);
      if (!Object.is(t.values[i], want)) expect(t.values[i], `${name}[${i}]`).toBe(want);
    }
  }
}

/** A gradient (list) at layer position t, as specs/merge.md 1.4 evaluates it. */
function gradient(list: number[], t: number): number {
  const scaled = t * (list.length - 1);
  const i0 = Math.trunc(scaled);
  const i1 = Math.min(list.length - 1, i0 + 1);
  const frac = scaled - i0;
  return (1 - frac) * list[i0]! + frac * list[i1]!;
}

/** One element of a task-vector merge (specs/merge.md 5.3) from the base value and each
 * model's sparsified (and rescaled) delta; `w` are the weights rounded by `r`. */
function taskVectorMerge(r: (x: number) => number, base: number, deltas: number[], w: number[], o: { consensus: boolean; normalize: boolean; lambda?: number }): number {
  const sum = (xs: number[]) => r(xs.reduce((s, x) => f32(s + x), 0));
  const weighted = deltas.map((d, m) => r(f32(w[m]! * d)));
  let mix: number;
  let div: number;
  if (o.consensus) {
    const sign = sum(weighted) >= 0 ? 1 : -1; // ties go to +1
    const agree = weighted.map((v) => Math.sign(v) === sign); // zeros never agree
    mix = sum(weighted.filter((_, m) => agree[m]));
    div = sum(w.filter((_, m) => agree[m]));
    if (div === 0) div = 1;
  } else {
    mix = sum(weighted);
    div = sum(w);
    if (Math.abs(div) < 1e-8) div = 1;
  }
  if (o.normalize) mix = r(f32(mix / div));
  if ((o.lambda ?? 1) !== 1) mix = r(f32(mix * f32(o.lambda!)));
  return r(f32(base + mix));
}

/** Breadcrumbs' mask (specs/merge.md 5.3, magnitude_outliers): drops the smallest and the
 * gamma largest |delta|; among equal magnitudes the lower index counts as larger. */
function breadcrumbsMask(d: number[], density: number, gamma: number): boolean[] {
  const n = d.length;
  let top = Math.trunc(gamma * n);
  let bottom = n - Math.trunc(density * n) - top;
  if (bottom < 0) (top += bottom), (bottom = 0);
  const ascending = d.map((_, i) => i).sort((i, j) => Math.abs(d[i]!) - Math.abs(d[j]!) || j - i);
  // mergekit slices sorted[bottom:-top] in Python: -0 ends at 0, and a negative top (density
  // above 1, gamma below 0) ends at |top|
  const end = top > 0 ? n - top : Math.min(-top, n);
  const keep = new Set(ascending.slice(Math.min(bottom, n), Math.max(end, Math.min(bottom, n))));
  return d.map((_, i) => keep.has(i));
}

/** Model m's task vector for a tensor: round(x_m - x_base) in float32. */
const taskVector = (m: TinyCheckpoint, base: TinyCheckpoint, name: string) => {
  const x0 = base.tensors.get(name)!.values;
  return Array.from(m.tensors.get(name)!.values, (v, i) => f32(v - x0[i]!));
};

/** |got - want| in units of one float32 step at want. */
const f32Steps = (got: number, want: number) => Math.abs(got - want) / 2 ** Math.max(-149, Math.floor(Math.log2(Math.abs(want) || 2 ** -126)) - 23);

describe('methods', () => {
  it('passthrough copies bits; scale multiplies with rounding, filters by input name', async () => {
    const [a] = models['BF16']!;
    const { tensors } = await runMerge({
      merge_method: 'passthrough',
      slices: [{ sources: [{ model: a!.dir, layer_range: [0, 2], parameters: { scale: [{ filter: 'o_proj', value: 0 }, { filter: 'down_proj', value: 0.5 }, { value: 1 }] } }] }],
    });
    const source = readSafetensors(join(a!.dir, 'model.safetensors')).tensors;
    for (const [name, t] of tensors) {
      const src = source.get(name)!;
      if (name.includes('o_proj')) {
        // x * 0 keeps the sign: negative entries become -0.0
        src.values.forEach((x, i) => expect(Object.is(t.values[i], x < 0 || Object.is(x, -0) ? -0 : 0)).toBe(true));
      } else if (name.includes('down_proj')) {
        src.values.forEach((x, i) => expect(t.values[i]).toBe(roundTo('BF16')(x * 0.5)));
      } else expect(Buffer.compare(t.bytes, src.bytes), name).toBe(0);
    }
  });

  it.each([
    ['BF16', undefined],
    ['BF16', true],
    ['BF16', false],
    ['F32', undefined],
    ['F32', false],
  ] as const)('linear (%s), normalize %s (default true), weights that do not sum to 1', async (dtype, normalize) => {
    const [a, b] = models[dtype]!;
    const r = roundTo(dtype);
    const { tensors } = await runMerge({
      merge_method: 'linear',
      models: [{ model: a!.dir, parameters: { weight: 0.6 } }, { model: b!.dir, parameters: { weight: 0.7 } }],
      ...(normalize !== undefined ? { parameters: { normalize } } : {}),
    });
    const w = [r(0.6), r(0.7)];
    const div = r(f32(w[0]! + w[1]!));
    expectElementwise(tensors, [a!, b!], (x) => {
      const sum = r(f32(r(f32(w[0]! * x[0]!)) + r(f32(w[1]! * x[1]!))));
      return normalize === false ? sum : r(f32(sum / div));
    });
  });

  it('task_arithmetic and ties (density 1, normalized or not) follow the task-vector arithmetic', async () => {
    const [base, a, b] = models['BF16']!;
    const r = roundTo('BF16');
    const w = [r(0.7), r(-0.4)];
    const deltas = (x: number[]) => [r(f32(x[1]! - x[0]!)), r(f32(x[2]! - x[0]!))];
    const config = (method: string, parameters: MergeParameters = {}): MergeConfig => ({
      merge_method: method,
      base_model: base!.dir,
      models: [{ model: base!.dir }, { model: a!.dir, parameters: { weight: 0.7 } }, { model: b!.dir, parameters: { weight: -0.4 } }],
      parameters: { lambda: 0.9, ...parameters },
    });
    const check = async (method: string, o: { consensus: boolean; normalize: boolean }, parameters?: MergeParameters) => {
      const { tensors } = await runMerge(config(method, parameters));
      expectElementwise(tensors, [base!, a!, b!], (x) => taskVectorMerge(r, x[0]!, deltas(x), w, { ...o, lambda: 0.9 }));
    };
    await check('task_arithmetic', { consensus: false, normalize: false });
    await check('ties', { consensus: true, normalize: true }); // ties normalizes by default
    await check('ties', { consensus: true, normalize: false }, { normalize: false });
  });

  it('ties trims each task vector to its largest magnitudes (density 0.3)', async () => {
    const [base, a, b] = models['F32']!;
    const { tensors } = await runMerge({
      merge_method: 'ties',
      base_model: base!.dir,
      models: [{ model: a!.dir, parameters: { weight: 1, density: 0.3 } }, { model: b!.dir, parameters: { weight: 0.5, density: 0.3 } }],
    });
    for (const [name, t] of tensors) {
      const x0 = base!.tensors.get(name)!.values;
      const trimmed = [a!, b!].map((m) => {
        const d = taskVector(m, base!, name);
        const k = Math.trunc(0.3 * d.length);
        const keep = new Set(d.map((_, i) => i).sort((i, j) => Math.abs(d[j]!) - Math.abs(d[i]!) || i - j).slice(0, k));
        return d.map((v, i) => (keep.has(i) ? v : 0));
      });
      for (let i = 0; i < t.values.length; i++)
        expect(t.values[i], `${name}[${i}]`).toBe(taskVectorMerge(f32, x0[i]!, trimmed.map((d) => d[i]!), [1, 0.5], { consensus: true, normalize: true }));
    }
  });

  it('breadcrumbs drops the smallest and the gamma largest magnitudes', async () => {
    const [base, a] = models['F32']!;
    const { tensors } = await runMerge({ merge_method: 'breadcrumbs', base_model: base!.dir, models: [{ model: a!.dir, parameters: { weight: 1, density: 0.5, gamma: 0.1 } }] });
    for (const [name, t] of tensors) {
      const x0 = base!.tensors.get(name)!.values;
      const d = taskVector(a!, base!, name);
      const keep = breadcrumbsMask(d, 0.5, 0.1);
      for (let i = 0; i < d.length; i++) expect(t.values[i]).toBe(f32(x0[i]! + (keep[i] ? d[i]! : 0)));
    }
  });

  it('breadcrumbs past the usual ranges (density above 1, gamma below 0) slices as mergekit does', async () => {
    const [base, a] = models['F32']!;
    for (const [density, gamma] of [[1.5, 0.01], [2, 0.2], [0.5, -0.2], [1, 0]] as const) {
      const { tensors } = await runMerge({ merge_method: 'breadcrumbs', base_model: base!.dir, models: [{ model: a!.dir, parameters: { weight: 1, density, gamma } }] });
      for (const [name, t] of tensors) {
        const x0 = base!.tensors.get(name)!.values;
        const d = taskVector(a!, base!, name);
        const keep = breadcrumbsMask(d, density, gamma);
        for (let i = 0; i < d.length; i++) expect(t.values[i], `${name}[${i}], density ${density}, gamma ${gamma}`).toBe(f32(x0[i]! + (keep[i] ? d[i]! : 0)));
      }
    }
  });

  it('a negative density is an error for ties and dare, not a crash', async () => {
    const [base, a] = models['F32']!;
    for (const method of ['ties', 'dare_ties']) {
      await expect(runMerge({ merge_method: method, base_model: base!.dir, models: [{ model: a!.dir, parameters: { weight: 1, density: -0.5 } }] })).rejects.toThrow(/density/);
    }
  });

  it('breadcrumbs_ties trims each task vector as breadcrumbs does, then elects signs, not normalized', async () => {
    const [base, a, b] = models['F32']!;
    const { tensors } = await runMerge({
      merge_method: 'breadcrumbs_ties',
      base_model: base!.dir,
      models: [{ model: a!.dir, parameters: { weight: 1, density: 0.5, gamma: 0.1 } }, { model: b!.dir, parameters: { weight: -0.6, density: 0.4, gamma: 0.05 } }],
    });
    const w = [1, f32(-0.6)];
    for (const [name, t] of tensors) {
      const x0 = base!.tensors.get(name)!.values;
      const trimmed = ([[a!, 0.5, 0.1], [b!, 0.4, 0.05]] as const).map(([m, density, gamma]) => {
        const d = taskVector(m, base!, name);
        const keep = breadcrumbsMask(d, density, gamma);
        return d.map((v, i) => (keep[i] ? v : 0));
      });
      for (let i = 0; i < t.values.length; i++)
        expect(t.values[i], `${name}[${i}]`).toBe(taskVectorMerge(f32, x0[i]!, trimmed.map((d) => d[i]!), w, { consensus: true, normalize: false }));
    }
  });

  it('dare_linear keeps about `density` of each task vector, rescaled, reproducibly by seed', async () => {
    const [base, a] = models['F32']!;
    const config = (density: number): MergeConfig => ({ merge_method: 'dare_linear', base_model: base!.dir, models: [{ model: a!.dir, parameters: { weight: 1, density } }] });
    const one = await runMerge(config(1));
    const ta = await runMerge({ merge_method: 'task_arithmetic', base_model: base!.dir, models: [{ model: a!.dir, parameters: { weight: 1 } }] });
    for (const [name, t] of one.tensors) expect(Buffer.compare(t.bytes, ta.tensors.get(name)!.bytes), name).toBe(0);
    const x = await runMerge(config(0.5), { seed: 7 });
    const y = await runMerge(config(0.5), { seed: 7 });
    const z = await runMerge(config(0.5), { seed: 8 });
    let kept = 0;
    let total = 0;
    let differs = false;
    for (const [name, t] of x.tensors) {
      expect(Buffer.compare(t.bytes, y.tensors.get(name)!.bytes)).toBe(0);
      if (Buffer.compare(t.bytes, z.tensors.get(name)!.bytes) !== 0) differs = true;
      const x0 = base!.tensors.get(name)!.values;
      const xa = a!.tensors.get(name)!.values;
      t.values.forEach((v, i) => {
        if (xa[i] === x0[i]) return;
        total++;
        if (v !== x0[i]) kept++;
      });
      // L1 norm of the task vector is preserved (rescale)
      const l1 = (arr: ArrayLike<number>) => Array.from(arr).reduce((s, v, i) => s + Math.abs(v - x0[i]!), 0);
      if (l1(xa) > 1e-3) expect(Math.abs(l1(t.values) / l1(xa) - 1)).toBeLessThan(1e-3);
    }
    expect(Math.abs(kept / total - 0.5)).toBeLessThan(0.03);
    expect(differs).toBe(true);
  });

  it('dare_ties at density 1 keeps every delta and elects signs by the weighted deltas, not normalized', async () => {
    const [base, a, b] = models['BF16']!;
    const r = roundTo('BF16');
    const { tensors } = await runMerge(
      { merge_method: 'dare_ties', base_model: base!.dir, models: [{ model: a!.dir, parameters: { weight: 0.7 } }, { model: b!.dir, parameters: { weight: -0.4 } }] },
      { seed: 5 },
    );
    const w = [r(0.7), r(-0.4)];
    expectElementwise(tensors, [base!, a!, b!], (x) => taskVectorMerge(r, x[0]!, [r(f32(x[1]! - x[0]!)), r(f32(x[2]! - x[0]!))], w, { consensus: true, normalize: false }));
  });

  it('dare_ties drops deltas at random by the seed and rescales what is kept to the L1 norm of the whole', async () => {
    const [base, a] = models['F32']!;
    const config: MergeConfig = { merge_method: 'dare_ties', base_model: base!.dir, models: [{ model: a!.dir, parameters: { weight: 1, density: 0.5 } }] };
    const x = await runMerge(config, { seed: 11 });
    const y = await runMerge(config, { seed: 11 });
    let kept = 0;
    let total = 0;
    for (const [name, t] of x.tensors) {
      expect(Buffer.compare(t.bytes, y.tensors.get(name)!.bytes), name).toBe(0);
      const x0 = base!.tensors.get(name)!.values;
      const d = taskVector(a!, base!, name);
      // a dropped delta leaves the base value; the kept ones are scaled by round(A / B),
      // A = round(sum |delta|), B = round(sum of the kept |delta|)
      const keep = Array.from(t.values, (v, i) => v !== x0[i]);
      const A = f32(d.reduce((s, v) => s + Math.abs(v), 0));
      const B = f32(d.reduce((s, v, i) => s + (keep[i] ? Math.abs(v) : 0), 0));
      const factor = A < 1e-7 || B < 1e-7 ? 1 : f32(A / B);
      expect(factor, name).toBeGreaterThan(1);
      for (let i = 0; i < d.length; i++) expect(t.values[i], `${name}[${i}]`).toBe(keep[i] ? f32(x0[i]! + f32(d[i]! * factor)) : x0[i]);
      kept += keep.filter(Boolean).length;
      total += d.length;
    }
    expect(Math.abs(kept / total - 0.5)).toBeLessThan(0.03);
  });

  it('slerp: t = 0 is the base; otherwise within one bf16 step of spherical interpolation', async () => {
    const [base, other] = models['BF16']!;
    const cfg = (t: number): MergeConfig => ({ merge_method: 'slerp', base_model: base!.dir, slices: [{ sources: [{ model: base!.dir, layer_range: [0, 2] }, { model: other!.dir, layer_range: [0, 2] }] }], parameters: { t } });
    const zero = await runMerge(cfg(0));
    for (const [name, t] of zero.tensors) expect(Buffer.compare(t.bytes, readSafetensors(join(base!.dir, 'model.safetensors')).tensors.get(name)!.bytes)).toBe(0);
    const { tensors } = await runMerge(cfg(0.3));
    let exact = 0;
    let count = 0;
    for (const [name, t] of tensors) {
      const v0 = base!.tensors.get(name)!.values;
      const v1 = other!.tensors.get(name)!.values;
      const norm = (v: Float64Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
      const dot = v0.reduce((s, x, i) => s + (x / norm(v0)) * (v1[i]! / norm(v1)), 0);
      const theta = Math.acos(dot);
      const want = Array.from(v0, (x, i) => (Math.abs(dot) > 0.9995 ? 0.7 * x + 0.3 * v1[i]! : (Math.sin(0.7 * theta) * x + Math.sin(0.3 * theta) * v1[i]!) / Math.sin(theta)));
      want.forEach((w, i) => {
        const got = t.values[i]!;
        const ulp = Math.max(2 ** -133, 2 ** (Math.floor(Math.log2(Math.abs(w) || 1)) - 7));
        expect(Math.abs(got - w), `${name}[${i}]`).toBeLessThanOrEqual(ulp);
        count++;
        if (got === roundTo('BF16')(w)) exact++;
      });
    }
    expect(exact / count).toBeGreaterThan(0.99);
  });

  it.each([
    [2, false],
    [3, false],
    [3, true],
  ] as const)('model_stock with %i models besides the base (filter_wise %s) interpolates by their mean angle', async (count, filterWise) => {
    const [base, ...rest] = models['F32']!;
    const others = rest.slice(0, count);
    const { tensors } = await runMerge({
      merge_method: 'model_stock',
      base_model: base!.dir,
      models: others.map((m) => ({ model: m.dir })),
      ...(filterWise ? { parameters: { filter_wise: true } } : {}),
    });
    let steps = 0;
    for (const [name, t] of tensors) {
      const x0 = base!.tensors.get(name)!.values;
      const xs = others.map((m) => m.tensors.get(name)!.values);
      // filter_wise: one angle per row of a matrix; else one per tensor
      const rows = filterWise && t.shape.length >= 2 ? t.shape[0]! : 1;
      const perRow = x0.length / rows;
      for (let row = 0; row < rows; row++) {
        const at = Array.from({ length: perRow }, (_, j) => row * perRow + j);
        const offsets = xs.map((x) => at.map((i) => x[i]! - x0[i]!));
        const dot = (p: number[], q: number[]) => p.reduce((s, v, i) => s + v * q[i]!, 0);
        let cos = 0;
        let pairs = 0;
        for (let i = 0; i < count; i++)
          for (let j = i + 1; j < count; j++, pairs++) cos += dot(offsets[i]!, offsets[j]!) / Math.max(Math.sqrt(dot(offsets[i]!, offsets[i]!) * dot(offsets[j]!, offsets[j]!)), 1e-6);
        cos /= pairs;
        const k = (count * cos) / (1 + (count - 1) * cos);
        for (const i of at) {
          const mean = xs.reduce((s, x) => s + x[i]!, 0) / count;
          steps = Math.max(steps, f32Steps(t.values[i]!, k * mean + (1 - k) * x0[i]!));
        }
      }
    }
    expect(steps).toBeLessThanOrEqual(1);
  });

  it('gradients interpolate over the layers of each slice; embeddings, final norm and head take t = 0', async () => {
    const source = await writeTinyCheckpoint(fresh(), { ...shape, layers: 5, dtype: 'BF16', seed: 6 });
    const scale = [0.5, 1.25, 2, 0.75];
    const ranges: [number, number][] = [[0, 5], [1, 4], [2, 3]];
    const { tensors } = await runMerge({ merge_method: 'passthrough', slices: ranges.map((layer_range) => ({ sources: [{ model: source.dir, layer_range }] })), parameters: { scale } });
    // each output layer: its source layer and its position t in its slice (1 in a slice of one layer)
    const layers = ranges.flatMap(([start, end]) => Array.from({ length: end - start }, (_, i) => ({ from: start + i, t: end - start === 1 ? 1 : i / (end - start - 1) })));
    expect(tensors.size).toBe(3 + 9 * layers.length);
    for (const [name, t] of tensors) {
      const m = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
      const layer = m ? layers[Number(m[1])]! : { from: -1, t: 0 };
      const x = source.tensors.get(m ? `model.layers.${layer.from}.${m[2]}` : name)!.values;
      const s = f32(gradient(scale, layer.t));
      x.forEach((v, i) => {
        const want = roundTo('BF16')(v * s);
        if (!Object.is(t.values[i], want)) expect(t.values[i], `${name}[${i}] (t = ${layer.t})`).toBe(want);
      });
    }
  });

  it('out_dtype float16 rounds the float32 results to float16; dtype float16 rounds inputs, weights and each step', async () => {
    const [a, b] = models['F32']!;
    const linear = (dtypes: Partial<MergeConfig>): MergeConfig => ({ merge_method: 'linear', models: [{ model: a!.dir, parameters: { weight: 0.6 } }, { model: b!.dir, parameters: { weight: 0.7 } }], ...dtypes });
    const r16 = roundTo('F16');
    const merged = (w: number[], r: (x: number) => number) => (x: number[]) => r(f32(r(f32(r(f32(w[0]! * x[0]!)) + r(f32(w[1]! * x[1]!)))) / r(f32(w[0]! + w[1]!))));
    const out = await runMerge(linear({ out_dtype: 'float16' }));
    const work = await runMerge(linear({ dtype: 'float16' }));
    for (const { result, tensors } of [out, work]) {
      for (const shard of result.shards) for (const [name, t] of readSafetensors(join(result.outDir, shard)).tensors) expect(t.dtype, name).toBe('F16');
      expect(JSON.parse(readFileSync(join(result.outDir, 'config.json'), 'utf8'))['torch_dtype']).toBe('float16');
      expect(tensors.size).toBe(a!.tensors.size);
    }
    const inFloat32 = merged([f32(0.6), f32(0.7)], f32);
    expectElementwise(out.tensors, [a!, b!], (x) => r16(inFloat32(x)));
    const inFloat16 = merged([r16(0.6), r16(0.7)], r16);
    expectElementwise(work.tensors, [a!, b!], (x) => inFloat16(x.map(r16)));
  });
});

const SEED_YAML = `slices:
- sources:
  - model: mistralai/Mistral-7B-Instruct-v0.3
    layer_range: [0, 24]
- sources:
  - model: mistralai/Mistral-7B-Instruct-v0.3
    layer_range: [8, 32]
merge_method: passthrough
dtype: bfloat16
`;

describe('the seed configuration', () => {
  let source: TinyCheckpoint;
  let yaml: string;
  beforeAll(async () => {
    const dir = fresh();
    source = await writeTinyCheckpoint(join(dir, 'mistralai/Mistral-7B-Instruct-v0.3'), { hidden: 8, intermediate: 8, layers: 32, heads: 2, kvHeads: 1, vocab: 16, dtype: 'BF16', seed: 4 });
    yaml = SEED_YAML;
    process.chdir(dir); // the YAML names the model relative to the working directory
  });

  it('stacks layers [0,24) and [8,32) into 48, bit for bit, with sharded output and index', async () => {
    const out = join(fresh(), 'Mistral-10.7B');
    const result = await merge(yaml, out, { outShardSize: 6000 });
    expect(result.shards.length).toBeGreaterThan(1);
    expect(result.shards[0]).toBe(`model-00001-of-${String(result.shards.length).padStart(5, '0')}.safetensors`);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(config['num_hidden_layers']).toBe(48);
    expect(config['torch_dtype']).toBe('bfloat16');
    expect(readFileSync(join(out, 'mergekit_config.yml'), 'utf8')).toBe(yaml);
    expect(readdirSync(out).sort()).toEqual([...result.shards, 'README.md', 'config.json', 'generation_config.json', 'mergekit_config.yml', 'model.safetensors.index.json'].sort());
    const tensors = readModelTensors(out, result.shards);
    const stored = readSafetensors(join(source.dir, 'model.safetensors')).tensors;
    expect(tensors.size).toBe(3 + 48 * 9);
    for (const [name, t] of tensors) {
      const m = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
      const from = m ? `model.layers.${Number(m[1]) < 24 ? Number(m[1]) : Number(m[1]) - 16}.${m[2]}` : name;
      expect(Buffer.compare(t.bytes, stored.get(from)!.bytes), name).toBe(0);
    }
    // the index lists every tensor in write order with its shard, and the shards hold them
    const index = readFileSync(join(out, 'model.safetensors.index.json'), 'utf8');
    const parsed = JSON.parse(index) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    expect(index).toBe(JSON.stringify(parsed, null, 2));
    expect(parsed.metadata.total_size).toBe(result.bytes);
    const names = Object.keys(parsed.weight_map);
    expect(names.slice(0, 3)).toEqual(['lm_head.weight', 'model.embed_tokens.weight', 'model.layers.0.input_layernorm.weight']);
    expect(names.at(-1)).toBe('model.norm.weight');
    for (const shard of result.shards) {
      const { header, headerLength } = readSafetensors(join(out, shard));
      expect((8 + headerLength) % 8).toBe(0);
      const inShard = Object.keys(header).filter((k) => k !== '__metadata__');
      expect(inShard).toEqual([...inShard].sort());
      expect(new Set(inShard)).toEqual(new Set(names.filter((n) => parsed.weight_map[n] === shard)));
    }
  });

  it('reproduces the shard table of the real 10.7B output from shapes alone', async () => {
    const plan = await planMerge(await loadMergeConfig(yaml));
    // the shapes of Mistral-7B-v0.3, by tensor role
    const real: Record<string, number[]> = {
      embed_tokens: [32768, 4096], lm_head: [32768, 4096], norm: [4096], input_layernorm: [4096], post_attention_layernorm: [4096],
      q_proj: [4096, 4096], k_proj: [1024, 4096], v_proj: [1024, 4096], o_proj: [4096, 4096], gate_proj: [14336, 4096], up_proj: [14336, 4096], down_proj: [4096, 14336],
    };
    const tensors = plan.tensors.map((t) => ({ ...t, shape: real[t.name.split('.').at(-2)!]!, outDtype: 'BF16' as const }));
    expect(tensors.length).toBe(435);
    const sizes = tensors.map((t) => t.shape.reduce((a, b) => a * b, 1) * 2);
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(21_475_631_104);
    const shards = shardTensors(writeOrder(tensors), sizes, 5e9);
    const table = shards.map((s) => ({
      tensors: s.length,
      data: s.reduce((a, i) => a + sizes[i]!, 0),
      header: shardHeader(s.map((i) => ({ name: tensors[i]!.name, dtype: tensors[i]!.outDtype, shape: tensors[i]!.shape }))).header.length - 8,
      first: tensors[s[0]!]!.name,
      last: tensors[s.at(-1)!]!.name,
    }));
    expect(table).toEqual([
      { tensors: 94, data: 4_899_127_296, header: 10_920, first: 'lm_head.weight', last: 'model.layers.30.input_layernorm.weight' },
      { tensors: 95, data: 4_949_442_560, header: 11_080, first: 'model.layers.14.mlp.down_proj.weight', last: 'model.layers.19.mlp.up_proj.weight' },
      { tensors: 106, data: 4_999_806_976, header: 12_336, first: 'model.layers.35.mlp.up_proj.weight', last: 'model.layers.41.post_attention_layernorm.weight' },
      { tensors: 106, data: 4_999_806_976, header: 12_288, first: 'model.layers.41.self_attn.k_proj.weight', last: 'model.layers.8.mlp.down_proj.weight' },
      { tensors: 34, data: 1_627_447_296, header: 3_928, first: 'model.layers.24.mlp.down_proj.weight', last: 'model.norm.weight' },
    ]);
  });

  it('loads virtually: the same logits as the merged files, with the memory of the source', async () => {
    const out = join(fresh(), 'merged');
    await merge(yaml, out);
    await using onDisk = await loadModel(out);
    await using virtual = await loadModel(yaml);
    expect(virtual.config.numHiddenLayers).toBe(48);
    const tokens = [1, 5, 9, 3, 7];
    const a = await onDisk.forward(tokens, { allLogits: true });
    const b = await virtual.forward(tokens, { allLogits: true });
    expect(Array.from(b)).toEqual(Array.from(a));
    // the virtual model maps only the 32-layer source
    expect(virtual.info.weightBytes).toBe(readFileSync(join(source.dir, 'model.safetensors')).length);
    expect(onDisk.info.weightBytes).toBeGreaterThan(virtual.info.weightBytes * 1.4);
  });
});

describe('bad configurations', () => {
  const a = () => models['BF16']![0]!.dir;
  const b = () => models['BF16']![1]!.dir;
  it.each<[string, () => MergeConfig | string, RegExp]>([
    ['an unknown method', () => ({ merge_method: 'magic', models: [{ model: a() }] }), /merge_method 'magic' is not supported/],
    ['an unknown parameter', () => ({ merge_method: 'linear', models: [{ model: a(), parameters: { wieght: 1 } }] }), /linear has no parameter 'wieght'/],
    ['a global parameter on a model', () => ({ merge_method: 'slerp', base_model: a(), models: [{ model: a() }, { model: b(), parameters: { t: 0.5 } }] }), /'t' is a global parameter of slerp/],
    ['a missing required parameter', () => ({ merge_method: 'linear', models: [{ model: a(), parameters: { weight: 1 } }, { model: b() }] }), /missing required parameter weight/],
    ['a layer_range outside the model', () => ({ merge_method: 'passthrough', slices: [{ sources: [{ model: a(), layer_range: [0, 3] }] }] }), /layer_range \[0, 3\] lies outside .* which has 2 layers/],
    ['slices of unequal length', () => ({ merge_method: 'linear', slices: [{ sources: [{ model: a(), layer_range: [0, 2] }, { model: b(), layer_range: [0, 1] }] }] }), /same number of layers/],
    ['two sources for passthrough', () => ({ merge_method: 'passthrough', slices: [{ sources: [{ model: a(), layer_range: [0, 2] }, { model: b(), layer_range: [0, 2] }] }] }), /exactly one source/],
    ['ties without a base', () => ({ merge_method: 'ties', models: [{ model: a(), parameters: { weight: 1 } }] }), /needs a base_model/],
    ['a model that is not there', () => ({ merge_method: 'passthrough', models: [{ model: '/nonexistent/model' }] }), /\/nonexistent\/model\/config\.json: cannot read/],
    ['a YAML syntax error', () => 'merge_method: linear\nmodels:\n  - model: [unclosed\n', /YAML error at line \d+/],
    ['both slices and models', () => ({ merge_method: 'linear', models: [{ model: a() }], slices: [] }) as MergeConfig, /exactly one of slices and models/],
    ['an unsupported dtype', () => ({ merge_method: 'passthrough', models: [{ model: a() }], dtype: 'int8' }), /dtype 'int8' is not supported/],
    // names of Object.prototype's members are names like any other
    ...['constructor', '__proto__', 'toString', 'hasOwnProperty'].map((name): [string, () => MergeConfig, RegExp] => [
      `merge_method ${name}`,
      () => ({ merge_method: name, models: [{ model: a() }] }),
      new RegExp(`merge_method '${name}' is not supported \\(passthrough, linear, slerp, task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, model_stock\\)`),
    ]),
    ['a parameter toString', () => ({ merge_method: 'linear', models: [{ model: a(), parameters: { weight: 1, toString: 1 } }] }), /linear has no parameter 'toString' \(it takes normalize, weight\)/],
    ['a parameter constructor', () => ({ merge_method: 'linear', models: [{ model: a(), parameters: { weight: 1 } }], parameters: { constructor: 1 } }), /linear has no parameter 'constructor'/],
    ['a parameter __proto__', () => `merge_method: linear\nmodels:\n- model: ${a()}\n  parameters:\n    weight: 1\n    __proto__: 1\n`, /linear has no parameter '__proto__'/],
    ['a dtype constructor', () => ({ merge_method: 'passthrough', models: [{ model: a() }], dtype: 'constructor' }), /dtype 'constructor' is not supported/],
  ])('%s', async (_name, config, pattern) => {
    const out = join(fresh(), 'out');
    await expect(merge(config(), out)).rejects.toThrow(pattern);
    expect(existsSync(out)).toBe(false);
  });

  it('models whose shapes do not fit together', async () => {
    const other = await writeTinyCheckpoint(fresh(), { ...shape, hidden: 40, dtype: 'BF16', seed: 9 });
    await expect(merge({ merge_method: 'linear', models: [{ model: a(), parameters: { weight: 1 } }, { model: other.dir, parameters: { weight: 1 } }] }, join(fresh(), 'o'))).rejects.toThrow(/hiddenSize 40 does not fit/);
  });

  it('a missing tensor names it and the model', async () => {
    const dir = fresh();
    const broken = await writeTinyCheckpoint(dir, { ...shape, dtype: 'BF16', seed: 5 });
    const { writeSafetensors } = await import('./helpers/checkpoint.js');
    const kept = [...broken.tensors].filter(([n]) => n !== 'model.layers.1.mlp.up_proj.weight');
    writeSafetensors(join(dir, 'model.safetensors'), kept.map(([name, t]) => ({ name, dtype: 'BF16', shape: t.shape, data: encode(t.values, 'BF16') })));
    await expect(merge({ merge_method: 'passthrough', models: [{ model: dir }] }, join(fresh(), 'o'))).rejects.toThrow(/tensor model\.layers\.1\.mlp\.up_proj\.weight is required but not present/);
  });

  it('an abort leaves no output and no partial files', async () => {
    const parent = fresh();
    const controller = new AbortController();
    const pending = merge({ merge_method: 'linear', models: [{ model: a(), parameters: { weight: 1 } }, { model: b(), parameters: { weight: 1 } }] }, join(parent, 'out'), {
      signal: controller.signal,
      onProgress: () => controller.abort(),
      outShardSize: 1000,
    });
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(readdirSync(parent)).toEqual([]);
  });

  it('refuses to overwrite a non-empty directory unless asked', async () => {
    const out = join(fresh(), 'out');
    await merge({ merge_method: 'passthrough', models: [{ model: a() }] }, out);
    await expect(merge({ merge_method: 'passthrough', models: [{ model: a() }] }, out)).rejects.toThrow(/already exists/);
    await merge({ merge_method: 'passthrough', models: [{ model: b() }] }, out, { overwrite: true });
    expect(readdirSync(out)).toContain('model.safetensors');
  });
});

describe('memory of a virtual merge', () => {
  it('hands the engine each distinct source tensor once, while the merged files hold every layer', async () => {
    const dir = fresh();
    const src = await writeTinyCheckpoint(join(dir, 'src'), { hidden: 64, intermediate: 128, layers: 32, heads: 4, kvHeads: 2, vocab: 128, dtype: 'BF16', seed: 12 });
    const yaml = `slices:\n- sources:\n  - model: ${src.dir}\n    layer_range: [0, 24]\n- sources:\n  - model: ${src.dir}\n    layer_range: [8, 32]\nmerge_method: passthrough\n`;
    const merged = join(dir, 'merged');
    await merge(yaml, merged);
    // the engine's spec, as loadModel builds it: its tensors are what it maps and reads
    const engineSpec = async (source: string) => {
      const { config, checkpoint, plan } = await readSource(source);
      return resolvePlan(config, checkpoint, plan, { isa: 'auto', threads: 1, contextSize: 64, kvCacheTokens: 64, kvPageSize: 16 });
    };
    const bytes = (spec: NativeModelSpec) => spec.tensors.reduce((sum, t) => sum + t.bytes, 0);
    const sourceBytes = [...src.tensors.values()].reduce((sum, t) => sum + t.values.length * 2, 0);
    const virtual = await engineSpec(yaml);
    expect(virtual.layers.length).toBe(48);
    expect(virtual.tensors.length).toBe(3 + 32 * 9);
    expect(new Set(virtual.tensors.map((t) => `${t.file}:${t.offset}`)).size).toBe(virtual.tensors.length);
    expect(bytes(virtual)).toBe(sourceBytes);
    // output layers 24..39 are source layers 8..23, as output layers 8..23 are: the same tensors
    for (let j = 24; j < 40; j++) expect(virtual.layers[j], `layer ${j}`).toEqual(virtual.layers[j - 16]);
    const onDisk = await engineSpec(merged);
    expect(onDisk.tensors.length).toBe(3 + 48 * 9);
    const layerBytes = [...src.tensors].filter(([name]) => name.startsWith('model.layers.0.')).reduce((sum, [, t]) => sum + t.values.length * 2, 0);
    expect(bytes(onDisk)).toBe(sourceBytes + 16 * layerBytes);
    // and the loaded model maps the source's file alone
    await using model = await loadModel(yaml, { threads: 1 });
    expect(model.info.weightBytes).toBe(readFileSync(join(src.dir, 'model.safetensors')).length);
  });
});

describe('side files and entry points', () => {
  it('copies the tokenizer of tokenizer_source and applies a literal chat_template', async () => {
    const demo = join(import.meta.dirname, '../models/tiny-mistral-bf16');
    const template = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
    const out = join(fresh(), 'out');
    await merge({ merge_method: 'passthrough', models: [{ model: demo }], tokenizer_source: demo, chat_template: template }, out);
    const config = JSON.parse(readFileSync(join(out, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    expect(config['chat_template']).toBe(template);
    expect(readFileSync(join(out, 'tokenizer.json'))).toEqual(readFileSync(join(demo, 'tokenizer.json')));
    await using model = await loadModel(out);
    expect((await model.generate('The function', { maxTokens: 8, stopAtEos: false })).tokens.length).toBe(8);
  });

  it('only passthrough merges load without writing', async () => {
    const [a, b] = models['BF16']!;
    await expect(loadModel({ merge_method: 'linear', models: [{ model: a!.dir, parameters: { weight: 1 } }, { model: b!.dir, parameters: { weight: 1 } }] })).rejects.toThrow(/only passthrough merges load without writing/);
    await expect(loadModel({ merge_method: 'passthrough', models: [{ model: a!.dir, parameters: { scale: 0.5 } }] })).rejects.toThrow(/scale changes the weights/);
  });
});

describe('the native merge job checks what it is given', () => {
  it('rejects shapes, offsets, dtypes and indices that do not fit', async () => {
    const { native } = await import('../lib/native.js');
    const file = join(models['BF16']![0]!.dir, 'model.safetensors');
    const out = join(fresh(), 'x.safetensors');
    const tensor = (over: Record<string, unknown> = {}, input: Record<string, unknown> = {}) => ({
      files: [file],
      tensors: [{ name: 't', method: 0, outDtype: 'BF16', shape: [4], inputs: [{ file: 0, offset: 8, dtype: 'BF16', shape: [4], ...input }], ...over }],
      shards: [{ path: out, header: new Uint8Array(8), tensors: [0] }],
      seed: 0,
    });
    const run = (spec: object) => native().runMerge(spec, undefined, undefined);
    await expect(run(tensor({}, { offset: 2 ** 40 }))).rejects.toThrow(/past the end of the file/);
    await expect(run(tensor({ shape: [2 ** 40, 2 ** 40] }, { shape: [2 ** 40, 2 ** 40] }))).rejects.toThrow(/too large/);
    await expect(run(tensor({ workDtype: 'I32' }))).rejects.toThrow(/dtypes must be F32, F16 or BF16/);
    await expect(run(tensor({ method: 2 }))).rejects.toThrow(/needs a base model/);
    expect(() => run(tensor({}, { file: 3 }))).toThrow(/file must be an integer/);
    expect(() => run({ ...tensor(), shards: [{ path: out, header: new Uint8Array(8), tensors: [5] }] })).toThrow(/tensors must be an integer/);
    await expect(run(tensor())).resolves.toBeUndefined();
  });
});
