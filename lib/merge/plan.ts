// The merge plan: every output tensor with its inputs (model, stored tensor), the
// method's parameters evaluated for it, and its place in mergekit's write order. Planning
// reads configs and safetensors headers only.
import { join } from 'node:path';

import { readJsonObject } from '../formats/json.js';
import { readCheckpoint, type Checkpoint, type CheckpointTensor } from '../model/checkpoint.js';
import { parseConfig, type ModelConfig } from '../model/config.js';
import { dtypeFromName, MergeConfigError, modelDir, type Parameters, type ParsedMergeConfig } from './config.js';
import { METHODS, type MethodSpec } from './methods.js';
import { lookup } from './parameters.js';

export interface MergeModel {
  ref: string;
  dir: string;
  config: ModelConfig;
  rawConfig: Record<string, unknown>;
  checkpoint: Checkpoint;
}

export interface PlannedInput {
  model: number;
  /** The stored tensor's name in that model. */
  name: string;
  tensor: CheckpointTensor;
  params: Record<string, number>;
}

export interface PlannedTensor {
  name: string;
  shape: number[];
  outDtype: 'F32' | 'F16' | 'BF16';
  workDtype?: 'F32' | 'F16' | 'BF16';
  inputs: PlannedInput[];
  /** Index of the base model's input, or -1. */
  base: number;
  params: Record<string, number>;
  /** mergekit's write-order key: the largest source tensor name. */
  label: string;
}

export interface MergePlan {
  method: MethodSpec;
  models: MergeModel[];
  /** Output tensors in plan order. */
  tensors: PlannedTensor[];
  /** The model whose config.json and tokenizer the output takes. */
  donor: number;
  /** For each output decoder layer: the model and source layer it reads (first source). */
  layers: { model: number; layer: number }[];
  outConfig: Record<string, unknown>;
}

// Tensor names of one decoder layer, in the order of mergekit's Llama/Mistral template.
const LAYER_TEMPLATE = [
  'input_layernorm.weight',
  'self_attn.q_proj.weight',
  'self_attn.k_proj.weight',
  'self_attn.v_proj.weight',
  'self_attn.o_proj.weight',
  'post_attention_layernorm.weight',
  'mlp.up_proj.weight',
  'mlp.gate_proj.weight',
  'mlp.down_proj.weight',
];

interface Source {
  model: number;
  start: number;
  parameters: Parameters | undefined;
}

interface Slice {
  sources: Source[];
  length: number;
  base: number | undefined;
  parameters: Parameters | undefined;
}

export async function planMerge(parsed: ParsedMergeConfig): Promise<MergePlan> {
  const { config, baseDir } = parsed;
  const method = METHODS.get(config.merge_method);
  if (!method) throw new MergeConfigError(`merge_method '${config.merge_method}' is not supported (${[...METHODS.keys()].join(', ')})`);

  // Every parameter must belong to the method, at a level where it means something.
  const checkNames = (p: Parameters | undefined, where: string, perModelOnly: boolean) => {
    for (const name of Object.keys(p ?? {})) {
      if (Object.hasOwn(method.perModel, name)) continue;
      if (Object.hasOwn(method.global, name)) {
        if (perModelOnly) throw new MergeConfigError(`${where}: '${name}' is a global parameter of ${method.name}; set it under the slice or top-level parameters`);
        continue;
      }
      const known = [...Object.keys(method.global), ...Object.keys(method.perModel)];
      throw new MergeConfigError(`${where}: ${method.name} has no parameter '${name}'${known.length ? ` (it takes ${known.join(', ')})` : ''}`);
    }
  };
  checkNames(config.parameters, 'parameters', false);

  // Models, in order of first mention.
  const refs: string[] = [];
  const indexOf = (ref: string) => {
    const dir = modelDir(ref, baseDir);
    let i = refs.findIndex((r) => modelDir(r, baseDir) === dir);
    if (i < 0) i = refs.push(ref) - 1;
    return i;
  };
  const slices: Slice[] = [];
  const globalBase = config.base_model !== undefined ? indexOf(config.base_model) : undefined;
  if (config.slices) {
    config.slices.forEach((s, i) => {
      checkNames(s.parameters, `slices[${i}].parameters`, false);
      s.sources.forEach((src, j) => checkNames(src.parameters, `slices[${i}].sources[${j}].parameters`, true));
      slices.push({
        sources: s.sources.map((src) => ({ model: indexOf(src.model), start: src.layer_range[0], parameters: src.parameters })),
        length: s.sources[0]!.layer_range[1] - s.sources[0]!.layer_range[0],
        base: s.base_model !== undefined ? indexOf(s.base_model) : globalBase,
        parameters: s.parameters,
      });
    });
  } else {
    const sources: Source[] = config.models!.map((m, j) => {
      checkNames(m.parameters, `models[${j}].parameters`, true);
      return { model: indexOf(m.model), start: 0, parameters: m.parameters };
    });
    if (globalBase !== undefined && !sources.some((s) => s.model === globalBase)) sources.push({ model: globalBase, start: 0, parameters: undefined });
    slices.push({ sources, length: -1, base: globalBase, parameters: undefined });
  }
  if (config.tokenizer_source && config.tokenizer_source !== 'base') indexOf(config.tokenizer_source);

  // Read every model's config and headers.
  const models: MergeModel[] = await Promise.all(
    refs.map(async (ref) => {
      const dir = modelDir(ref, baseDir);
      const file = join(dir, 'config.json');
      const rawConfig = (await readJsonObject(file))!;
      const modelConfig = parseConfig(rawConfig, file);
      if (modelConfig.attentionBias) throw new MergeConfigError(`${file}: attention biases are not supported by merges`);
      return { ref, dir, config: modelConfig, rawConfig, checkpoint: await readCheckpoint(dir) };
    }),
  );
  const first = models[0]!.config;
  for (const m of models.slice(1)) {
    const c = m.config;
    if (c.architecture !== first.architecture) throw new MergeConfigError(`${m.dir}: architecture ${c.architecture} does not fit ${models[0]!.dir} (${first.architecture})`);
    for (const key of ['hiddenSize', 'intermediateSize', 'numAttentionHeads', 'numKeyValueHeads', 'headDim'] as const)
      if (c[key] !== first[key]) throw new MergeConfigError(`${m.dir}: ${key} ${c[key]} does not fit ${models[0]!.dir} (${first[key]})`);
  }
  for (const s of slices) {
    if (s.length < 0) s.length = models[s.sources[0]!.model]!.config.numHiddenLayers;
    for (const src of s.sources) {
      const m = models[src.model]!;
      const end = src.start + s.length;
      if (end > m.config.numHiddenLayers)
        throw new MergeConfigError(`layer_range [${src.start}, ${end}] lies outside ${m.ref}, which has ${m.config.numHiddenLayers} layers`);
    }
  }

  // Method constraints per slice.
  slices.forEach((s, i) => {
    const where = config.slices ? `slices[${i}]` : 'models';
    if (method.name === 'passthrough' && s.sources.length !== 1) throw new MergeConfigError(`${where}: passthrough takes exactly one source per slice`);
    if (method.needsBase) {
      if (s.base === undefined) throw new MergeConfigError(`${where}: ${method.name} needs a base_model`);
      if (!s.sources.some((src) => src.model === s.base)) throw new MergeConfigError(`${where}: the base_model must be one of the inputs`);
      const others = s.sources.filter((src) => src.model !== s.base).length;
      if (others < method.minOthers) throw new MergeConfigError(`${where}: ${method.name} needs ${method.minOthers} model(s) besides the base`);
      if (method.name === 'slerp' && others !== 1) throw new MergeConfigError(`${where}: slerp merges exactly two models`);
    }
  });

  const workDtype = config.dtype ? dtypeFromName(config.dtype, 'dtype') : undefined;
  const outDtypeSetting = config.out_dtype ? dtypeFromName(config.out_dtype, 'out_dtype') : workDtype;

  const tensors: PlannedTensor[] = [];
  const resolve = (model: number, name: string, tied: string[], optional: boolean): CheckpointTensor | undefined => {
    const cp = models[model]!.checkpoint;
    for (const n of [name, ...tied]) {
      const t = cp.tensors.get(n);
      if (t) return t;
    }
    if (optional) return undefined;
    throw new MergeConfigError(`tensor ${name} is required but not present in model ${models[model]!.ref}`);
  };
  const plan = (outName: string, slice: Slice, inputName: (src: Source) => string, t: number, tied: string[] = [], optional = false) => {
    if (optional && !slice.sources.some((src) => models[src.model]!.checkpoint.tensors.has(inputName(src)))) return;
    const inputs: PlannedInput[] = slice.sources.map((src) => {
      const name = inputName(src);
      const tensor = resolve(src.model, name, tied, false)!;
      const params: Record<string, number> = {};
      for (const [p, spec] of Object.entries(method.perModel)) {
        const v = lookup([src.parameters, slice.parameters, config.parameters], p, name, t) ?? spec.default;
        if (v === undefined) {
          if (spec.required && src.model !== slice.base) throw new MergeConfigError(`missing required parameter ${p} for ${models[src.model]!.ref}.${name}`);
          continue;
        }
        params[p] = v;
      }
      return { model: src.model, name: tensor.name, tensor, params };
    });
    const params: Record<string, number> = {};
    for (const [p, spec] of Object.entries(method.global)) {
      const v = lookup([slice.parameters, config.parameters], p, outName, t) ?? spec.default;
      if (v === undefined) throw new MergeConfigError(`missing required parameter ${p} for ${outName}`);
      params[p] = v;
    }
    const shape = inputs[0]!.tensor.shape;
    for (const input of inputs) {
      if (input.tensor.shape.join() !== shape.join())
        throw new MergeConfigError(`${outName}: ${models[input.model]!.ref} has shape [${input.tensor.shape}] but ${models[inputs[0]!.model]!.ref} has [${shape}]`);
      if (!['F32', 'F16', 'BF16'].includes(input.tensor.dtype))
        throw new MergeConfigError(`${outName}: ${models[input.model]!.ref} stores ${input.tensor.dtype}, which merges do not read`);
    }
    const base = slice.base === undefined ? -1 : inputs.findIndex((i) => i.model === slice.base);
    const dtypes = new Set(inputs.map((i) => i.tensor.dtype));
    if (!workDtype && dtypes.size > 1 && method.name !== 'passthrough')
      throw new MergeConfigError(`${outName}: the inputs are stored as ${[...dtypes].join(' and ')}; set dtype: to merge them`);
    const stored = inputs[Math.max(0, base)]!.tensor.dtype as PlannedTensor['outDtype'];
    tensors.push({
      name: outName,
      shape,
      outDtype: outDtypeSetting ?? stored,
      ...(workDtype ? { workDtype } : {}),
      inputs,
      base,
      params,
      label: inputs.map((i) => i.name).reduce((a, b) => (b > a ? b : a)),
    });
  };

  // Plan order: embedding (first slice), layers slice by slice, final norm and head (last slice).
  const firstSlice = slices[0]!;
  const lastSlice = slices[slices.length - 1]!;
  plan('model.embed_tokens.weight', firstSlice, () => 'model.embed_tokens.weight', 0);
  const layers: { model: number; layer: number }[] = [];
  for (const s of slices) {
    for (let i = 0; i < s.length; i++) {
      const out = layers.length;
      const t = s.length === 1 ? 1 : i / (s.length - 1);
      for (const w of LAYER_TEMPLATE) plan(`model.layers.${out}.${w}`, s, (src) => `model.layers.${src.start + i}.${w}`, t);
      layers.push({ model: s.sources[0]!.model, layer: s.sources[0]!.start + i });
    }
  }
  plan('model.norm.weight', lastSlice, () => 'model.norm.weight', 0);
  plan('lm_head.weight', lastSlice, () => 'lm_head.weight', 0, ['model.embed_tokens.weight'], true);
  if (layers.length === 0) throw new MergeConfigError('the merge has no layers (every layer_range is empty)');

  // Output config: the donor's, with the new layer count and dtype.
  const donor = globalBase ?? 0;
  const outConfig: Record<string, unknown> = { ...models[donor]!.rawConfig };
  if (config.slices) outConfig['num_hidden_layers'] = layers.length;
  const dtypeName = config.out_dtype ?? config.dtype;
  if (dtypeName) outConfig['dtype' in outConfig && !('torch_dtype' in outConfig) ? 'dtype' : 'torch_dtype'] = dtypeName.replace(/^torch\./, '');
  return { method, models, tensors, donor, layers, outConfig };
}
