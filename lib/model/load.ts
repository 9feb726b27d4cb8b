// loadModel: a directory on disk becomes a running model. Reads config.json and the
// safetensors headers, checks them, builds the layer plan, maps the weights in native
// code and touches them off the JS thread (with progress and abort).
import { readFileSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { join, resolve } from 'node:path';

import { abortError, FormatError } from '../errors.js';
import { readJsonObject } from '../formats/json.js';
import type { SchedulerOptions } from '../generate/scheduler.js';
import { abortFlag, cudaAddon, native, packageRoot, type NativeEngine, type NativeModelSpec } from '../native.js';
import { cudaInfo, type CudaInfo, type Isa } from '../system.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import type { MergeConfig } from '../merge/config.js';
import { isMergeConfig, planVirtualMerge } from '../merge/virtual.js';
import { layerOfTensor } from './architecture.js';
import { readCheckpoint, type Checkpoint } from './checkpoint.js';
import { readConfig, type ModelConfig } from './config.js';
import { Model } from './model.js';
import { checkpointPlan, resolvePlan, type LayerPlan } from './plan.js';

export interface LoadProgress {
  phase: 'headers' | 'weights';
  /** Bytes of weights touched so far, and in all. */
  loaded: number;
  total: number;
}

export interface LoadOptions {
  /**
   * Where the model runs: 'cpu'; 'cuda' (or 'cuda:N' for GPU N), which needs the CUDA
   * build (npm run build:cuda) and a GPU with room for the weights and the whole KV cache,
   * else it is an Error that says which is missing; 'auto' (default; or the LAMINATE_DEVICE
   * environment variable), CUDA when it can be used (a GPU answers and the model fits), else
   * the CPU.
   */
  device?: 'cpu' | 'cuda' | `cuda:${number}` | 'auto';
  /** Compute threads; default the number of physical cores. */
  threads?: number;
  /** Kernel family: 'auto' (default; or the LAMINATE_ISA environment variable), 'scalar', 'avx2', 'avx2vnni', 'avx512', 'avx512vnni', on arm64 'neon', 'neondot' (see {@link Isa}). */
  isa?: 'auto' | Isa;
  /** Longest sequence, in tokens; default min(max_position_embeddings, 8192). */
  contextSize?: number;
  /** KV cache capacity over all sequences, in tokens; default contextSize. Memory is taken as pages fill. */
  kvCacheTokens?: number;
  /**
   * How the KV cache stores keys and values: 'f16' (default; half floats, as on the GPU),
   * or 'q8' (CPU only: int8 with a scale per position and KV head, a little over half the
   * memory of 'f16', for long contexts; logits move by about 0.3% of their range on the
   * bundled model).
   */
  kvCacheType?: 'f16' | 'q8';
  /** Most tokens in one batched forward pass, prompt chunks included (default 512). */
  maxBatchTokens?: number;
  /** Generations that may wait for KV cache memory instead of failing at once (default 0). */
  maxQueue?: number;
  /**
   * Prefix cache (default true): a generation whose prompt begins with tokens whose KV is
   * still cached (an earlier turn of a chat, a shared system prompt) computes only the rest.
   * Cached pages are shared between sequences and reclaimed, least recently used first,
   * when memory is needed.
   */
  prefixCache?: boolean;
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
}

const KNOWN_OPTIONS = new Set(['device', 'threads', 'isa', 'contextSize', 'kvCacheTokens', 'kvCacheType', 'maxBatchTokens', 'maxQueue', 'prefixCache', 'onProgress', 'signal']);

/** The small demo model shipped in the package, used when loadModel() gets no directory. */
export const demoModelDir = join(packageRoot, 'models', 'tiny-mistral-bf16');

/** An optional option that must be a positive integer: undefined when absent, else RangeError. */
export function positiveInteger(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive integer (got ${String(value)})`);
  return value;
}

async function generationEos(dir: string): Promise<number[]> {
  const json = await readJsonObject(join(dir, 'generation_config.json'), { optional: true }).catch(() => null);
  const v = json?.['eos_token_id'];
  const list = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
  return list.filter((t): t is number => Number.isSafeInteger(t) && t >= 0);
}

/**
 * The engine on the device asked for. 'auto' tries a real GPU (not the simulator) and falls
 * back to the CPU when the CUDA engine cannot be made (for instance, too little free memory).
 */
function createEngine(spec: NativeModelSpec, want: 'cpu' | 'cuda' | 'auto', cuda: CudaInfo | undefined, deviceIndex: number, asked: string, weightBytes: number): NativeEngine {
  if (want !== 'cpu' && cuda) {
    const addon = cudaAddon().addon;
    if (addon && cuda.devices.length > 0 && (want === 'cuda' || !cuda.simulated)) {
      try {
        return new addon.Engine({ ...spec, device: 'cuda', deviceIndex });
      } catch (e) {
        if (want === 'cuda') throw new Error(`loadModel: device '${asked}' cannot be used: ${(e as Error).message}`, { cause: e });
      }
    }
  }
  checkHostMemory(spec, weightBytes);
  return new (native().Engine)({ ...spec, device: 'cpu' });
}

/** Bytes of the CPU engine's KV cache for `tokens` positions (whole pages of 16). */
function kvCacheBytes(spec: Pick<NativeModelSpec, 'layers' | 'shape' | 'kvPageSize'>, tokens: number, type: 'f16' | 'q8'): number {
  const perHead = type === 'q8' ? spec.shape.headDim + 4 : 2 * spec.shape.headDim; // int8 codes and a float scale, or half floats
  return spec.layers.length * 2 * spec.shape.numKeyValueHeads * perHead * Math.ceil(tokens / spec.kvPageSize) * spec.kvPageSize;
}

/** The memory this process may use: the machine's, or its cgroup's limit where lower (a container's). */
function memoryLimit(): number {
  let limit = totalmem();
  for (const file of ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']) {
    try {
      const value = Number(readFileSync(file, 'utf8').trim());
      if (Number.isFinite(value) && value > 0) limit = Math.min(limit, value);
    } catch {
      // not there (not Linux, or another cgroup layout), or 'max'
    }
  }
  return limit;
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 3 : 1)} GiB`;

/** On the CPU, the weights (mapped from their files) and a full KV cache must fit in memory. */
function checkHostMemory(spec: NativeModelSpec, weightBytes: number): void {
  const type = spec.kvCacheType ?? 'f16';
  const cache = kvCacheBytes(spec, spec.kvCacheTokens, type);
  const limit = memoryLimit();
  if (weightBytes + cache <= limit) return;
  const q8 = type === 'f16' ? ` (kvCacheType 'q8' would take ${gib(kvCacheBytes(spec, spec.kvCacheTokens, 'q8'))})` : '';
  throw new RangeError(
    `loadModel: not enough memory: the weights take ${gib(weightBytes)} and a ${type} KV cache of ${spec.kvCacheTokens} tokens ${gib(cache)}${q8}, ` +
      `${gib(weightBytes + cache)} in all, where this machine${limit < totalmem() ? "'s memory limit (cgroup)" : ''} has ${gib(limit)}. ` +
      'Give a smaller contextSize or kvCacheTokens, or kvCacheType \'q8\'.',
  );
}

/** What a load reads: a model directory, or a passthrough merge of several. */
export interface ModelSource {
  /** The directory, or a description of the merge. */
  dir: string;
  config: ModelConfig;
  /** config.json as stored (for a merge: the merged model's). */
  rawConfig: Record<string, unknown>;
  checkpoint: Checkpoint;
  plan: LayerPlan;
  tokenizerDir: string;
}

/**
 * Stored decoder layers past config.json's num_hidden_layers are an error, not a silently
 * shorter model. (Fewer stored layers than it says fail in resolvePlan, as missing tensors.)
 */
function checkLayerCount(config: ModelConfig, checkpoint: Checkpoint, configFile: string): void {
  const extra = [...checkpoint.tensors.keys()]
    .map((name) => ({ name, layer: layerOfTensor(name) ?? -1 }))
    .filter((t) => t.layer >= config.numHiddenLayers)
    .sort((a, b) => a.layer - b.layer || (a.name < b.name ? -1 : 1));
  const first = extra[0];
  if (!first) return;
  const file = checkpoint.files[checkpoint.tensors.get(first.name)!.file]!.path;
  throw new FormatError(configFile, `num_hidden_layers is ${config.numHiddenLayers}, but ${file} stores layer ${first.layer} (tensor '${first.name}')`);
}

export async function readSource(source: string | MergeConfig): Promise<ModelSource> {
  if (isMergeConfig(source)) {
    const v = await planVirtualMerge(source);
    return { dir: v.label, config: v.config, rawConfig: v.rawConfig, checkpoint: v.checkpoint, plan: v.plan, tokenizerDir: v.tokenizerDir };
  }
  const dir = resolve(source);
  const config = await readConfig(dir);
  for (const t of await generationEos(dir)) if (!config.eosTokenIds.includes(t)) config.eosTokenIds.push(t);
  const checkpoint = await readCheckpoint(dir, { scanAll: config.quantization?.method === 'exl2' });
  checkLayerCount(config, checkpoint, join(dir, 'config.json'));
  const rawConfig = (await readJsonObject(join(dir, 'config.json')))!;
  return { dir, config, rawConfig, checkpoint, plan: checkpointPlan(config), tokenizerDir: dir };
}

/**
 * Loads a Hugging Face model directory (config.json + safetensors, single or sharded;
 * tokenizer.json when present). Without a directory, the bundled demo model. Given a
 * mergekit passthrough configuration (YAML text, a .yml path or the object), loads the
 * merged model without writing it: repeated layers share the same mapped weights.
 */
export async function loadModel(source: string | MergeConfig = demoModelDir, options: LoadOptions = {}): Promise<Model> {
  if (!isMergeConfig(source) && (typeof source !== 'string' || source === ''))
    throw new TypeError('loadModel: give a model directory or a merge configuration');
  return openModel(() => readSource(source), options);
}

/** loadModel() over a source that `read` gives (read once the options are checked): for callers that have read it already. */
export async function openModel(read: () => Promise<ModelSource>, options: LoadOptions = {}): Promise<Model> {
  for (const key of Object.keys(options)) if (!KNOWN_OPTIONS.has(key)) throw new TypeError(`loadModel: unknown option '${key}'`);
  const fromEnv = options.device === undefined && !!process.env['LAMINATE_DEVICE'];
  const device = options.device ?? (process.env['LAMINATE_DEVICE'] || 'auto');
  if (options.kvCacheType !== undefined && options.kvCacheType !== 'f16' && options.kvCacheType !== 'q8') throw new RangeError(`kvCacheType must be 'f16' or 'q8' (got ${String(options.kvCacheType)})`);
  const gpu = typeof device === 'string' ? /^cuda(?::(\d+))?$/.exec(device) : null;
  if (options.kvCacheType === 'q8' && gpu) throw new RangeError(`kvCacheType 'q8' is supported on the CPU only (device '${device}')`);
  if (!gpu && device !== 'cpu' && device !== 'auto') throw new TypeError(`loadModel: ${fromEnv ? 'LAMINATE_DEVICE' : 'device'} must be 'cpu', 'cuda', 'cuda:N' or 'auto' (got ${String(device)})`);
  const deviceIndex = gpu?.[1] === undefined ? 0 : Number(gpu[1]);
  const cuda = device === 'cpu' ? undefined : cudaInfo();
  if (gpu && cuda) {
    if (cuda.devices.length === 0) throw new Error(`loadModel: device '${device}' cannot be used: ${cuda.reason ?? 'no CUDA device'}`);
    if (!cuda.devices.some((d) => d.index === deviceIndex)) throw new Error(`loadModel: device '${device}' cannot be used: there is no GPU ${deviceIndex} (the CUDA build sees ${cuda.devices.map((d) => `${d.index}: ${d.name}`).join(', ')})`);
  }
  const threads = positiveInteger(options.threads, 'threads') ?? 0;
  const scheduling: SchedulerOptions = { maxBatchTokens: positiveInteger(options.maxBatchTokens, 'maxBatchTokens') ?? 512 };
  if (options.maxQueue !== undefined) {
    if (!Number.isSafeInteger(options.maxQueue) || options.maxQueue < 0) throw new RangeError(`maxQueue must be a non-negative integer (got ${String(options.maxQueue)})`);
    scheduling.maxQueue = options.maxQueue;
  }
  if (options.prefixCache !== undefined && typeof options.prefixCache !== 'boolean') throw new TypeError(`prefixCache must be a boolean (got ${String(options.prefixCache)})`);
  scheduling.prefixCache = options.prefixCache ?? true;
  const { signal, onProgress } = options;
  if (signal?.aborted) throw abortError(signal);

  const { dir, config, checkpoint, plan, tokenizerDir } = await read();
  const hasTokenizer = await access(join(tokenizerDir, 'tokenizer.json')).then(() => true, () => false);
  const tokenizer = hasTokenizer ? await Tokenizer.load(tokenizerDir) : null;
  onProgress?.({ phase: 'headers', loaded: 0, total: checkpoint.bytes });
  if (signal?.aborted) throw abortError(signal);

  const contextSize = positiveInteger(options.contextSize, 'contextSize') ?? Math.min(config.maxPositionEmbeddings, 8192);
  const kvCacheTokens = positiveInteger(options.kvCacheTokens, 'kvCacheTokens') ?? contextSize;
  const isa = options.isa ?? (process.env['LAMINATE_ISA'] || 'auto');
  const kvCacheType = options.kvCacheType ?? 'f16';
  const spec = resolvePlan(config, checkpoint, plan, { isa, threads, contextSize, kvCacheTokens, kvPageSize: 16, kvCacheType });

  const engine = createEngine(spec, gpu ? 'cuda' : device === 'auto' ? 'auto' : 'cpu', cuda, deviceIndex, device, checkpoint.bytes);
  const abort = abortFlag(signal);
  try {
    await engine.prefault(onProgress ? (loaded, total) => onProgress({ phase: 'weights', loaded, total }) : undefined, abort.flag);
  } catch (e) {
    engine.dispose();
    if ((e as Error).name === 'AbortError') throw abortError(signal);
    throw e;
  } finally {
    abort.release();
  }
  const info = engine.info();
  return new Model(config, engine, {
    dir,
    device: info.device,
    ...(info.deviceName ? { deviceName: info.deviceName } : {}),
    deviceBytes: info.deviceBytes,
    isa: info.isa,
    threads: info.threads,
    weightBytes: info.mappedBytes,
    contextSize,
    kvCacheType,
  }, tokenizer, scheduling);
}
