// Reading small JSON files (configs, indexes) with errors that name the file.
import { readFile } from 'node:fs/promises';

import { FormatError } from '../errors.js';

/** Parses a JSON object from `path`. With `optional`, a missing file gives null. */
export async function readJsonObject(path: string, options: { optional?: boolean } = {}): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (options.optional && (e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new FormatError(path, `cannot read: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FormatError(path, `is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError(path, 'is not a JSON object');
  return json as Record<string, unknown>;
}
