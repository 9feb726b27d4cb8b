// safetensors: an 8-byte little-endian header length, a JSON header, then the tensor data.
// Only the header is read here; data stays on disk and is memory-mapped by the engine.
// Every field is checked against the file: a header is untrusted input.
import { open } from 'node:fs/promises';

import { FormatError } from '../errors.js';

/** Bytes per element of the safetensors dtypes. */
export const DTYPE_SIZES: Readonly<Record<string, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
};

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  offset: number;
  bytes: number;
}

export interface SafetensorsHeader {
  path: string;
  fileSize: number;
  /** Offset of the data buffer (8 + header length). */
  dataStart: number;
  metadata: Record<string, string>;
  tensors: Map<string, TensorInfo>;
}

const MAX_HEADER_BYTES = 100 * 1024 * 1024;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads and validates the header of one safetensors file. */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    throw new FormatError(path, `cannot open: ${(e as Error).message}`);
  }
  try {
    const { size: fileSize } = await handle.stat();
    if (fileSize < 8) throw new FormatError(path, `file is ${fileSize} bytes, too short for a safetensors header`);
    const lengthBytes = Buffer.alloc(8);
    await handle.read(lengthBytes, 0, 8, 0);
    const headerLength = lengthBytes.readBigUInt64LE(0);
    if (headerLength > BigInt(fileSize - 8))
      throw new FormatError(path, `header length ${headerLength} runs past the end of the file (${fileSize} bytes)`);
    if (headerLength > BigInt(MAX_HEADER_BYTES))
      throw new FormatError(path, `header length ${headerLength} is larger than the ${MAX_HEADER_BYTES}-byte limit`);
    if (headerLength < 2n) throw new FormatError(path, `header length ${headerLength} is too small for a JSON object`);
    const n = Number(headerLength);
    const headerBytes = Buffer.alloc(n);
    const { bytesRead } = await handle.read(headerBytes, 0, n, 8);
    if (bytesRead !== n) throw new FormatError(path, `file ended while reading the ${n}-byte header`);
    return parseHeader(path, fileSize, headerBytes);
  } finally {
    await handle.close();
  }
}

/** Validates a header's JSON against the size of its file. */
export function parseHeader(path: string, fileSize: number, headerBytes: Uint8Array): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new FormatError(path, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FormatError(path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (!isRecord(json)) throw new FormatError(path, 'header is not a JSON object');

  const dataStart = 8 + headerBytes.length;
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isRecord(entry)) throw new FormatError(path, '__metadata__ is not an object');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw new FormatError(path, `__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (!isRecord(entry)) throw new FormatError(path, 'entry is not an object', name);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_SIZES))
      throw new FormatError(path, `unknown dtype ${JSON.stringify(dtype)}`, name);
    if (!Array.isArray(shape) || shape.length > 8 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw new FormatError(path, `shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    )
      throw new FormatError(path, `data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`, name);
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw new FormatError(path, `data_offsets [${begin}, ${end}] end before they begin`, name);
    if (end > dataSize)
      throw new FormatError(
        path,
        `data_offsets [${begin}, ${end}] run past the end of the data (${dataSize} bytes; the file may be truncated)`,
        name,
      );
    const elements = (shape as number[]).reduce((a, d) => a * BigInt(d), 1n);
    const want = elements * BigInt(DTYPE_SIZES[dtype]!);
    if (want !== BigInt(end - begin))
      throw new FormatError(
        path,
        `data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape ${JSON.stringify(shape)} of ${dtype} needs ${want}`,
        name,
      );
    tensors.set(name, { name, dtype, shape: shape as number[], offset: dataStart + begin, bytes: end - begin });
  }

  // The tensors must tile the data buffer exactly, as the safetensors format requires: no
  // overlaps, no holes, nothing after the last tensor. A header whose length field lies,
  // a truncated file and trailing bytes all fail here.
  const sorted = [...tensors.values()].sort((a, b) => a.offset - b.offset || a.bytes - b.bytes);
  let expected = dataStart;
  for (const t of sorted) {
    if (t.offset < expected) throw new FormatError(path, `data overlaps the tensor before it`, t.name);
    if (t.offset > expected) throw new FormatError(path, `data starts at byte ${t.offset - dataStart} of the buffer, leaving a gap after byte ${expected - dataStart}`, t.name);
    expected = t.offset + t.bytes;
  }
  if (expected !== fileSize)
    throw new FormatError(path, `the tensors cover ${expected - dataStart} bytes of data but the file holds ${dataSize} after the header`);
  return { path, fileSize, dataStart, metadata, tensors };
}
