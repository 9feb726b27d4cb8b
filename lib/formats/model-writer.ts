// Writing a model directory from tensors that the native job computes (a merge, a
// dequantizing export): shards by the byte limit, headers, the index, side files, all in a
// temporary directory renamed into place only when complete, so that an error, an abort or
// a full disk never leaves a model that looks whole.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

import { abortError } from '../errors.js';
import { abortFlag, native } from '../native.js';
import { shardHeader, shardName, shardTensors, tensorBytes, type OutputDtype } from './safetensors-write.js';

/** One output tensor as the native job computes it (see native/merge/merge_job.h). */
export interface JobTensor {
  name: string;
  outDtype: OutputDtype;
  shape: number[];
  method: number;
  inputs: object[];
  [parameter: string]: unknown;
}

export interface WriteModelOptions {
  onProgress?: (progress: { written: number; total: number }) => void;
  signal?: AbortSignal;
  /** Shard size limit in bytes (default 5e9). */
  outShardSize?: number;
  overwrite?: boolean;
  seed?: number;
  /** Metadata of model.safetensors.index.json besides total_size. */
  indexMetadata?: Record<string, unknown>;
  /** Writes config.json, tokenizer files and the like into the (temporary) directory. */
  sideFiles: (dir: string) => Promise<void>;
}

export interface WrittenModel {
  outDir: string;
  shards: string[];
  tensors: number;
  bytes: number;
}

export async function checkOutputDir(outDir: string, overwrite: boolean | undefined): Promise<string> {
  outDir = resolve(outDir);
  const entries = await readdir(outDir).catch(() => null);
  if (entries && entries.length > 0 && !overwrite) throw new Error(`${outDir} already exists and is not empty (pass overwrite: true to replace it)`);
  return outDir;
}

/** Writes `tensors` (in write order) from the input `files` into outDir. */
export async function writeModel(outDir: string, files: string[], tensors: JobTensor[], options: WriteModelOptions): Promise<WrittenModel> {
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  const limit = options.outShardSize ?? 5e9;
  if (!Number.isFinite(limit)) throw new RangeError('outShardSize must be a number of bytes');
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError('seed must be a non-negative integer');
  outDir = await checkOutputDir(outDir, options.overwrite);

  const sizes = tensors.map((t) => tensorBytes(t.shape, t.outDtype));
  const shards = shardTensors(tensors.map((_, i) => i), sizes, limit);
  const names = shards.map((_, i) => shardName(i, shards.length));
  const temp = join(dirname(outDir), `.${basename(outDir)}.partial-${randomBytes(4).toString('hex')}`);
  await mkdir(temp, { recursive: true });
  const abort = abortFlag(signal);
  try {
    const shardSpecs = shards.map((members, i) => {
      const { header, order } = shardHeader(members.map((j) => ({ name: tensors[j]!.name, dtype: tensors[j]!.outDtype, shape: tensors[j]!.shape })));
      return { path: join(temp, names[i]!), header, tensors: order.map((j) => members[j]!) };
    });
    const progress = options.onProgress;
    await native().runMerge({ files, tensors, shards: shardSpecs, seed }, progress ? (written, total) => progress({ written, total }) : undefined, abort.flag);
    if (shards.length > 1) {
      // in write order, as mergekit lists it
      const weightMap: Record<string, string> = {};
      shards.forEach((members, i) => members.forEach((t) => (weightMap[tensors[t]!.name] = names[i]!)));
      const index = { metadata: { total_size: sizes.reduce((a, b) => a + b, 0), ...options.indexMetadata }, weight_map: weightMap };
      await writeFile(join(temp, 'model.safetensors.index.json'), JSON.stringify(index, null, 2));
    }
    await options.sideFiles(temp);
    if (signal?.aborted) throw abortError(signal);
    if (await stat(outDir).then(() => true, () => false)) await rm(outDir, { recursive: true, force: true });
    await rename(temp, outDir);
  } catch (e) {
    await rm(temp, { recursive: true, force: true });
    if ((e as Error).name === 'AbortError') throw abortError(signal);
    throw e;
  } finally {
    abort.release();
  }
  return { outDir, shards: names, tensors: tensors.length, bytes: sizes.reduce((a, b) => a + b, 0) };
}

/** JSON with keys sorted at every level, as Transformers writes config.json. */
export function sortedJson(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort((v as Record<string, unknown>)[k])]));
    return v;
  };
  return `${JSON.stringify(sort(value), null, 2)}\n`;
}
