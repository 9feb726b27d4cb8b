// The quantizer's files: one safetensors file per quantized layer while the job runs, and
// at the end the model directory as ExLlamaV2's converter writes it (output shards in model
// order, fp16 embeddings and norms, config.json with quantization_config, the source's
// tokenizer and other side files).
import { copyFile, open, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { abortError } from '../errors.js';
import { packExl2, type Exl2Codes, type Exl2Width } from '../formats/exl2.js';
import { fromFloat16Bits, toFloat16Bits } from '../formats/float16.js';
import { shardHeader, shardTensors, tensorBytes } from '../formats/safetensors-write.js';
import { readSafetensorsHeader } from '../formats/safetensors.js';
import type { ModelSource } from '../model/load.js';
import type { NativeQuantizedLinear } from '../native.js';

type Dtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'I16';

export interface DataTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  data: ArrayBufferView;
}

/** Writes tensors held in memory to one safetensors file. */
export async function writeSafetensors(path: string, tensors: DataTensor[]): Promise<void> {
  const { header, order } = shardHeader(tensors);
  const f = await open(path, 'w');
  try {
    await f.write(header);
    for (const i of order) {
      const d = tensors[i]!.data;
      await f.write(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
    await f.sync();
  } finally {
    await f.close();
  }
}

/** The stored tensors of a quantized linear `<key>.q_*` (and its bias as fp16 bits, padded to 32 columns). */
export function exl2Tensors(key: string, q: NativeQuantizedLinear, bias?: Uint16Array): DataTensor[] {
  const groups = [];
  for (let i = 0; i < q.groups.length; i += 2) groups.push({ bits: q.groups[i] as Exl2Width, rows: q.groups[i + 1]! });
  const codes: Exl2Codes = {
    inFeatures: q.inFeatures,
    outFeatures: q.outFeatures,
    groups,
    perm: q.perm,
    codes: q.codes,
    scaleCodes: q.scaleCodes,
    scaleMax: Float64Array.from(q.scaleMax, fromFloat16Bits),
  };
  const t = packExl2(codes);
  const out: DataTensor[] = [
    { name: `${key}.q_weight`, dtype: 'I32', shape: t.q_weight.shape, data: t.q_weight.data },
    { name: `${key}.q_invperm`, dtype: 'I32', shape: t.q_invperm.shape, data: t.q_invperm.data },
    { name: `${key}.q_scale`, dtype: 'I32', shape: t.q_scale.shape, data: t.q_scale.data },
    { name: `${key}.q_scale_max`, dtype: 'F16', shape: t.q_scale_max.shape, data: t.q_scale_max.data },
    { name: `${key}.q_groups`, dtype: 'I16', shape: t.q_groups.shape, data: t.q_groups.data },
  ];
  if (bias) {
    const np = t.q_weight.shape[1];
    const b = new Uint16Array(np);
    b.set(bias);
    out.push({ name: `${key}.bias`, dtype: 'F16', shape: [np], data: b });
  }
  return out;
}

/** A source tensor's values as fp16 bits (from F32, F16 or BF16). */
export async function readAsFloat16(source: ModelSource, name: string): Promise<{ shape: number[]; data: Uint16Array }> {
  const t = source.checkpoint.tensors.get(name);
  if (!t) throw new Error(`${source.dir}: tensor '${name}' is missing`);
  const f = await open(source.checkpoint.files[t.file]!.path, 'r');
  const raw = Buffer.alloc(t.bytes);
  try {
    await f.read(raw, 0, t.bytes, t.offset);
  } finally {
    await f.close();
  }
  const n = t.bytes / (t.dtype === 'F32' ? 4 : 2);
  const out = new Uint16Array(n);
  if (t.dtype === 'F16') raw.copy(Buffer.from(out.buffer));
  else if (t.dtype === 'F32') for (let i = 0; i < n; i++) out[i] = toFloat16Bits(raw.readFloatLE(i * 4));
  else {
    const word = new Uint32Array(1), f32 = new Float32Array(word.buffer);
    for (let i = 0; i < n; i++) {
      word[0] = raw.readUInt16LE(i * 2) << 16;
      out[i] = toFloat16Bits(f32[0]!);
    }
  }
  return { shape: t.shape, data: out };
}

/** A tensor of the output: from a layer file of the job, or a source tensor turned fp16. */
export type OutputTensor =
  | { name: string; dtype: Dtype; shape: number[]; file: string; offset: number; bytes: number }
  | { name: string; dtype: 'F16'; shape: number[]; source: string };

/** The tensors of a file the job wrote, as output entries. */
export async function fileTensors(path: string): Promise<OutputTensor[]> {
  const h = await readSafetensorsHeader(path);
  return [...h.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype as Dtype, shape: t.shape, file: path, offset: t.offset, bytes: t.bytes }));
}

const outputName = (i: number, n: number) => (n === 1 ? 'output.safetensors' : `output-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`);

/** Writes the output shards (tensors in model order, a new shard past shardBytes) into dir. */
export async function writeShards(dir: string, source: ModelSource, tensors: OutputTensor[], shardBytes: number, onProgress: (done: number, total: number) => void, signal?: AbortSignal): Promise<string[]> {
  const sizes = tensors.map((t) => tensorBytes(t.shape, t.dtype));
  const total = sizes.reduce((a, b) => a + b, 0);
  const shards = shardTensors(tensors.map((_, i) => i), sizes, shardBytes);
  const names: string[] = [];
  let done = 0;
  for (const [s, members] of shards.entries()) {
    const name = outputName(s, shards.length);
    names.push(name);
    const { header, order } = shardHeader(members.map((i) => tensors[i]!));
    const f = await open(join(dir, name), 'w');
    try {
      await f.write(header);
      for (const j of order) {
        if (signal?.aborted) throw abortError(signal);
        const t = tensors[members[j]!]!;
        let bytes: Uint8Array;
        if ('source' in t) {
          const d = (await readAsFloat16(source, t.source)).data;
          bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
        } else {
          const src = await open(t.file, 'r');
          try {
            bytes = Buffer.alloc(t.bytes);
            await src.read(bytes, 0, t.bytes, t.offset);
          } finally {
            await src.close();
          }
        }
        await f.write(bytes);
        done += bytes.byteLength;
        onProgress(done, total);
      }
      await f.sync();
    } finally {
      await f.close();
    }
  }
  return names;
}

/**
 * Copies the source's side files (tokenizer, generation config, license, ...: every regular
 * file except weights, index files and config.json) and writes config.json with its
 * quantization_config, 4-space indented as ExLlamaV2 writes it.
 */
export async function writeSideFiles(dir: string, source: ModelSource, quantizationConfig: Record<string, unknown>, extra: Record<string, string>): Promise<void> {
  const from = source.tokenizerDir;
  for (const name of await readdir(from)) {
    if (/\.(safetensors|bin|pt|pth|gguf)$/i.test(name) || name.endsWith('.index.json') || name === 'config.json' || name.startsWith('.')) continue;
    const s = await stat(join(from, name)).catch(() => null);
    if (s?.isFile()) await copyFile(join(from, name), join(dir, name));
  }
  const config = { ...source.rawConfig, quantization_config: quantizationConfig };
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 4)}\n`);
  for (const [name, text] of Object.entries(extra)) await writeFile(join(dir, name), text);
}
