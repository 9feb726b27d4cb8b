// Finds and loads the native addon: a prebuilt binary from prebuilds/ when one matches this
// platform, else the one built from source in build/. The CUDA variant is looked up
// separately when a device asks for it: a source build in build-cuda/ (npm run build:cuda),
// or the opt-in package of prebuilt CUDA binaries.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeTensor {
  name: string;
  file: number;
  offset: number;
  bytes: number;
  dtype: 'F32' | 'F16' | 'BF16' | 'I32' | 'I16';
  shape: number[];
}

/** A linear layer: a dense weight tensor, or the five tensors of an EXL2 layer (tensor indices). */
export type NativeLinear =
  | number
  | { weight: number; bias?: number }
  | { qWeight: number; qInvperm: number; qScale: number; qScaleMax: number; qGroups: number; bias?: number };

export interface NativeLayer {
  inputNorm: number;
  postAttentionNorm: number;
  q: NativeLinear;
  k: NativeLinear;
  v: NativeLinear;
  o: NativeLinear;
  gate: NativeLinear;
  up: NativeLinear;
  down: NativeLinear;
}

export interface NativeModelSpec {
  files: string[];
  tensors: NativeTensor[];
  shape: {
    hiddenSize: number;
    intermediateSize: number;
    numAttentionHeads: number;
    numKeyValueHeads: number;
    headDim: number;
    vocabSize: number;
    rmsNormEps: number;
    slidingWindow: number;
    contextSize: number;
    ropeInvFreq: number[];
  };
  embedding: number;
  finalNorm: number;
  lmHead: NativeLinear;
  layers: NativeLayer[];
  /** 'cpu' (default) or 'cuda' (the CUDA build only). */
  device?: 'cpu' | 'cuda';
  deviceIndex?: number;
  isa: string;
  threads: number;
  kvPageSize: number;
  kvCacheTokens: number;
  /** The CPU cache's format (default 'f16'). */
  kvCacheType?: 'f16' | 'q8';
}

export interface NativeStepEntry {
  sequence: number;
  tokens: Int32Array;
  /** 0: none, 1: last position, 2: every position, 3: only the topK largest logits of the last position and their ids (found where the logits are) */
  logits: 0 | 1 | 2 | 3;
  /** With logits 3: 1 to 64 (default 1, greedy). */
  topK?: number;
}

export interface NativeStepResult {
  logits: Float32Array;
  rows: number[];
  topK: number;
  topValues: Float32Array;
  topIds: Int32Array;
}

/** How a model's forward steps have run: eagerly, or (on a GPU, decode steps) recorded as a
 * CUDA graph and replayed; graphError says why recording was turned off, if it was. */
export interface StepCounts {
  eager: number;
  recorded: number;
  replayed: number;
  graphError?: string;
}

export interface NativeEngine {
  prefault(onProgress: ((done: number, total: number) => void) | undefined, abort: Int32Array | undefined): Promise<void>;
  /** logits: the rows asked for, in entry order; topValues and topIds: topK (the largest asked for) per entry with logits 3, in entry order, largest first. */
  step(batch: NativeStepEntry[], abort: Int32Array | undefined): Promise<NativeStepResult>;
  /** shared: the sequence takes part in the prefix cache. */
  createSequence(shared?: boolean): number;
  /** Gives an empty shared sequence the cached KV pages that `tokens` begins with (leaving one token at least); returns the positions it now holds. */
  attachPrefix(id: number, tokens: Int32Array): number;
  freeSequence(id: number): void;
  sequenceLength(id: number): number;
  truncateSequence(id: number, length: number): void;
  cacheStats(): { pageSize: number; pagesInUse: number; maxPages: number; cachedPages: number; bytesAllocated: number };
  stepCounts(): StepCounts;
  info(): { device: 'cpu' | 'cuda'; deviceName?: string; deviceBytes: number; isa: string; threads: number; mappedBytes: number; layers: number };
  dispose(): void;
}

/** One layer as GPTQ made it: codes in stored-row order, scale codes, fp16 maxima (bits). */
export interface NativeQuantizedLinear {
  inFeatures: number;
  outFeatures: number;
  /** (bits, rows) pairs */
  groups: Int32Array;
  perm: Int32Array;
  codes: Uint8Array;
  scaleCodes: Uint8Array;
  scaleMax: Uint16Array;
}

/** The quantizer's walk through a model's layers (native/quant/calibration.h). Block 0: attention, 1: MLP. */
export interface NativeCalibration {
  measure(block: 0 | 1, layouts: Int32Array[][], combos: Int32Array, onProgress: ((done: number, total: number) => void) | undefined, abort: Int32Array | undefined): Promise<Float64Array>;
  quantize(block: 0 | 1, layouts: Int32Array[], onProgress: ((done: number, total: number) => void) | undefined, abort: Int32Array | undefined): Promise<{ linears: NativeQuantizedLinear[]; error: number }>;
  quantizeHead(layout: Int32Array, errorFeedback: boolean, abort: Int32Array | undefined): Promise<NativeQuantizedLinear>;
  save(path: string): Promise<void>;
  load(path: string, layer: number, block: number): Promise<void>;
  /** Frees the hidden states now. */
  dispose(): void;
}

export interface NativeAddon {
  Engine: new (spec: NativeModelSpec) => NativeEngine;
  /** GPTQ on host arrays, synchronously (for tests). */
  gptqQuantize(w: Float32Array, n: number, k: number, h: Float64Array, layout: Int32Array, errorFeedback: boolean, threads: number): NativeQuantizedLinear & { weight: Uint16Array; u: Float32Array; damp: number };
  Calibration: new (engine: NativeEngine, tokens: Int32Array, rows: number, length: number, threads: number, chunkTokens: number) => NativeCalibration;
  /** Runs a merge to disk (see lib/merge/merge.ts for the spec). */
  runMerge(spec: object, onProgress: ((done: number, total: number) => void) | undefined, abort: Int32Array | undefined): Promise<void>;
  cpuInfo(): { isas: string[]; best: string; avx512bf16: boolean; physicalCores: number };
  /** One EXL2 matmul on the CPU kernels (or, in the CUDA build, isa 'cuda' or 'cuda-mma'), with the int8 activations they used (for tests). */
  exl2Matmul(
    layer: { qWeight: Int32Array; qInvperm: Int32Array; qScale: Int32Array; qScaleMax: Uint16Array; qGroups: Int16Array; n: number; k: number },
    x: Float32Array, m: number, isa: string,
  ): { y: Float32Array; xq: Int8Array; scale: Float32Array; segmentRows: Int32Array };
  backend: string;
  /** The CUDA variant only. */
  cudaInfo?(): NativeCudaInfo;
  /** The CUDA variant only, for tests: single kernels on host arrays (synchronous). */
  cudaDenseMatmul?(w: Float32Array | Uint16Array, dtype: 'F32' | 'F16' | 'BF16', n: number, k: number, x: Float32Array, m: number, tensorCores: boolean): Float32Array;
  cudaTopK?(logits: Float32Array, rows: number, vocab: number, k: number): { values: Float32Array; indices: Int32Array };
  cudaSoftmax?(x: Float32Array, rows: number, n: number): Float32Array;
  /** Device-to-device copy bandwidth, bytes per second read plus written (for benchmarks). */
  cudaCopyBandwidth?(device: number, bytes: number, repeats: number): number;
}

export interface NativeCudaInfo {
  runtimeVersion: number;
  driverVersion: number;
  devices: { index: number; name: string; computeCapability: string; totalBytes: number; freeBytes: number }[];
  error?: string;
  /** The simulator build (npm run build:sim): its one device is the CPU. */
  simulated?: boolean;
}

/** The package root: one level above lib/ (sources) or dist/ (compiled). */
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

let addon: NativeAddon | undefined;

export function native(): NativeAddon {
  if (!addon) {
    const require = createRequire(import.meta.url);
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    try {
      addon = load(packageRoot);
    } catch (e) {
      throw new Error(
        `laminate: the native addon could not be loaded on ${process.platform}-${process.arch} (${(e as Error).message}). ` +
          'Run `npm rebuild laminate --build-from-source` to build it from source (that needs python3, make and a C++17 compiler).',
        { cause: e },
      );
    }
  }
  return addon;
}

let cuda: { addon?: NativeAddon; reason?: string } | undefined;

/** The npm package that holds the prebuilt CUDA variant for this platform (opt-in:
 * `npm install laminate-cuda-linux-x64`), built from packages/cuda/ by npm run prebuilds:cuda. */
export const cudaPackageName = `laminate-cuda-${process.platform}-${process.arch}`;

/** Where the CUDA variant is: LAMINATE_CUDA_ADDON (such as the simulator build,
 * build-sim/Release/laminate.node, which runs the CUDA engine and kernels on the CPU), else
 * a source build (npm run build:cuda, build-cuda/Release/laminate.node), else the prebuilt
 * package of this platform, whose version must be this package's. */
function findCudaAddon(): { file?: string; reason?: string } {
  const env = process.env['LAMINATE_CUDA_ADDON'];
  if (env) return existsSync(resolve(env)) ? { file: resolve(env) } : { reason: `LAMINATE_CUDA_ADDON names ${resolve(env)}, which is not there` };
  const built = join(packageRoot, 'build-cuda', 'Release', 'laminate.node');
  if (existsSync(built)) return { file: built };
  const require = createRequire(import.meta.url);
  let manifest: string;
  try {
    manifest = require.resolve(`${cudaPackageName}/package.json`);
  } catch {
    return {
      reason:
        `no CUDA build: install the prebuilt one (npm install ${cudaPackageName}@${version()}; it needs only the NVIDIA driver), ` +
        'or build it from source where nvcc is installed (npm run build:cuda)',
    };
  }
  const found = (require(manifest) as { version?: string }).version;
  if (found !== version()) return { reason: `${cudaPackageName} ${found} does not match laminate ${version()} (npm install ${cudaPackageName}@${version()})` };
  return { file: join(dirname(manifest), 'laminate.node') };
}

function version(): string {
  return (createRequire(import.meta.url)(join(packageRoot, 'package.json')) as { version: string }).version;
}

/** The CUDA variant of the addon (see findCudaAddon), or why it cannot be loaded. */
export function cudaAddon(): { addon?: NativeAddon; reason?: string } {
  if (!cuda) {
    const { file, reason } = findCudaAddon();
    if (!file) cuda = { reason: reason! };
    else {
      try {
        const loaded = createRequire(import.meta.url)(file) as NativeAddon;
        cuda = typeof loaded.cudaInfo === 'function' ? { addon: loaded } : { reason: `${file} is not a CUDA build` };
      } catch (e) {
        cuda = { reason: `the CUDA build could not be loaded (${(e as Error).message})` };
      }
    }
  }
  return cuda;
}

/** A flag that native jobs poll: element 0 becomes 1 when the signal aborts. */
export function abortFlag(signal: AbortSignal | undefined): { flag: Int32Array | undefined; release(): void } {
  if (!signal) return { flag: undefined, release() {} };
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const onAbort = () => Atomics.store(flag, 0, 1);
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  return { flag, release: () => signal.removeEventListener('abort', onAbort) };
}
