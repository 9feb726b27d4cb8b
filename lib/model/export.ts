// exportModel: a model directory rewritten as a plain Hugging Face checkpoint in one float
// dtype. EXL2 layers are dequantized exactly as the format defines (native code); other
// tensors are converted. Used to merge or fine-tune from a quant, and to check a quant
// from outside.
import { copyFile, readdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

import { FormatError } from '../errors.js';
import { exl2DtypeProblem, type Exl2Tensors } from '../formats/exl2.js';
import { readJsonObject } from '../formats/json.js';
import { sortedJson, writeModel, type JobTensor, type WrittenModel } from '../formats/model-writer.js';
import type { OutputDtype } from '../formats/safetensors-write.js';
import { expectedShapes } from './architecture.js';
import { readCheckpoint } from './checkpoint.js';
import { readConfig } from './config.js';

export interface ExportOptions {
  dtype?: 'float16' | 'bfloat16' | 'float32';
  onProgress?: (progress: { written: number; total: number }) => void;
  signal?: AbortSignal;
  outShardSize?: number;
  overwrite?: boolean;
}

const DTYPES: Record<string, OutputDtype> = { float16: 'F16', bfloat16: 'BF16', float32: 'F32' };
const EXL2_PARTS = ['q_weight', 'q_invperm', 'q_scale', 'q_scale_max', 'q_groups'] as const satisfies readonly (keyof Exl2Tensors)[];
const ROLE_OF: Record<string, keyof ReturnType<typeof expectedShapes>> = {
  'self_attn.q_proj': 'q', 'self_attn.k_proj': 'k', 'self_attn.v_proj': 'v', 'self_attn.o_proj': 'o',
  'mlp.gate_proj': 'gate', 'mlp.up_proj': 'up', 'mlp.down_proj': 'down', lm_head: 'lmHead',
};

export async function exportModel(dir: string, outDir: string, options: ExportOptions = {}): Promise<WrittenModel> {
  const dtypeName: unknown = options.dtype ?? 'float16';
  const dtype = typeof dtypeName === 'string' && Object.hasOwn(DTYPES, dtypeName) ? DTYPES[dtypeName] : undefined;
  if (!dtype) throw new RangeError(`dtype must be float16, bfloat16 or float32 (got ${String(options.dtype)})`);
  dir = resolve(dir);
  const config = await readConfig(dir);
  const checkpoint = await readCheckpoint(dir, { scanAll: config.quantization?.method === 'exl2' });
  const shapes = expectedShapes(config);
  const tensors: JobTensor[] = [];
  const input = (name: string, exl2Part?: keyof Exl2Tensors) => {
    const t = checkpoint.tensors.get(name);
    if (!t) throw new FormatError(dir, `is missing tensor '${name}'`);
    const problem = exl2Part && exl2DtypeProblem(exl2Part, t.dtype);
    if (problem) throw new FormatError(checkpoint.files[t.file]!.path, problem, name);
    return { file: t.file, offset: t.offset, dtype: t.dtype, shape: t.shape };
  };
  for (const name of [...checkpoint.tensors.keys()].sort()) {
    const t = checkpoint.tensors.get(name)!;
    const part = /^(.*)\.(q_weight|q_invperm|q_scale|q_scale_max|q_groups)$/.exec(name);
    if (part) {
      if (part[2] !== 'q_weight') continue;
      const key = part[1]!;
      const local = key.replace(/^model\.layers\.\d+\./, '');
      const role = Object.hasOwn(ROLE_OF, local) ? ROLE_OF[local] : undefined;
      if (!role) throw new FormatError(checkpoint.files[t.file]!.path, 'is an EXL2 layer laminate does not know the shape of', name);
      tensors.push({ name: `${key}.weight`, outDtype: dtype, shape: shapes[role], method: 5, inputs: EXL2_PARTS.map((p) => input(`${key}.${p}`, p)) });
    } else {
      if (!['F32', 'F16', 'BF16'].includes(t.dtype)) throw new FormatError(checkpoint.files[t.file]!.path, `dtype ${t.dtype} cannot be exported`, name);
      tensors.push({ name, outDtype: dtype, shape: t.shape, method: 0, inputs: [input(name)] });
    }
  }
  const raw = (await readJsonObject(join(dir, 'config.json')))!;
  delete raw['quantization_config'];
  raw['torch_dtype'] = options.dtype ?? 'float16';
  return writeModel(outDir, checkpoint.files.map((f) => f.path), tensors, {
    ...options,
    command: 'export',
    inputs: { models: [dir] },
    sideFiles: async (out, final) => {
      await writeFile(join(out, 'config.json'), sortedJson(raw));
      // tokenizer and other small files, as ExLlamaV2 copies them (no weights, no stale index,
      // nor the lock of an output written inside the model directory)
      const claimed = dirname(final) === dir ? `.${basename(final)}.` : null;
      for (const f of await readdir(dir)) {
        if (f === 'config.json' || f.endsWith('.safetensors') || f.endsWith('.bin') || f.endsWith('.index.json') || (claimed && f.startsWith(claimed))) continue;
        await copyFile(join(dir, f), join(out, f)).catch(() => undefined);
      }
    },
  });
}
