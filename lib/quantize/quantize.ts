// quantize(): a float model (a directory, or a merge configuration quantized straight from
// the mapped weights) becomes an EXL2 model directory. Calibration rows go through the
// engine layer by layer: a measurement pass scores candidate recipes per block, the
// optimizer picks one per block for the bit budget, and the quantization pass runs GPTQ
// block by block, each block seeing the output of the quantized blocks before it. A job
// directory beside the output keeps finished layers, so a killed job resumes; the output
// is claimed, written and swapped in as every model writer does (../formats/output.ts).
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';

import { abortError } from '../errors.js';
import { claimOutput, makeDirs, type Inputs, type OutputClaim } from '../formats/output.js';
import { tensorNames } from '../model/architecture.js';
import type { ModelConfig } from '../model/config.js';
import { openModel, positiveInteger, readSource, type ModelSource } from '../model/load.js';
import type { Model } from '../model/model.js';
import type { MergeConfig } from '../merge/config.js';
import { isMergeConfig } from '../merge/virtual.js';
import { abortFlag, native, packageRoot, type NativeCalibration, type NativeQuantizedLinear } from '../native.js';
import { calibrationRows, readCalibration, type CalibrationRows } from './calibration.js';
import { blockBits, linearShape, measurementJson, moduleKey, parseMeasurement, readMeasurement, type MeasuredOption, type Measurement } from './measurement.js';
import { optimize } from './optimize.js';
import { ATTENTION_CANDIDATES, BLOCKS, HEAD_RECIPES, MLP_CANDIDATES, layoutArray, recipeGroups, recipeText, type BlockName, type Recipe } from './recipes.js';
import { exl2Tensors, fileTensors, readAsFloat16, writeSafetensors, writeShards, writeSideFiles, type OutputTensor } from './writer.js';

export interface QuantizeProgress {
  stage: 'measure' | 'quantize' | 'write';
  /** Work done and in all in this stage: decoder layers (fractions within one), or bytes for 'write'. */
  done: number;
  total: number;
  /** Seconds since the stage started (in this run), and the estimate of what is left. */
  elapsed: number;
  eta?: number;
}

export interface MeasureOptions {
  /** Calibration text: a .jsonl ({"text": ...} per line), .txt or .parquet file; default the set shipped in the package. */
  calibration?: string;
  /** Tokens per calibration row; default 2048 scaled by hidden_size / 4096 (at least 256, at most max_position_embeddings). */
  length?: number;
  /** Rows for the measurement pass; default the converter's 19 (16 with your own data). */
  measurementRows?: number;
  /** Compute threads; default the physical cores. */
  threads?: number;
  onProgress?: (progress: QuantizeProgress) => void;
  signal?: AbortSignal;
}

export interface QuantizeOptions extends MeasureOptions {
  /** Target bits per weight over the decoder layers' linears, 2 to 8 (§6.5 accounting). */
  bitsPerWeight: number;
  /** Bits of the output head: 2, 3, 4, 5, 6 (default) or 8. */
  headBits?: 2 | 3 | 4 | 5 | 6 | 8;
  /** Rows for the quantization pass; default the converter's 115 (100 with your own data). */
  rows?: number;
  /** A measurement to reuse (a path, or one returned by measure()): skips the measurement pass. */
  measurement?: string | Measurement;
  /** Largest output shard in bytes (default 8 GiB, as ExLlamaV2). */
  shardBytes?: number;
  /** Replace an existing output directory (never a file, the home or working directory, an
   * input model or file, or a directory that holds one). */
  overwrite?: boolean;
}

export interface QuantizedBlock {
  layer: number;
  block: BlockName;
  /** Recipe per linear. */
  recipes: string[];
  bits: number;
  /** The block output's mean relative error against the unquantized block (same input). */
  error: number;
}

export interface QuantizeResult {
  outDir: string;
  /** Achieved bits per weight over the decoder layers' linears. */
  bitsPerWeight: number;
  headBits: number;
  blocks: QuantizedBlock[];
  /** measurementRows: the rows of the measurement used (absent for a reused measurement that does not say). */
  calibration: { dataset: string; rows: number; length: number; measurementRows?: number };
  /** Wall time of each pass (over every run of a resumed job); 0 for a reused measurement. */
  measureSeconds: number;
  quantizeSeconds: number;
  /** The layer a resumed job went on from (0: started afresh). */
  resumedAt: number;
}

const MEASURE_KEYS = ['calibration', 'length', 'measurementRows', 'threads', 'onProgress', 'signal'];
const QUANTIZE_KEYS = [...MEASURE_KEYS, 'bitsPerWeight', 'headBits', 'rows', 'measurement', 'shardBytes', 'overwrite'];

function checkKeys(options: object, known: string[], what: string): void {
  if (typeof options !== 'object' || options === null) throw new TypeError(`${what}: options must be an object`);
  for (const k of Object.keys(options)) if (!known.includes(k)) throw new TypeError(`${what}: unknown option '${k}'`);
}

/** Calibration rows sent through a layer at once: about 4096 tokens (the engine's buffers and KV cache hold that many). */
const chunkRows = (length: number) => Math.max(1, Math.floor(4096 / length));

/** Progress within a layer: a layer counts as done only once it is saved. */
const within = (block: BlockName, done: number, total: number) => Math.min(0.99, (BLOCK_INDEX[block] + done / total) / 2);

const CANDIDATES: Record<BlockName, Recipe[][]> = { attention: ATTENTION_CANDIDATES, mlp: MLP_CANDIDATES };
const BLOCK_INDEX: Record<BlockName, 0 | 1> = { attention: 0, mlp: 1 };

/** Stage progress with an ETA from the pace of this run. */
function stageReporter(stage: QuantizeProgress['stage'], total: number, start: number, onProgress?: (p: QuantizeProgress) => void) {
  const t0 = performance.now();
  return (done: number) => {
    if (!onProgress) return;
    const elapsed = (performance.now() - t0) / 1000;
    const rate = (done - start) / elapsed;
    onProgress({ stage, done, total, elapsed, ...(done > start && elapsed > 0 ? { eta: (total - done) / rate } : {}) });
  };
}

/** Everything a job works from: the source, the loaded model, calibration rows, the job directory. */
interface Job {
  source: ModelSource;
  model: Model;
  config: ModelConfig;
  dir: string;
  threads: number;
  tokens: CalibrationRows;
  dataset: string;
  rows: number;
  measurementRows: number;
  state: JobState;
}

interface JobState {
  fingerprint: string;
  /** Layers measured so far and their options (measurement JSON). */
  measured: number;
  measurement?: string;
  measureSeconds: number;
  /** Layers quantized so far. */
  quantized: number;
  blocks: QuantizedBlock[];
  quantizeSeconds: number;
}

async function saveState(job: Job): Promise<void> {
  const tmp = join(job.dir, `job.json.${randomBytes(3).toString('hex')}`);
  await writeFile(tmp, JSON.stringify(job.state));
  await rename(tmp, join(job.dir, 'job.json'));
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

/**
 * The converter's calibration (rows of 2048 tokens) scaled to the model: rows keep their
 * number, and their length shrinks with the width (hidden_size / 4096, from 256 tokens),
 * since a narrower model needs fewer samples for its Hessians.
 */
function defaultLength(config: ModelConfig): number {
  const scaled = Math.round((2048 * Math.min(1, config.hiddenSize / 4096)) / 64) * 64;
  return Math.min(Math.max(256, scaled), 2048, config.maxPositionEmbeddings);
}

async function sourceFingerprint(source: ModelSource): Promise<object> {
  const files = await Promise.all(source.checkpoint.files.map(async (f) => {
    const s = await stat(f.path);
    return [f.path, s.size, s.mtimeMs];
  }));
  return { dir: source.dir, files, layers: source.plan.layers };
}

/** Opens (or resumes) a job: loads the model on the CPU, reads calibration text, prepares the job directory. */
async function openJob(source: ModelSource, dir: string, options: MeasureOptions & Partial<QuantizeOptions>, identity: object): Promise<Job> {
  const config = source.config;
  if (config.quantization?.method === 'exl2') throw new Error(`quantize: ${source.dir} is already EXL2; quantize the float model (exportModel() dequantizes an EXL2 model)`);
  for (const [name, v] of [['hidden_size', config.hiddenSize], ['intermediate_size', config.intermediateSize], ['num_attention_heads * head_dim', config.numAttentionHeads * config.headDim]] as const)
    if (v % 32 !== 0) throw new Error(`quantize: ${name} is ${v}; EXL2 needs layer inputs in multiples of 32`);
  const threads = positiveInteger(options.threads, 'threads') ?? 0;
  const own = options.calibration !== undefined;
  const length = positiveInteger(options.length, 'length') ?? defaultLength(config);
  const rows = positiveInteger(options.rows, 'rows') ?? (own ? 100 : 115);
  const mRows = positiveInteger(options.measurementRows, 'measurementRows') ?? (own ? 16 : 19);
  if (length > config.maxPositionEmbeddings) throw new RangeError(`quantize: length ${length} is past the model's max_position_embeddings (${config.maxPositionEmbeddings})`);
  const text = await readCalibration(options.calibration);

  const model = await openModel(async () => source, { device: 'cpu', ...(threads ? { threads } : {}), contextSize: length, kvCacheTokens: chunkRows(length) * length, ...(options.signal ? { signal: options.signal } : {}) });
  try {
    if (!model.tokenizer) throw new Error(`quantize: ${source.tokenizerDir} has no tokenizer.json to tokenize the calibration text`);
    const tokens = await calibrationRows(model.tokenizer, text, Math.max(rows, mRows), length);
    const fingerprint = createHash('sha256').update(JSON.stringify({ source: await sourceFingerprint(source), tokens: tokens.digest, rows, length, mRows, ...identity })).digest('hex');
    let state: JobState | null = null;
    const saved = await readFile(join(dir, 'job.json'), 'utf8').catch(() => null);
    if (saved) {
      try {
        const s = JSON.parse(saved) as JobState;
        if (s.fingerprint === fingerprint) state = s;
      } catch {
        // an unreadable job file: start afresh
      }
    }
    if (!state) {
      await rm(dir, { recursive: true, force: true });
      await makeDirs(join(dir, 'layers'));
      state = { fingerprint, measured: 0, measureSeconds: 0, quantized: 0, blocks: [], quantizeSeconds: 0 };
    }
    const job: Job = { source, model, config, dir, threads: model.info.threads, tokens, dataset: text.dataset, rows: Math.min(rows, tokens.rows), measurementRows: Math.min(mRows, tokens.rows), state };
    await saveState(job);
    return job;
  } catch (e) {
    model.dispose();
    throw e;
  }
}

/**
 * Runs a pass over a native walk of the first `rows` calibration rows (resumed at `layer`
 * from the state file): the abort flag, AbortError for an abort, the walk freed at the end.
 */
async function pass<T>(job: Job, rows: number, statePath: string, layer: number, signal: AbortSignal | undefined, body: (c: NativeCalibration, abort: Int32Array | undefined) => Promise<T>): Promise<T> {
  const t = job.tokens;
  const c = new (native().Calibration)(job.model._engine(), t.tokens.subarray(0, rows * t.length), rows, t.length, job.threads, chunkRows(t.length) * t.length);
  const abort = abortFlag(signal);
  try {
    if (layer > 0) await c.load(statePath, layer, 0);
    return await body(c, abort.flag);
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw abortError(signal);
    throw e;
  } finally {
    abort.release();
    c.dispose();
  }
}

async function runMeasurement(job: Job, options: MeasureOptions): Promise<Measurement> {
  const { config, state } = job;
  const layers = config.numHiddenLayers;
  const partial: Measurement = state.measurement ? parseMeasurementPrefix(state.measurement, config, state.measured) : { modules: {} };
  const report = stageReporter('measure', layers, state.measured, options.onProgress);
  const statePath = join(job.dir, 'measure.state');
  await pass(job, job.measurementRows, statePath, state.measured, options.signal, async (c, abort) => {
    report(state.measured);
    for (let layer = state.measured; layer < layers; layer++) {
      const t0 = performance.now();
      for (const block of ['attention', 'mlp'] as const) {
        // The distinct recipes of each linear, and each candidate row as indices into them.
        const rows = CANDIDATES[block];
        const distinct = BLOCKS[block].linears.map((_, m) => [...new Set(rows.map((r) => recipeText(r[m]!)))]);
        const layouts = distinct.map((list, m) => list.map((text) => layoutArray(recipeGroups(rows.find((r) => recipeText(r[m]!) === text)![m]!, linearShape(config, block, m).inFeatures))));
        const combos = Int32Array.from(rows.flatMap((r) => r.map((recipe, m) => distinct[m]!.indexOf(recipeText(recipe)))));
        const errors = await c.measure(BLOCK_INDEX[block], layouts, combos, (done, total) => report(layer + within(block, done, total)), abort);
        partial.modules[moduleKey(layer, block)] = rows.map((r, i) => ({ accuracy: Math.max(1e-6, 1 - errors[i]!), totalBits: blockBits(config, block, r), recipes: r }));
      }
      await c.save(statePath);
      state.measured = layer + 1;
      state.measurement = measurementJson(partial, layers);
      state.measureSeconds += (performance.now() - t0) / 1000;
      await saveState(job);
      report(layer + 1);
    }
  });
  await rm(statePath, { force: true });
  return { ...partial, calibration: { dataset: job.dataset, rows: job.measurementRows, length: job.tokens.length } };
}

/** The measured layers of a job's partial measurement. */
function parseMeasurementPrefix(text: string, config: ModelConfig, layers: number): Measurement {
  return parseMeasurement(text, { ...config, numHiddenLayers: layers }, 'job measurement');
}

/** Weights in the decoder layers' linears: what bits per weight are counted over. */
function decoderNumel(config: ModelConfig): number {
  return (['attention', 'mlp'] as const).reduce((a, b) => a + BLOCKS[b].linears.reduce((s, _, m) => {
    const sh = linearShape(config, b, m);
    return s + sh.inFeatures * sh.outFeatures;
  }, 0), 0) * config.numHiddenLayers;
}

/** One measured option per block for the budget: bits per weight over all decoder linears. */
export function chooseStrategy(measurement: Measurement, config: ModelConfig, bitsPerWeight: number): MeasuredOption[] {
  const numel = decoderNumel(config);
  const budget = Math.floor(bitsPerWeight * numel);
  const keys: string[] = [];
  for (let l = 0; l < config.numHiddenLayers; l++) keys.push(moduleKey(l, 'attention'), moduleKey(l, 'mlp'));
  const slots = keys.map((k) => measurement.modules[k]!);
  const least = slots.reduce((a, s) => a + Math.min(...s.map((o) => o.totalBits)), 0) / numel;
  const most = slots.reduce((a, s) => a + Math.max(...s.map((o) => o.totalBits)), 0) / numel;
  if (least > bitsPerWeight) throw new RangeError(`quantize: ${bitsPerWeight} bits per weight is below what the measured options allow for this model (${least.toFixed(3)})`);
  const chosen = bitsPerWeight >= most ? slots.map((s) => s.reduce((bi, o, i) => (o.accuracy > s[bi]!.accuracy ? i : bi), 0)) : optimize(slots.map((s) => s.map((o) => ({ bits: o.totalBits, error: 1 - o.accuracy }))), budget, (bitsPerWeight - 0.02) * numel);
  return chosen.map((o, i) => slots[i]![o]!);
}


function checkTarget(bitsPerWeight: unknown, headBits: unknown): void {
  if (typeof bitsPerWeight !== 'number' || !(bitsPerWeight >= 2 && bitsPerWeight <= 8)) throw new RangeError(`quantize: bitsPerWeight must be a number from 2 to 8 (got ${String(bitsPerWeight)})`);
  if (headBits !== undefined && !(typeof headBits === 'number' && HEAD_RECIPES[headBits])) throw new RangeError(`quantize: headBits must be one of ${Object.keys(HEAD_RECIPES).join(', ')} (got ${String(headBits)})`);
}

/**
 * Measures how each candidate recipe of every block keeps the block's output, and writes
 * the measurement (ExLlamaV2's measurement.json layout) to `path` when given. Reuse it with
 * quantize()'s `measurement` option to make any bitrate without measuring again.
 */
export async function measure(source: string | MergeConfig, path: string | undefined, options: MeasureOptions = {}): Promise<Measurement> {
  checkKeys(options, MEASURE_KEYS, 'measure');
  if (options.signal?.aborted) throw abortError(options.signal);
  const target = path === undefined ? null : resolve(path);
  // Beside the file it writes (so a stopped measurement resumes), else a temporary directory.
  const dir = target ? join(dirname(target), `.${basename(target)}.job`) : join(tmpdir(), `laminate-measure-${randomBytes(4).toString('hex')}`);
  const job = await openJob(await readSource(source), dir, options, { measure: true });
  try {
    const m = await runMeasurement(job, options);
    if (target) {
      const tmp = `${target}.${randomBytes(3).toString('hex')}.partial`;
      await writeFile(tmp, measurementJson(m, job.config.numHiddenLayers));
      await rename(tmp, target);
    }
    await rm(dir, { recursive: true, force: true });
    return m;
  } catch (e) {
    if ((e as Error).name !== 'AbortError' && job.state.measured === 0) await rm(dir, { recursive: true, force: true });
    throw e;
  } finally {
    job.model.dispose();
  }
}

/** What a quantization reads, which its output never replaces: the directories of the
 * checkpoint's files and of the tokenizer, a configuration file, the measurement and
 * calibration files. */
function inputsOf(source: string | MergeConfig, read: ModelSource, options: QuantizeOptions): Inputs {
  const models = [...new Set([read.tokenizerDir, ...read.checkpoint.files.map((f) => dirname(f.path))])];
  const files = [options.calibration, typeof options.measurement === 'string' ? options.measurement : undefined];
  if (typeof source === 'string' && isMergeConfig(source) && !source.includes('\n')) files.push(source.trim());
  return { models, files: files.filter((f): f is string => typeof f === 'string') };
}

/**
 * Quantizes a float model to EXL2 at `bitsPerWeight` and writes the model directory
 * ExLlamaV2's converter would write to `outDir` (it appears when complete, replacing an
 * existing output only with `overwrite`, as merge() does). A job stopped part way (abort,
 * Ctrl-C, a kill) resumes from its last finished layer when run again with the same arguments.
 */
export async function quantize(source: string | MergeConfig, outDir: string, options: QuantizeOptions): Promise<QuantizeResult> {
  checkKeys(options, QUANTIZE_KEYS, 'quantize');
  checkTarget(options.bitsPerWeight, options.headBits);
  const headBits = options.headBits ?? 6;
  const shardBytes = options.shardBytes ?? 8192 * 2 ** 20;
  if (!(shardBytes > 0)) throw new RangeError('quantize: shardBytes must be a positive number of bytes');
  if (options.signal?.aborted) throw abortError(options.signal);
  const read = await readSource(source);
  // A measurement to reuse is checked against the model before anything is written.
  let given: Measurement | undefined;
  if (typeof options.measurement === 'string') given = await readMeasurement(options.measurement, read.config);
  else if (options.measurement) given = parseMeasurement(measurementJson(options.measurement, read.config.numHiddenLayers), read.config, 'measurement');
  const claim = await claimOutput(outDir, { command: 'quantize', overwrite: options.overwrite, inputs: inputsOf(source, read, options) });
  try {
    return await quantizeInto(claim, read, options, headBits, shardBytes, given);
  } finally {
    await claim.release();
  }
}

/** quantize() once the output is claimed: the job (resumed or new), written to the claim's
 * work directory and moved into place. */
async function quantizeInto(claim: OutputClaim, read: ModelSource, options: QuantizeOptions, headBits: number, shardBytes: number, given: Measurement | undefined): Promise<QuantizeResult> {
  const outDir = claim.outDir;
  const measurementId = given ? createHash('sha256').update(measurementJson(given, read.config.numHiddenLayers)).digest('hex') : null;
  const dir = join(dirname(outDir), `.${basename(outDir)}.quantize`);
  const job = await openJob(read, dir, options, { bitsPerWeight: options.bitsPerWeight, headBits, measurement: measurementId });
  const { config, state } = job;
  const layers = config.numHiddenLayers;
  const resumedAt = state.quantized;
  try {
    const measurement = given ?? (state.measured === layers && state.measurement ? { ...parseMeasurement(state.measurement, config, 'job measurement'), calibration: { dataset: job.dataset, rows: job.measurementRows, length: job.tokens.length } } : await runMeasurement(job, options));
    const strategy = chooseStrategy(measurement, config, options.bitsPerWeight);

    // The quantization pass, layer by layer from where the job stopped.
    const report = stageReporter('quantize', layers + 1, state.quantized, options.onProgress);
    const statePath = join(job.dir, 'quantize.state');
    const names = tensorNames(config);
    await pass(job, job.rows, statePath, state.quantized, options.signal, async (c, abort) => {
      report(state.quantized);
      for (let layer = state.quantized; layer < layers; layer++) {
        const t0 = performance.now();
        const tensors = [];
        const blocks: QuantizedBlock[] = [];
        for (const block of ['attention', 'mlp'] as const) {
          const option = strategy[2 * layer + BLOCK_INDEX[block]]!;
          const layouts = option.recipes.map((r, m) => layoutArray(recipeGroups(r, linearShape(config, block, m).inFeatures)));
          const q = await c.quantize(BLOCK_INDEX[block], layouts, (done, total) => report(layer + within(block, done, total)), abort);
          const plan = job.source.plan.layers[layer]!;
          for (const [m, linear] of q.linears.entries()) {
            const role = (['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const)[BLOCK_INDEX[block] * 4 + m]!;
            const biasName = block === 'attention' ? plan[`${role}Bias` as 'qBias'] : undefined;
            const bias = biasName ? (await readAsFloat16(job.source, biasName)).data : undefined;
            tensors.push(...exl2Tensors(names.layer(layer)[role].replace(/\.weight$/, ''), linear, bias));
          }
          blocks.push({ layer, block, recipes: option.recipes.map(recipeText), bits: option.totalBits, error: q.error });
        }
        await writeSafetensors(join(job.dir, 'layers', `${layer}.safetensors`), tensors);
        await c.save(statePath);
        state.quantized = layer + 1;
        state.blocks.push(...blocks);
        state.quantizeSeconds += (performance.now() - t0) / 1000;
        await saveState(job);
        report(layer + 1);
      }
      // The head, with its fixed recipe; plain rounding after the scale search past 1e9 weights.
      const t0 = performance.now();
      const recipe = HEAD_RECIPES[headBits]!;
      const head: NativeQuantizedLinear = await c.quantizeHead(layoutArray(recipeGroups(recipe, config.hiddenSize)), config.vocabSize * config.hiddenSize <= 1e9, abort);
      await writeSafetensors(join(job.dir, 'layers', 'head.safetensors'), exl2Tensors('lm_head', head));
      state.quantizeSeconds += (performance.now() - t0) / 1000;
      report(layers + 1);
    });

    // The model directory, in the claim's work directory moved into place.
    const temp = claim.workDir;
    const plan = job.source.plan;
    const out: OutputTensor[] = [{ name: names.embedding, dtype: 'F16', shape: [config.vocabSize, config.hiddenSize], source: plan.embedding }];
    for (let layer = 0; layer < layers; layer++) {
      const stored = await fileTensors(join(job.dir, 'layers', `${layer}.safetensors`));
      const n = names.layer(layer);
      const linears = (roles: readonly ('q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down')[]) =>
        roles.flatMap((r) => stored.filter((t) => t.name.startsWith(`${n[r].replace(/\.weight$/, '')}.`)));
      out.push({ name: n.inputNorm, dtype: 'F16', shape: [config.hiddenSize], source: plan.layers[layer]!.inputNorm });
      out.push(...linears(['q', 'k', 'v', 'o']));
      out.push({ name: n.postAttentionNorm, dtype: 'F16', shape: [config.hiddenSize], source: plan.layers[layer]!.postAttentionNorm });
      out.push(...linears(['gate', 'up', 'down']));
    }
    out.push({ name: names.finalNorm, dtype: 'F16', shape: [config.hiddenSize], source: plan.finalNorm });
    out.push(...(await fileTensors(join(job.dir, 'layers', 'head.safetensors'))));
    const writing = stageReporter('write', 1, 0, options.onProgress);
    await writeShards(temp, job.source, out, shardBytes, (done, total) => writing(done / total), options.signal);
    const used = measurementJson(measurement, layers);
    await writeSideFiles(temp, job.source, {
      quant_method: 'exl2',
      version: packageVersion(),
      quantizer: 'laminate',
      bits: options.bitsPerWeight,
      head_bits: headBits,
      calibration: { rows: job.rows, length: job.tokens.length, dataset: job.dataset },
    }, { 'measurement.json': used });
    if (options.signal?.aborted) throw abortError(options.signal);
    await claim.commit();
    await rm(job.dir, { recursive: true, force: true });

    const achieved = strategy.reduce((a, o) => a + o.totalBits, 0) / decoderNumel(config);
    return {
      outDir,
      bitsPerWeight: achieved,
      headBits,
      blocks: state.blocks,
      calibration: { dataset: job.dataset, rows: job.rows, length: job.tokens.length, ...(given ? (given.calibration ? { measurementRows: given.calibration.rows } : {}) : { measurementRows: job.measurementRows }) },
      measureSeconds: given ? 0 : state.measureSeconds,
      quantizeSeconds: state.quantizeSeconds,
      resumedAt,
    };
  } catch (e) {
    // A job that failed before finishing a layer has nothing worth resuming.
    if ((e as Error).name !== 'AbortError' && state.measured === 0 && state.quantized === 0) await rm(job.dir, { recursive: true, force: true });
    throw e;
  } finally {
    job.model.dispose();
  }
}
