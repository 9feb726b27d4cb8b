// Calibration data for the quantizer: the default set shipped in the package, or the
// user's text as JSON lines ({"text": ...} per line), plain text, or Parquet (ExLlamaV2's
// format); tokenized into rows of equal length.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, extname, join, resolve } from 'node:path';

import { packageRoot } from '../native.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';

/** The default calibration set (see the README: what it is and where it comes from). */
export const defaultCalibrationPath = join(packageRoot, 'calibration', 'default.jsonl');

export class CalibrationError extends Error {
  override name = 'CalibrationError';
}

export interface CalibrationText {
  /** One document per entry. */
  texts: string[];
  /** '(default)', or the file's name (as config.json's quantization_config records it). */
  dataset: string;
}

async function readJsonl(path: string, data: string): Promise<string[]> {
  const texts: string[] = [];
  data.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      throw new CalibrationError(`${path}: line ${i + 1} is not JSON`);
    }
    const text = typeof row === 'object' && row !== null ? (row as Record<string, unknown>)['text'] : undefined;
    if (typeof text !== 'string') throw new CalibrationError(`${path}: line ${i + 1} has no string field "text"`);
    texts.push(text);
  });
  return texts;
}

async function readParquet(path: string, bytes: Buffer): Promise<string[]> {
  const { parquetReadObjects } = await import('hyparquet');
  const { compressors } = await import('hyparquet-compressors');
  const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let rows: Record<string, unknown>[];
  try {
    rows = await parquetReadObjects({ file, compressors });
  } catch (e) {
    throw new CalibrationError(`${path}: not a readable Parquet file (${(e as Error).message})`);
  }
  // As ExLlamaV2: each row becomes the values of its columns joined by spaces.
  return rows.map((row) => Object.values(row).filter((v) => v !== null && v !== undefined).map(String).join(' '));
}

/** Reads calibration text: the default set, or a .jsonl, .txt or .parquet file. */
export async function readCalibration(path?: string): Promise<CalibrationText> {
  const file = resolve(path ?? defaultCalibrationPath);
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new CalibrationError(`calibration: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const ext = extname(file).toLowerCase();
  let texts: string[];
  if (ext === '.parquet') texts = await readParquet(file, bytes);
  else if (ext === '.jsonl' || ext === '.json') texts = await readJsonl(file, bytes.toString('utf8'));
  else if (ext === '.txt' || ext === '.text' || ext === '') texts = bytes.toString('utf8').split(/\n\s*\n/);
  else throw new CalibrationError(`calibration: ${file} is not .jsonl, .txt or .parquet`);
  texts = texts.filter((t) => t.trim() !== '');
  if (texts.length === 0) throw new CalibrationError(`calibration: ${file} holds no text`);
  return { texts, dataset: path === undefined ? '(default)' : basename(file) };
}

export interface CalibrationRows {
  tokens: Int32Array;
  rows: number;
  length: number;
  /** sha256 of the token ids: what a resumed job checks it still has. */
  digest: string;
}

/**
 * Cuts the documents into `rows` rows of `length` tokens: each document tokenized with BOS
 * and followed by EOS, all of them one stream. Fewer rows when the text runs short; an error
 * when it holds less than one row.
 */
export async function calibrationRows(tokenizer: Tokenizer, text: CalibrationText, rows: number, length: number): Promise<CalibrationRows> {
  const want = rows * length;
  const stream: number[] = [];
  const eos = tokenizer.eosTokenIds[0];
  for (const t of text.texts) {
    if (stream.length >= want) break;
    for (const id of tokenizer.encode(t, { specialTokens: 'plain' })) stream.push(id);
    if (eos !== undefined) stream.push(eos);
    // long runs of tokenization give the event loop a turn
    await new Promise<void>((r) => setImmediate(r));
  }
  const have = Math.min(rows, Math.floor(stream.length / length));
  if (have < 1) throw new CalibrationError(`calibration: the text gives ${stream.length} tokens, fewer than one row of ${length}`);
  const tokens = Int32Array.from(stream.slice(0, have * length));
  return { tokens, rows: have, length, digest: createHash('sha256').update(new Uint8Array(tokens.buffer)).digest('hex') };
}
