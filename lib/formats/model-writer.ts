// Writing a model directory from tensors that the native job computes (a merge, a
// dequantizing export): shards by the byte limit, headers, the index, side files, all in
// the work directory of the output's claim (output.ts), moved into place only when
// complete, so that an error, an abort, a full disk or a kill never leaves a model that
// looks whole.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { abortError } from '../errors.js';
import { abortFlag, native } from '../native.js';
import { claimOutput, type ClaimOptions, type Inputs } from './output.js';
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
  /** The command writing, for the output's lock and messages. */
  command: ClaimOptions['command'];
  /** What the command reads: the output never replaces these or a directory holding one. */
  inputs: Inputs;
  /** Metadata of model.safetensors.index.json besides total_size. */
  indexMetadata?: Record<string, unknown>;
  /** Writes config.json, tokenizer files and the like into `dir`, the work directory that
   * becomes `outDir` (absolute). */
  sideFiles: (dir: string, outDir: string) => Promise<void>;
}

export interface WrittenModel {
  outDir: string;
  shards: string[];
  tensors: number;
  bytes: number;
}

/** Writes `tensors` (in write order) from the input `files` into outDir. */
export async function writeModel(outDir: string, files: string[], tensors: JobTensor[], options: WriteModelOptions): Promise<WrittenModel> {
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  const limit = options.outShardSize ?? 5e9;
  if (!Number.isFinite(limit)) throw new RangeError('outShardSize must be a number of bytes');
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError('seed must be a non-negative integer');

  const sizes = tensors.map((t) => tensorBytes(t.shape, t.outDtype));
  const shards = shardTensors(tensors.map((_, i) => i), sizes, limit);
  const names = shards.map((_, i) => shardName(i, shards.length));
  const claim = await claimOutput(outDir, { command: options.command, overwrite: options.overwrite, inputs: options.inputs });
  const temp = claim.workDir;
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
    await options.sideFiles(temp, claim.outDir);
    if (signal?.aborted) throw abortError(signal);
    await claim.commit();
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw abortError(signal);
    throw e;
  } finally {
    abort.release();
    await claim.release();
  }
  return { outDir: claim.outDir, shards: names, tensors: tensors.length, bytes: sizes.reduce((a, b) => a + b, 0) };
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
