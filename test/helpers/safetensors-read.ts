// Reads a safetensors file's tensors as raw bytes and float64 values (test-side reader,
// independent of lib/).
import { readFileSync } from 'node:fs';

import { decode, type DType } from './checkpoint.js';

export interface ReadTensor {
  dtype: string;
  shape: number[];
  bytes: Buffer;
  values: Float64Array;
}

export function readSafetensors(path: string): { header: Record<string, unknown>; headerLength: number; tensors: Map<string, ReadTensor> } {
  const file = readFileSync(path);
  const n = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const tensors = new Map<string, ReadTensor>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const bytes = file.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]);
    tensors.set(name, { dtype: e.dtype, shape: e.shape, bytes, values: decode(new Uint8Array(bytes), e.dtype as DType) });
  }
  return { header, headerLength: n, tensors };
}

/** Every tensor of a model directory (single file or shards). */
export function readModelTensors(dir: string, files: string[]): Map<string, ReadTensor> {
  const all = new Map<string, ReadTensor>();
  for (const f of files) for (const [k, v] of readSafetensors(`${dir}/${f}`).tensors) all.set(k, v);
  return all;
}
