// merge(): a mergekit configuration executed to disk. The plan and the file layout are
// worked out here from headers alone; the native executor streams each output tensor from
// the mapped inputs into its shard. Everything is written to a temporary directory that is
// renamed to the output only when complete.
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

import { stringify } from 'yaml';

import { abortError } from '../errors.js';
import { readJsonObject } from '../formats/json.js';
import { abortFlag, native } from '../native.js';
import { loadMergeConfig, MergeConfigError, modelDir, type MergeConfig, type ParsedMergeConfig } from './config.js';
import { shardHeader, shardName, shardTensors, tensorBytes } from '../formats/safetensors-write.js';
import { planMerge, type MergePlan, type PlannedTensor } from './plan.js';

export interface MergeOptions {
  /** Called with bytes written so far and in all. */
  onProgress?: (progress: { written: number; total: number }) => void;
  signal?: AbortSignal;
  /** Shard size limit in bytes (default 5e9, as mergekit). */
  outShardSize?: number;
  /** Seed of the random sparsification (dare_*); default 0. */
  seed?: number;
  /** Replace an existing output directory. */
  overwrite?: boolean;
  /** Directory that relative model paths are resolved from (default: the working directory). */
  baseDir?: string;
}

export interface MergeResult {
  outDir: string;
  shards: string[];
  tensors: number;
  bytes: number;
}

const bytesOf = (t: PlannedTensor) => tensorBytes(t.shape, t.outDtype);

/** Output tensors in mergekit's write order: by label, ties in plan order. */
export function writeOrder(tensors: PlannedTensor[]): number[] {
  return tensors.map((_, i) => i).sort((a, b) => (tensors[a]!.label < tensors[b]!.label ? -1 : tensors[a]!.label > tensors[b]!.label ? 1 : a - b));
}

function sortedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (typeof value === 'object' && value !== null)
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortedKeys((value as Record<string, unknown>)[k])]));
  return value;
}

const TOKENIZER_FILES = ['tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer.model', 'added_tokens.json', 'merges.txt', 'chat_template.jinja', 'generation_config.json', 'chat_template.json'];

async function writeTokenizer(plan: MergePlan, parsed: ParsedMergeConfig, dir: string): Promise<void> {
  const { config, baseDir } = parsed;
  const source = config.tokenizer_source && config.tokenizer_source !== 'base' ? modelDir(config.tokenizer_source, baseDir) : plan.models[plan.donor]!.dir;
  for (const file of TOKENIZER_FILES) await copyFile(join(source, file), join(dir, file)).catch(() => undefined);
  const template = config.chat_template;
  if (template === undefined || template === 'auto') return;
  if (!template.includes('{') || template.length < 20)
    throw new MergeConfigError(`chat_template '${template}': named templates are not bundled; give the Jinja text`);
  const path = join(dir, 'tokenizer_config.json');
  const tokenizerConfig = (await readJsonObject(path, { optional: true })) ?? {};
  tokenizerConfig['chat_template'] = template;
  await writeFile(path, `${JSON.stringify(tokenizerConfig, null, 2)}\n`);
}

const looksLikeHubId = (ref: string) => !ref.startsWith('/') && !ref.startsWith('~') && !ref.startsWith('.') && ref.split('/').length <= 2;

function modelCard(plan: MergePlan, parsed: ParsedMergeConfig, outDir: string): string {
  const { config } = parsed;
  const link = (ref: string) => (looksLikeHubId(ref) ? `[${ref}](https://huggingface.co/${ref})` : ref);
  const hub = plan.models.map((m) => m.ref).filter(looksLikeHubId);
  const front = stringify({ base_model: hub, library_name: 'transformers', tags: ['mergekit', 'merge'] }, { sortMapEntries: true, indentSeq: false });
  const method = plan.method.url ? `[${plan.method.pretty}](${plan.method.url})` : plan.method.pretty;
  const baseRef = config.base_model;
  const base = baseRef !== undefined && plan.method.name !== 'slerp' ? ` using ${link(baseRef)} as a base` : '';
  const merged = plan.models.filter((m) => plan.method.name === 'slerp' || m.ref !== baseRef).map((m) => `* ${link(m.ref)}`);
  return `---
${front}
---
# ${basename(outDir)}

This is a merge of pre-trained language models made with [laminate](https://www.npmjs.com/package/laminate) from a [mergekit](https://github.com/cg123/mergekit) configuration.

## Merge Details
### Merge Method

This model was merged using the ${method} merge method${base}.

### Models Merged

The following models were included in the merge:
${merged.join('\n')}

### Configuration

The following YAML configuration was used to produce this model:

\`\`\`yaml
${parsed.text}
\`\`\`
`;
}

/** Merges models as a mergekit configuration says (YAML text, a .yml path, or the object)
 * and writes the result to outDir. */
export async function merge(config: string | MergeConfig, outDir: string, options: MergeOptions = {}): Promise<MergeResult> {
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  const limit = options.outShardSize ?? 5e9;
  if (!Number.isFinite(limit)) throw new RangeError('outShardSize must be a number of bytes');
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError('seed must be a non-negative integer');
  outDir = resolve(outDir);
  const exists = await stat(outDir).then(() => true, () => false);
  if (exists && !options.overwrite && (await readdir(outDir)).length > 0) throw new Error(`${outDir} already exists and is not empty (pass overwrite: true to replace it)`);

  const parsed = await loadMergeConfig(config, options.baseDir ? { baseDir: options.baseDir } : {});
  const plan = await planMerge(parsed);
  const tensors = plan.tensors;
  const sizes = tensors.map(bytesOf);
  const shards = shardTensors(writeOrder(tensors), sizes, limit);
  const names = shards.map((_, i) => shardName(i, shards.length));

  // Input files of every model, as one list.
  const files: string[] = [];
  const fileIndex = plan.models.map((m) => m.checkpoint.files.map((f) => files.push(f.path) - 1));
  const sparsify = plan.method.sparsify;
  const nativeTensors = tensors.map((t) => ({
    name: t.name,
    method: plan.method.native,
    outDtype: t.outDtype,
    ...(t.workDtype ? { workDtype: t.workDtype } : {}),
    shape: t.shape,
    inputs: t.inputs.map((i) => ({
      file: fileIndex[i.model]![i.tensor.file]!,
      offset: i.tensor.offset,
      dtype: i.tensor.dtype,
      shape: i.tensor.shape,
      ...i.params,
    })),
    base: t.base,
    t: t.params['t'],
    normalize: (t.params['normalize'] ?? 0) !== 0,
    rescale: (t.params['rescale'] ?? 0) !== 0,
    lambda: t.params['lambda'] ?? 1,
    sparsify,
    consensus: plan.method.consensus,
    filterWise: (t.params['filter_wise'] ?? 0) !== 0,
  }));

  const temp = join(dirname(outDir), `.${basename(outDir)}.partial-${randomBytes(4).toString('hex')}`);
  await mkdir(temp, { recursive: true });
  const abort = abortFlag(signal);
  try {
    const shardSpecs = shards.map((members, i) => {
      const { header, order } = shardHeader(members.map((i) => ({ name: tensors[i]!.name, dtype: tensors[i]!.outDtype, shape: tensors[i]!.shape })));
      return { path: join(temp, names[i]!), header, tensors: order.map((j) => members[j]!) };
    });
    await native().runMerge({ files, tensors: nativeTensors, shards: shardSpecs, seed }, options.onProgress ? (written, total) => options.onProgress!({ written, total }) : undefined, abort.flag);

    if (shards.length > 1) {
      // in write order, as mergekit lists it
      const weightMap: Record<string, string> = {};
      shards.forEach((members, i) => members.forEach((t) => (weightMap[tensors[t]!.name] = names[i]!)));
      const index = { metadata: { total_size: sizes.reduce((a, b) => a + b, 0), mergekit_version: '0.1.4' }, weight_map: weightMap };
      await writeFile(join(temp, 'model.safetensors.index.json'), JSON.stringify(index, null, 2));
    }
    await writeFile(join(temp, 'config.json'), `${JSON.stringify(sortedKeys(plan.outConfig), null, 2)}\n`);
    await writeTokenizer(plan, parsed, temp);
    await writeFile(join(temp, 'mergekit_config.yml'), parsed.text);
    await writeFile(join(temp, 'README.md'), modelCard(plan, parsed, outDir));
    if (signal?.aborted) throw abortError(signal);
    if (exists) await rm(outDir, { recursive: true, force: true });
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
