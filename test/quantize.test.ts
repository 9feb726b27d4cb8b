// quantize() and measure() end to end on the bundled model: the output directory as
// ExLlamaV2 lays it out, loaded and exported exactly; every recipe the optimizer can pick;
// measurement reuse; resume after a kill and after an abort; the budget; calibration files;
// bad input that leaves nothing behind.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  ATTENTION_CANDIDATES,
  HEAD_RECIPES,
  MLP_CANDIDATES,
  calibrationRows,
  chooseStrategy,
  demoModelDir,
  exportModel,
  loadModel,
  measure,
  measurementJson,
  quantize,
  readCalibration,
  type Measurement,
  type QuantizeProgress,
  type Recipe,
} from '../lib/index.js';
import { fromFloat16Bits } from '../lib/formats/float16.js';
import { readConfig } from '../lib/model/config.js';
import { native } from '../lib/native.js';
import { decode, tmpDir } from './helpers/checkpoint.js';
import { referenceDequantize } from './helpers/exl2-reference.js';
import { projectRoot } from './helpers/fixtures.js';
import { readModelTensors } from './helpers/safetensors-read.js';

const dirs: string[] = [];
const fresh = () => {
  const d = tmpDir('laminate-quant-');
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const small = { rows: 3, length: 48, measurementRows: 2, threads: 2 };
const BLOCK_LINEARS = { attention: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], mlp: ['gate_proj', 'up_proj', 'down_proj'] };

/** A measurement with the given candidate rows per layer (one option per block), accuracies made up. */
function craftedMeasurement(layers: number, attention: (l: number) => number, mlp: (l: number) => number): Measurement {
  const modules: Measurement['modules'] = {};
  const option = (recipes: Recipe[]) => ({ accuracy: 0.99, totalBits: 0, recipes });
  for (let l = 0; l < layers; l++) {
    modules[`model.layers.${l}.self_attn`] = [option(ATTENTION_CANDIDATES[attention(l)]!)];
    modules[`model.layers.${l}.mlp`] = [option(MLP_CANDIDATES[mlp(l)]!)];
  }
  return { modules };
}

/** The first index where two float arrays differ (-1: the same), NaN equal to NaN. */
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

function filesOf(dir: string): Map<string, Buffer> {
  return new Map(readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f))]));
}

/** Every stored EXL2 layer of a quantized directory, decoded by the spec's reference decoder. */
function decodedLayers(dir: string): Map<string, Float64Array> {
  const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  const t = readModelTensors(dir, files);
  const out = new Map<string, Float64Array>();
  for (const [name] of t) {
    if (!name.endsWith('.q_weight')) continue;
    const key = name.slice(0, -'.q_weight'.length);
    const get = (s: string) => t.get(`${key}.${s}`)!;
    const words = (s: string) => new Uint32Array(get(s).bytes.buffer, get(s).bytes.byteOffset, get(s).bytes.byteLength / 4);
    const groups = new Int16Array(get('q_groups').bytes.buffer, get('q_groups').bytes.byteOffset, get('q_groups').bytes.byteLength / 2);
    const maxima = new Uint16Array(get('q_scale_max').bytes.buffer, get('q_scale_max').bytes.byteOffset, get('q_scale_max').bytes.byteLength / 2);
    const K = get('q_invperm').shape[0]!;
    out.set(key, referenceDequantize({ qWeight: words('q_weight'), qInvperm: new Int32Array(words('q_invperm').buffer, words('q_invperm').byteOffset, K), qScale: words('q_scale'), qScaleMax: Float64Array.from(maxima, fromFloat16Bits), qGroups: groups, K, N: get('q_weight').shape[1]! }));
  }
  return out;
}

describe('a quantized model', () => {
  let out: string;
  let result: Awaited<ReturnType<typeof quantize>>;
  const progress: QuantizeProgress[] = [];
  beforeAll(async () => {
    out = join(fresh(), 'tiny-exl2');
    // a made-up measurement: the run below tests the quantization pass and the files
    const m = craftedMeasurement(8, (l) => [6, 10, 4, 14][l % 4]!, (l) => [7, 9, 5, 13][l % 4]!);
    result = await quantize(demoModelDir, out, { bitsPerWeight: 8, headBits: 6, measurement: m, ...small, onProgress: (p) => progress.push(p) });
  });

  it('is laid out as ExLlamaV2 writes it', () => {
    const names = readdirSync(out);
    expect(names).toContain('output.safetensors');
    expect(names).toContain('tokenizer.json');
    expect(names).toContain('measurement.json');
    expect(names.some((n) => n.endsWith('.index.json') || n.startsWith('model'))).toBe(false);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.quantization_config).toMatchObject({ quant_method: 'exl2', bits: 8, head_bits: 6, calibration: { rows: 3, length: 48, dataset: '(default)' } });
    expect(readFileSync(join(out, 'config.json'), 'utf8')).toMatch(/^\{\n {4}"/);
    const t = readModelTensors(out, ['output.safetensors']);
    const dtypes: Record<string, string> = { q_weight: 'I32', q_invperm: 'I32', q_scale: 'I32', q_scale_max: 'F16', q_groups: 'I16', weight: 'F16' };
    for (const [name, tensor] of t) expect(tensor.dtype, name).toBe(dtypes[name.split('.').at(-1)!]);
    expect(t.has('lm_head.q_weight')).toBe(true);
    expect(t.has('model.layers.7.mlp.down_proj.q_groups')).toBe(true);
    expect(t.has('model.embed_tokens.weight')).toBe(true);
    expect([...t.keys()].filter((n) => n.endsWith('.q_weight')).length).toBe(8 * 7 + 1);
  });

  it('uses the recipes it was given and reports the bits it reached', () => {
    expect(result.blocks[2]!.recipes).toEqual(ATTENTION_CANDIDATES[10]!.map((r) => r.map((p) => `${p.fraction}:${p.bits}/${p.groupSize}`).join(' + ')));
    const stored = decodedLayers(out);
    // bits as counted by §6.5 from the recipes, against the stored group tables
    const groups = readModelTensors(out, ['output.safetensors']).get('model.layers.0.self_attn.v_proj.q_groups')!;
    const pairs = new Int16Array(groups.bytes.buffer, groups.bytes.byteOffset, groups.bytes.byteLength / 2);
    expect(pairs[0]).toBe(ATTENTION_CANDIDATES[6]![2]![0]!.bits);
    expect(stored.size).toBe(57);
    const numel = 8 * (256 * 256 * 2 + 64 * 256 * 2 + 768 * 256 * 3);
    expect(result.bitsPerWeight).toBeCloseTo(result.blocks.reduce((a, b) => a + b.bits, 0) / numel, 12);
  });

  it('loads, and exports exactly the weights its files hold', async () => {
    await using model = await loadModel(out, { device: 'cpu' });
    expect(model.config.quantization?.method).toBe('exl2');
    const exported = join(fresh(), 'f16');
    await exportModel(out, exported, { dtype: 'float16' });
    const e = readModelTensors(exported, readdirSync(exported).filter((f) => f.endsWith('.safetensors')));
    for (const [key, w] of decodedLayers(out)) {
      const t = e.get(`${key}.weight`)!;
      const got = new Uint16Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 2);
      expect(firstDifference(Array.from(got, fromFloat16Bits), w), key).toBe(-1);
    }
  });

  it('takes its Hessians from the engine: layer 0 quantized as GPTQ does from the normed embeddings of its rows', async () => {
    await using model = await loadModel(demoModelDir, { device: 'cpu' });
    const { rows, length } = result.calibration;
    const { tokens } = await calibrationRows(model.tokenizer!, await readCalibration(), rows, length);
    const src = readModelTensors(demoModelDir, ['model.safetensors']);
    const get = (name: string) => decode(src.get(name)!.bytes, 'BF16');
    const embed = get('model.embed_tokens.weight'), norm = get('model.layers.0.input_layernorm.weight'), wq = get('model.layers.0.self_attn.q_proj.weight');
    const H = 256, h = new Float64Array(H * H), x = new Float64Array(H);
    for (const t of tokens) {
      let ms = 0;
      for (let i = 0; i < H; i++) ms += embed[t * H + i]! ** 2 / H;
      for (let i = 0; i < H; i++) x[i] = (embed[t * H + i]! / Math.sqrt(ms + 1e-5)) * norm[i]!;
      for (let i = 0; i < H; i++) for (let j = 0; j < H; j++) h[i * H + j] = h[i * H + j]! + x[i]! * x[j]!;
    }
    const g = native().gptqQuantize(Float32Array.from(wq), H, H, h, Int32Array.from([4, 128, 4, 128]), true, 2);
    const stored = decodedLayers(out).get('model.layers.0.self_attn.q_proj')!;
    let same = 0;
    g.weight.forEach((b, i) => (same += fromFloat16Bits(b) === stored[i] ? 1 : 0));
    expect(same / stored.length).toBeGreaterThan(0.99);
  });

  it('stays close to the float model', async () => {
    await using q = await loadModel(out, { device: 'cpu' });
    await using f = await loadModel(demoModelDir, { device: 'cpu' });
    const ids = q.tokenize('The function returns a list of the values in the dictionary.');
    const a = await q.forward(ids), b = await f.forward(ids);
    let dot = 0, na = 0, nb = 0;
    for (let i = 0; i < a.length; i++) (dot += a[i]! * b[i]!), (na += a[i]! ** 2), (nb += b[i]! ** 2);
    expect(dot / Math.sqrt(na * nb)).toBeGreaterThan(0.99);
    for (const b of result.blocks) expect(b.error).toBeLessThan(0.1);
  });

  it('reports progress by stage with an estimate of the time left', () => {
    const quant = progress.filter((p) => p.stage === 'quantize');
    expect(quant.at(-1)).toMatchObject({ done: 9, total: 9 });
    expect(quant.some((p) => p.eta !== undefined && p.eta >= 0)).toBe(true);
    expect(progress.some((p) => p.stage === 'write')).toBe(true);
    expect(progress.some((p) => p.stage === 'measure')).toBe(false);
  });
});

describe('every setting the optimizer can pick', () => {
  // three runs cover the 21 attention and 19 MLP candidates; the six head widths alongside
  for (const [run, heads] of [[0, [2, 3]], [1, [4, 5]], [2, [6, 8]]] as const) {
    it(`round-trips through load and exact export (candidates ${run * 8} to ${run * 8 + 7}, heads ${heads.join(' and ')})`, async () => {
      // the last run pairs the 8-bit candidates with low ones, to stay within 8 bits per weight
      const m = craftedMeasurement(8, (l) => (run * 8 + l <= 20 ? run * 8 + l : l), (l) => (run * 8 + l <= 18 ? run * 8 + l : l));
      for (const headBits of heads) {
        const out = join(fresh(), `run${run}-h${headBits}`);
        await quantize(demoModelDir, out, { bitsPerWeight: 8, headBits, measurement: m, rows: 2, length: 32, measurementRows: 2, threads: 2 });
        const head = readModelTensors(out, ['output.safetensors']).get('lm_head.q_groups')!;
        expect(new Int16Array(head.bytes.buffer, head.bytes.byteOffset, 2)[0]).toBe(HEAD_RECIPES[headBits]![0]!.bits);
        await using model = await loadModel(out, { device: 'cpu' });
        const logits = await model.forward([1, 300, 400]);
        expect(logits.every(Number.isFinite)).toBe(true);
        const exported = join(fresh(), 'f16');
        await exportModel(out, exported, { dtype: 'float16' });
        const e = readModelTensors(exported, readdirSync(exported).filter((f) => f.endsWith('.safetensors')));
        for (const [key, w] of decodedLayers(out)) {
          const t = e.get(`${key}.weight`)!;
          expect(firstDifference(Array.from(new Uint16Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 2), fromFloat16Bits), w), key).toBe(-1);
        }
      }
    });
  }
});

describe('the budget', () => {
  it('lands within 0.02 of the target and never above it, for every target from 2.5 to 6', async () => {
    const config = await readConfig(demoModelDir);
    // every candidate as an option, with errors that fall as bits grow
    const { blockBits, parseMeasurement } = await import('../lib/quantize/measurement.js');
    const modules: Measurement['modules'] = {};
    for (let l = 0; l < 8; l++) {
      const option = (block: 'attention' | 'mlp', r: Recipe[]) => ({ accuracy: 1 - 2 ** -(blockBits(config, block, r) / 2 ** 18) * (1 + l / 8), totalBits: 0, recipes: r });
      modules[`model.layers.${l}.self_attn`] = ATTENTION_CANDIDATES.map((r) => option('attention', r));
      modules[`model.layers.${l}.mlp`] = MLP_CANDIDATES.map((r) => option('mlp', r));
    }
    const m = parseMeasurement(measurementJson({ modules }, 8), config, 'test');
    const numel = 8 * (256 * 256 * 2 + 64 * 256 * 2 + 768 * 256 * 3);
    for (const target of [2.5, 3.0, 3.5, 4.0, 4.25, 5.0, 5.5, 6.0]) {
      const bits = chooseStrategy(m, config, target).reduce((a, o) => a + o.totalBits, 0);
      expect(bits, `${target}`).toBeLessThanOrEqual(Math.floor(target * numel));
      expect(bits / numel, `${target}`).toBeGreaterThan(target - 0.02);
    }
    expect(() => chooseStrategy(m, config, 2.0)).toThrow(/below what the measured options allow/);
  });
});

describe('measurement', () => {
  const yaml = `slices:\n- sources: [{ model: ${demoModelDir}, layer_range: [0, 2] }]\nmerge_method: passthrough\ndtype: bfloat16\n`;

  it('reused, gives the same files as one full run (a merge configuration, quantized from the mapped weights)', async () => {
    const root = fresh();
    const full = await quantize(yaml, join(root, 'full'), { bitsPerWeight: 4.0, ...small });
    expect(full.measureSeconds).toBeGreaterThan(0);
    const m = await measure(yaml, join(root, 'm.json'), { length: small.length, measurementRows: small.measurementRows, threads: 2 });
    expect(Object.keys(m.modules)).toEqual(['model.layers.0.self_attn', 'model.layers.0.mlp', 'model.layers.1.self_attn', 'model.layers.1.mlp']);
    expect(m.modules['model.layers.0.self_attn']!.length).toBe(21);
    // accuracy grows with bits: the 8-bit option beats the 2-bit one
    const attn = m.modules['model.layers.1.mlp']!;
    expect(attn.at(-1)!.accuracy).toBeGreaterThan(attn[0]!.accuracy);
    const reused = await quantize(yaml, join(root, 'reused'), { bitsPerWeight: 4.0, ...small, measurement: join(root, 'm.json') });
    expect(reused.measureSeconds).toBe(0);
    expect(reused.calibration.measurementRows).toBe(small.measurementRows);
    const a = filesOf(join(root, 'full')), b = filesOf(join(root, 'reused'));
    expect([...a.keys()]).toEqual([...b.keys()]);
    for (const [name, bytes] of a) expect(bytes.equals(b.get(name)!), name).toBe(true);
    expect(JSON.parse(a.get('config.json')!.toString()).num_hidden_layers).toBe(2);
    // ExLlamaV2's layout of the file
    const json = JSON.parse(readFileSync(join(root, 'm.json'), 'utf8'));
    expect(json.measurement['model.layers.0.mlp'][0]).toMatchObject({ accuracy: expect.any(Number), total_bits: expect.any(Number), down_proj: { bits: [6, 3, 2], bits_prop: [0.05, 0.2, 0.75], group_size: { 6: 32, 3: 64, 2: 64 }, scale_bits: 4 } });
    // a measurement of another model is refused
    await expect(quantize(demoModelDir, join(root, 'other'), { bitsPerWeight: 4, ...small, measurement: join(root, 'm.json') })).rejects.toThrow(/model\.layers\.2\.self_attn is not measured/);
    expect(existsSync(join(root, 'other'))).toBe(false);
  });
});

describe('a stopped job', () => {
  const m = craftedMeasurement(8, (l) => [6, 11][l % 2]!, (l) => [8, 10][l % 2]!);
  let root: string, reference: Map<string, Buffer>;
  beforeAll(async () => {
    root = fresh();
    writeFileSync(join(root, 'm.json'), measurementJson(m, 8));
    await quantize(demoModelDir, join(root, 'whole'), { bitsPerWeight: 8, measurement: join(root, 'm.json'), ...small });
    reference = filesOf(join(root, 'whole'));
  });

  it('killed part way, resumes from its last finished layer and writes the same files', async () => {
    const out = join(root, 'killed');
    // the child kills itself once three layers are done, as a crash or kill -9 would
    const script = `import('${join(projectRoot, 'dist/index.js')}').then(({ quantize }) => quantize(${JSON.stringify(demoModelDir)}, ${JSON.stringify(out)}, {
      bitsPerWeight: 8, measurement: ${JSON.stringify(join(root, 'm.json'))}, ...${JSON.stringify(small)},
      onProgress: (p) => { if (p.stage === 'quantize' && p.done >= 3 && Number.isInteger(p.done)) process.kill(process.pid, 'SIGKILL'); },
    }))`;
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 120_000 });
    expect(child.signal).toBe('SIGKILL');
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(dirname(out), `.${basename(out)}.quantize`, 'layers', '2.safetensors'))).toBe(true);
    const r = await quantize(demoModelDir, out, { bitsPerWeight: 8, measurement: join(root, 'm.json'), ...small });
    expect(r.resumedAt).toBe(3);
    const got = filesOf(out);
    expect([...got.keys()]).toEqual([...reference.keys()]);
    for (const [name, bytes] of reference) expect(got.get(name)!.equals(bytes), name).toBe(true);
    expect(existsSync(join(dirname(out), `.${basename(out)}.quantize`))).toBe(false);
  });

  it('aborted by its signal, leaves no output and resumes', async () => {
    const out = join(root, 'aborted');
    const ac = new AbortController();
    await expect(quantize(demoModelDir, out, {
      bitsPerWeight: 8, measurement: join(root, 'm.json'), ...small, signal: ac.signal,
      onProgress: (p) => { if (p.stage === 'quantize' && p.done >= 5) ac.abort(); },
    })).rejects.toMatchObject({ name: 'AbortError' });
    expect(existsSync(out)).toBe(false);
    const r = await quantize(demoModelDir, out, { bitsPerWeight: 8, measurement: join(root, 'm.json'), ...small });
    expect(r.resumedAt).toBeGreaterThanOrEqual(5);
    for (const [name, bytes] of reference) expect(readFileSync(join(out, name)).equals(bytes), name).toBe(true);
  });

  it('run with other arguments starts afresh', async () => {
    const out = join(root, 'changed');
    const ac = new AbortController();
    await expect(quantize(demoModelDir, out, { bitsPerWeight: 8, measurement: join(root, 'm.json'), ...small, signal: ac.signal, onProgress: (p) => { if (p.stage === 'quantize' && p.done >= 2) ac.abort(); } })).rejects.toThrow();
    const r = await quantize(demoModelDir, out, { bitsPerWeight: 8, measurement: join(root, 'm.json'), ...small, rows: 2 });
    expect(r.resumedAt).toBe(0);
  });
});

describe('calibration data', () => {
  it('reads JSON lines, plain text and Parquet', async () => {
    const root = fresh();
    const docs = ['The first document.', 'A second one, with "quotes".', 'Третий документ.'];
    writeFileSync(join(root, 'a.jsonl'), docs.map((text) => JSON.stringify({ text, id: 1 })).join('\n') + '\n');
    writeFileSync(join(root, 'a.txt'), docs.join('\n\n'));
    const { parquetWriteBuffer } = await import('hyparquet-writer');
    writeFileSync(join(root, 'a.parquet'), Buffer.from(parquetWriteBuffer({ columnData: [{ name: 'text', data: docs, type: 'STRING' }] })));
    for (const f of ['a.jsonl', 'a.txt', 'a.parquet']) expect((await readCalibration(join(root, f))).texts, f).toEqual(docs);
    expect((await readCalibration(join(root, 'a.parquet'))).dataset).toBe('a.parquet');
    const def = await readCalibration();
    expect(def.dataset).toBe('(default)');
    expect(def.texts.length).toBeGreaterThan(100);
  });

  it('cuts documents into rows with BOS and EOS, and fewer rows when the text runs short', async () => {
    await using model = await loadModel(demoModelDir, { device: 'cpu' });
    const tok = model.tokenizer!;
    const r = await calibrationRows(tok, { texts: ['one two three', 'four five'], dataset: 'x' }, 10, 4);
    const stream = [...tok.encode('one two three', { specialTokens: 'plain' }), 2, ...tok.encode('four five', { specialTokens: 'plain' }), 2];
    expect(r.rows).toBe(Math.floor(stream.length / 4));
    expect(Array.from(r.tokens)).toEqual(stream.slice(0, r.rows * 4));
    expect(r.tokens[0]).toBe(1);
    await expect(calibrationRows(tok, { texts: ['hi'], dataset: 'x' }, 2, 64)).rejects.toThrow(/fewer than one row of 64/);
  });
});

describe('bad input', () => {
  const root = tmpDir('laminate-quant-bad-');
  dirs.push(root);
  const out = join(root, 'out');
  const file = (name: string, text: string) => {
    mkdirSync(root, { recursive: true });
    writeFileSync(join(root, name), text);
    return join(root, name);
  };
  const expectNothingLeft = () => expect(readdirSync(root).filter((n) => n === 'out' || n.startsWith('.out'))).toEqual([]);

  it('targets outside 2 to 8 bits, and unknown head widths', async () => {
    for (const bitsPerWeight of [1.9, 8.1, NaN, '4' as unknown as number]) await expect(quantize(demoModelDir, out, { bitsPerWeight, ...small })).rejects.toThrow(/bitsPerWeight must be a number from 2 to 8/);
    await expect(quantize(demoModelDir, out, { bitsPerWeight: 4, headBits: 7 as 6, ...small })).rejects.toThrow(/headBits must be one of/);
    await expect(quantize(demoModelDir, out, { bitsPerWeight: 4, rows: 0 })).rejects.toThrow(/rows must be a positive integer/);
    await expect(quantize(demoModelDir, out, { bitsPerWeight: 4, nonsense: 1 } as never)).rejects.toThrow(/unknown option 'nonsense'/);
    await expect(quantize(demoModelDir, out, { bitsPerWeight: 4, length: 100_000 })).rejects.toThrow(/max_position_embeddings/);
    expectNothingLeft();
  });

  it('calibration files that are missing, malformed or empty', async () => {
    const cases: [string, RegExp][] = [
      [join(root, 'missing.jsonl'), /cannot read .*missing\.jsonl \(ENOENT\)/],
      [file('bad.jsonl', '{"text": "ok"}\n{not json\n'), /bad\.jsonl: line 2 is not JSON/],
      [file('notext.jsonl', '{"body": "x"}\n'), /line 1 has no string field "text"/],
      [file('empty.txt', '\n\n  \n'), /holds no text/],
      [file('data.csv', 'a,b\n'), /is not \.jsonl, \.txt or \.parquet/],
      [file('bad.parquet', 'PAR1 not really'), /not a readable Parquet file/],
      [file('short.jsonl', '{"text": "too short"}\n'), /fewer than one row/],
    ];
    for (const [calibration, message] of cases) await expect(quantize(demoModelDir, out, { bitsPerWeight: 4, calibration, ...small }), calibration).rejects.toThrow(message);
    expectNothingLeft();
  });

  it('an EXL2 source, an existing output and a measurement that is not one', async () => {
    const m = craftedMeasurement(8, () => 6, () => 7);
    const q = join(root, 'q');
    await quantize(demoModelDir, q, { bitsPerWeight: 8, measurement: m, ...small });
    await expect(quantize(q, out, { bitsPerWeight: 4, ...small })).rejects.toThrow(/already EXL2/);
    await expect(quantize(demoModelDir, q, { bitsPerWeight: 8, measurement: m, ...small })).rejects.toThrow(/already exists and is not empty/);
    await expect(quantize(demoModelDir, out, { bitsPerWeight: 4, measurement: file('m.json', '{"measurement": 3}'), ...small })).rejects.toThrow(/no "measurement" object/);
    await expect(quantize(demoModelDir, out, { bitsPerWeight: 4, measurement: file('m2.json', 'nope'), ...small })).rejects.toThrow(/not JSON/);
    const bad = JSON.parse(measurementJson(m, 8));
    bad.measurement['model.layers.3.mlp'][0].up_proj.bits = [7];
    await expect(quantize(demoModelDir, out, { bitsPerWeight: 4, measurement: file('m3.json', JSON.stringify(bad)), ...small })).rejects.toThrow(/model\.layers\.3\.mlp\[0\]\.up_proj: width 7/);
    expectNothingLeft();
  });
});
