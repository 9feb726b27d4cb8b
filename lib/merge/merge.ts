// merge(): a mergekit configuration executed to disk. The plan and the file layout are
// worked out here from headers alone; the native executor streams each output tensor from
// the mapped inputs into its shard. Everything is written to a work directory beside the
// output that moves into its place only when complete (see ../formats/output.ts).
import { copyFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { stringify } from 'yaml';

import { abortError } from '../errors.js';
import { readJsonObject } from '../formats/json.js';
import { sortedJson, writeModel, type JobTensor, type WrittenModel } from '../formats/model-writer.js';
import { loadMergeConfig, MergeConfigError, modelDir, type MergeConfig, type ParsedMergeConfig } from './config.js';
import { planMerge, type MergePlan, type PlannedTensor } from './plan.js';

export interface MergeOptions {
  /** Called with bytes written so far and in all. */
  onProgress?: (progress: { written: number; total: number }) => void;
  signal?: AbortSignal;
  /** Shard size limit in bytes (default 5e9, as mergekit). */
  outShardSize?: number;
  /** Seed of the random sparsification (dare_*); default 0. */
  seed?: number;
  /** Replace an existing output directory (never a file, the home or working directory, an
   * input model, the configuration file or a directory that holds one). */
  overwrite?: boolean;
  /** Directory that relative model paths are resolved from (default: the working directory). */
  baseDir?: string;
}

export type MergeResult = WrittenModel;

/** Output tensors in mergekit's write order: by label, ties in plan order. */
export function writeOrder(tensors: PlannedTensor[]): number[] {
  return tensors.map((_, i) => i).sort((a, b) => (tensors[a]!.label < tensors[b]!.label ? -1 : tensors[a]!.label > tensors[b]!.label ? 1 : a - b));
}

export const TOKENIZER_FILES = ['tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer.model', 'added_tokens.json', 'merges.txt', 'chat_template.jinja', 'generation_config.json', 'chat_template.json'];

/** The directory the tokenizer files are copied from. */
function tokenizerSource(plan: MergePlan, parsed: ParsedMergeConfig): string {
  const { config, baseDir } = parsed;
  return config.tokenizer_source && config.tokenizer_source !== 'base' ? modelDir(config.tokenizer_source, baseDir) : plan.models[plan.donor]!.dir;
}

async function writeTokenizer(plan: MergePlan, parsed: ParsedMergeConfig, dir: string): Promise<void> {
  const { config } = parsed;
  const source = tokenizerSource(plan, parsed);
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
  const parsed = await loadMergeConfig(config, options.baseDir ? { baseDir: options.baseDir } : {});
  const plan = await planMerge(parsed);

  // Input files of every model, as one list; output tensors in mergekit's write order.
  const files: string[] = [];
  const fileIndex = plan.models.map((m) => m.checkpoint.files.map((f) => files.push(f.path) - 1));
  const tensors: JobTensor[] = writeOrder(plan.tensors).map((i) => {
    const t = plan.tensors[i]!;
    return {
      name: t.name,
      method: plan.method.native,
      outDtype: t.outDtype,
      ...(t.workDtype ? { workDtype: t.workDtype } : {}),
      shape: t.shape,
      inputs: t.inputs.map((input) => ({
        file: fileIndex[input.model]![input.tensor.file]!,
        offset: input.tensor.offset,
        dtype: input.tensor.dtype,
        shape: input.tensor.shape,
        ...input.params,
      })),
      base: t.base,
      t: t.params['t'],
      normalize: (t.params['normalize'] ?? 0) !== 0,
      rescale: (t.params['rescale'] ?? 0) !== 0,
      lambda: t.params['lambda'] ?? 1,
      sparsify: plan.method.sparsify,
      consensus: plan.method.consensus,
      filterWise: (t.params['filter_wise'] ?? 0) !== 0,
    };
  });
  return writeModel(outDir, files, tensors, {
    ...options,
    command: 'merge',
    inputs: { models: [...plan.models.map((m) => m.dir), tokenizerSource(plan, parsed)], files: parsed.path ? [parsed.path] : [] },
    indexMetadata: { mergekit_version: '0.1.4' },
    sideFiles: async (dir, out) => {
      await writeFile(join(dir, 'config.json'), sortedJson(plan.outConfig));
      await writeTokenizer(plan, parsed, dir);
      await writeFile(join(dir, 'mergekit_config.yml'), parsed.text);
      await writeFile(join(dir, 'README.md'), modelCard(plan, parsed, out));
    },
  });
}
