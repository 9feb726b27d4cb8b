// A checkpoint directory's weights: model.safetensors, or shards listed by
// model.safetensors.index.json. Reads every header and builds one table of tensors.
import { readdir } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { FormatError } from '../errors.js';
import { readJsonObject } from '../formats/json.js';
import { readSafetensorsHeader, type SafetensorsHeader, type TensorInfo } from '../formats/safetensors.js';

export interface CheckpointTensor extends TensorInfo {
  /** Index into Checkpoint.files. */
  file: number;
}

export interface Checkpoint {
  dir: string;
  files: SafetensorsHeader[];
  tensors: Map<string, CheckpointTensor>;
  /** Sum of the sizes of the weight files. */
  bytes: number;
}

const INDEX = 'model.safetensors.index.json';
const SINGLE = 'model.safetensors';

async function shardNamesFromIndex(dir: string): Promise<{ files: string[]; weightMap: Map<string, string> } | null> {
  const path = join(dir, INDEX);
  const json = await readJsonObject(path, { optional: true });
  if (!json) return null;
  const map = json['weight_map'];
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new FormatError(path, 'has no weight_map object');
  const weightMap = new Map<string, string>();
  for (const [tensor, file] of Object.entries(map)) {
    if (typeof file !== 'string' || file === '' || basename(file) !== file || file === '.' || file === '..')
      throw new FormatError(path, `weight_map gives ${JSON.stringify(file)}, which is not a file name in this directory`, tensor);
    weightMap.set(tensor, file);
  }
  return { files: [...new Set(weightMap.values())].sort(), weightMap };
}

/**
 * Finds the weight files of a Hugging Face directory and reads their headers. With
 * `scanAll` (EXL2 directories) every *.safetensors file is read and an index json, which
 * ExLlamaV2 copies over from the source model unchanged, is ignored; an index that names
 * files the directory does not have is ignored the same way.
 */
export async function readCheckpoint(dir: string, options: { scanAll?: boolean } = {}): Promise<Checkpoint> {
  let index = options.scanAll ? null : await shardNamesFromIndex(dir);
  if (index) {
    const present = await readdir(dir).catch(() => [] as string[]);
    if (!index.files.every((f) => present.includes(f)) && present.some((f) => f.endsWith('.safetensors') && !index!.files.includes(f))) index = null;
  }
  let names: string[];
  if (index) {
    names = index.files;
  } else {
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch (e) {
      throw new FormatError(dir, `cannot read directory: ${(e as Error).message}`);
    }
    if (entries.includes(SINGLE)) names = [SINGLE];
    else {
      names = entries.filter((n) => n.endsWith('.safetensors')).sort();
      if (names.length === 0) {
        const pickled = entries.some((n) => n.endsWith('.bin') || n.endsWith('.pt'));
        throw new FormatError(
          dir,
          pickled
            ? 'holds only pickled PyTorch weights; laminate reads safetensors (convert the checkpoint first)'
            : `has no ${SINGLE}, ${INDEX} or other *.safetensors file`,
        );
      }
    }
  }

  const files = await Promise.all(names.map((n) => readSafetensorsHeader(join(dir, n))));
  const tensors = new Map<string, CheckpointTensor>();
  files.forEach((header, file) => {
    for (const t of header.tensors.values()) {
      if (index && index.weightMap.get(t.name) !== names[file]) continue;
      const other = tensors.get(t.name);
      if (other) throw new FormatError(header.path, `also stored in ${files[other.file]!.path}`, t.name);
      tensors.set(t.name, { ...t, file });
    }
  });
  if (index) {
    for (const [tensor, file] of index.weightMap) {
      if (!tensors.has(tensor))
        throw new FormatError(join(dir, file), `is listed in ${INDEX} but missing from the file`, tensor);
    }
  }
  return { dir, files, tensors, bytes: files.reduce((a, f) => a + f.fileSize, 0) };
}
