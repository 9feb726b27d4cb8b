// Merging against references written here from the arithmetic mergekit performs (float32
// operations, each result rounded to the storage dtype), the seed configuration's layer
// mapping and file layout, virtual merges, and bad configurations.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, merge, type MergeConfig } from '../lib/index.js';
import { loadMergeConfig } from '../lib/merge/config.js';
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
    for (const seed of [1, 2, 3]) models[dtype]!.push(await writeTinyCheckpoint(fresh(), { ...shape, dtype, seed }));
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

  it.each(['BF16', 'F32'] as const)('linear (%s), normalized', async (dtype) => {
    const [a, b] = models[dtype]!;
    const r = roundTo(dtype);
    const { tensors } = await runMerge({ merge_method: 'linear', models: [{ model: a!.dir, parameters: { weight: 0.6 } }, { model: b!.dir, parameters: { weight: 0.4 } }] });
    const w = [r(0.6), r(0.4)];
    const div = r(f32(w[0]! + w[1]!));
    expectElementwise(tensors, [a!, b!], (x) => r(f32(r(f32(w[0]! * x[0]!)) + r(f32(w[1]! * x[1]!))) / div));
  });

  it('task_arithmetic and ties (density 1) follow the task-vector arithmetic', async () => {
    const [base, a, b] = models['BF16']!;
    const r = roundTo('BF16');
    const w = [r(0.7), r(-0.4)];
    const deltas = (x: number[]) => [r(f32(x[1]! - x[0]!)), r(f32(x[2]! - x[0]!))].map((d, m) => r(f32(w[m]! * d)));
    const config = (method: string): MergeConfig => ({
      merge_method: method,
      base_model: base!.dir,
      models: [{ model: base!.dir }, { model: a!.dir, parameters: { weight: 0.7 } }, { model: b!.dir, parameters: { weight: -0.4 } }],
      parameters: { lambda: 0.9 },
    });
    const lambda = f32(0.9);
    const ta = await runMerge(config('task_arithmetic'));
    expectElementwise(ta.tensors, [base!, a!, b!], (x) => {
      const mix = r(deltas(x).reduce((s, d) => f32(s + d), 0));
      return r(f32(x[0]! + r(f32(mix * lambda))));
    });
    const ties = await runMerge(config('ties'));
    expectElementwise(ties.tensors, [base!, a!, b!], (x) => {
      const d = deltas(x);
      const sign = r(d.reduce((s, v) => f32(s + v), 0)) >= 0 ? 1 : -1;
      const agree = d.map((v) => Math.sign(v) === sign);
      let mix = r(d.reduce((s, v, m) => f32(s + (agree[m] ? v : 0)), 0));
      let div = r(w.reduce((s, v, m) => f32(s + (agree[m] ? v : 0)), 0));
      if (div === 0) div = 1;
      mix = r(f32(mix / div));
      return r(f32(x[0]! + r(f32(mix * lambda))));
    });
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
        const d = Array.from(m.tensors.get(name)!.values, (v, i) => f32(v - x0[i]!));
        const k = Math.trunc(0.3 * d.length);
        const keep = new Set(d.map((_, i) => i).sort((i, j) => Math.abs(d[j]!) - Math.abs(d[i]!) || i - j).slice(0, k));
        return d.map((v, i) => (keep.has(i) ? v : 0));
      });
      const w = [1, 0.5];
      for (let i = 0; i < t.values.length; i++) {
        const d = trimmed.map((td, m) => f32(w[m]! * td[i]!));
        const sign = f32(d[0]! + d[1]!) >= 0 ? 1 : -1;
        const agree = d.map((v) => Math.sign(v) === sign);
        const mix = f32((agree[0] ? d[0]! : 0) + (agree[1] ? d[1]! : 0));
        let div = f32((agree[0] ? w[0]! : 0) + (agree[1] ? w[1]! : 0));
        if (div === 0) div = 1;
        expect(t.values[i], `${name}[${i}]`).toBe(f32(x0[i]! + f32(mix / div)));
      }
    }
  });

  it('breadcrumbs drops the smallest and the gamma largest magnitudes', async () => {
    const [base, a] = models['F32']!;
    const { tensors } = await runMerge({ merge_method: 'breadcrumbs', base_model: base!.dir, models: [{ model: a!.dir, parameters: { weight: 1, density: 0.5, gamma: 0.1 } }] });
    for (const [name, t] of tensors) {
      const x0 = base!.tensors.get(name)!.values;
      const d = Array.from(a!.tensors.get(name)!.values, (v, i) => f32(v - x0[i]!));
      const n = d.length;
      let top = Math.trunc(0.1 * n);
      let bottom = n - Math.trunc(0.5 * n) - top;
      if (bottom < 0) (top += bottom), (bottom = 0);
      const ascending = d.map((_, i) => i).sort((i, j) => Math.abs(d[i]!) - Math.abs(d[j]!) || j - i);
      const keep = new Set(top === 0 ? [] : ascending.slice(bottom, n - top));
      for (let i = 0; i < n; i++) expect(t.values[i]).toBe(f32(x0[i]! + (keep.has(i) ? d[i]! : 0)));
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

  it('model_stock interpolates between the mean of the models and the base by their angle', async () => {
    const [base, a, b] = models['F32']!;
    const { tensors } = await runMerge({ merge_method: 'model_stock', base_model: base!.dir, models: [{ model: base!.dir }, { model: a!.dir }, { model: b!.dir }] });
    for (const [name, t] of tensors) {
      const x0 = base!.tensors.get(name)!.values;
      const d = [a!, b!].map((m) => Array.from(m.tensors.get(name)!.values, (v, i) => v - x0[i]!));
      const dot = (p: number[], q: number[]) => p.reduce((s, v, i) => s + v * q[i]!, 0);
      const cos = dot(d[0]!, d[1]!) / Math.max(Math.sqrt(dot(d[0]!, d[0]!)) * Math.sqrt(dot(d[1]!, d[1]!)), 1e-6);
      const k = 2 * cos / (1 + cos);
      t.values.forEach((v, i) => {
        const mean = (a!.tensors.get(name)!.values[i]! + b!.tensors.get(name)!.values[i]!) / 2;
        expect(v).toBeCloseTo(k * mean + (1 - k) * x0[i]!, 5);
      });
    }
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
  it('stays near the distinct weights, while the merged files need all layers', async () => {
    const dir = fresh();
    const src = await writeTinyCheckpoint(join(dir, 'src'), { hidden: 256, intermediate: 512, layers: 32, heads: 4, kvHeads: 2, vocab: 512, dtype: 'BF16', seed: 12 });
    const yaml = `slices:\n- sources:\n  - model: ${src.dir}\n    layer_range: [0, 24]\n- sources:\n  - model: ${src.dir}\n    layer_range: [8, 32]\nmerge_method: passthrough\n`;
    const merged = join(dir, 'merged');
    await merge(yaml, merged);
    const sourceBytes = readFileSync(join(src.dir, 'model.safetensors')).length;
    // resident memory a load adds, measured in a fresh process
    const rssOf = (what: string) => {
      const script = `import('${join(import.meta.dirname, '../dist/index.js')}').then(async ({ loadModel }) => {
        const before = process.memoryUsage().rss;
        const m = await loadModel(process.argv[1], { threads: 1 });
        await m.forward([1, 2, 3]);
        console.log(process.memoryUsage().rss - before);
      })`;
      return Number(execFileSync(process.execPath, ['-e', script, what], { encoding: 'utf8' }).trim());
    };
    const virtual = rssOf(yaml);
    const onDisk = rssOf(merged);
    // (the merged files hold 1.5x the distinct weights; process noise is a few MB)
    expect(virtual).toBeLessThan(sourceBytes * 1.25);
    expect(onDisk).toBeGreaterThan(sourceBytes * 1.35);
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
