// A passthrough merge loaded without writing anything: the layer plan points each output
// layer at the mapped tensors of its source layer, so repeated layers share memory.
import { MergeConfigError, loadMergeConfig, modelDir, type MergeConfig } from './config.js';
import { planMerge } from './plan.js';
import type { LayerTensorNames } from '../model/architecture.js';
import type { Checkpoint, CheckpointTensor } from '../model/checkpoint.js';
import { parseConfig, type ModelConfig } from '../model/config.js';
import type { LayerPlan } from '../model/plan.js';

export interface VirtualMerge {
  config: ModelConfig;
  /** All models' weight files as one checkpoint; tensor keys are "<model>:<name>". */
  checkpoint: Checkpoint;
  plan: LayerPlan;
  /** Where the tokenizer comes from. */
  tokenizerDir: string;
  /** The merged model's config.json. */
  rawConfig: Record<string, unknown>;
  label: string;
}

/** Is this loadModel() argument a merge configuration rather than a model directory? */
export function isMergeConfig(source: unknown): source is string | MergeConfig {
  if (typeof source === 'object' && source !== null) return true;
  return typeof source === 'string' && (source.includes('\n') || /\.ya?ml$/i.test(source.trim()));
}

const ROLES: [keyof LayerTensorNames, string][] = [
  ['inputNorm', 'input_layernorm.weight'],
  ['q', 'self_attn.q_proj.weight'],
  ['k', 'self_attn.k_proj.weight'],
  ['v', 'self_attn.v_proj.weight'],
  ['o', 'self_attn.o_proj.weight'],
  ['postAttentionNorm', 'post_attention_layernorm.weight'],
  ['gate', 'mlp.gate_proj.weight'],
  ['up', 'mlp.up_proj.weight'],
  ['down', 'mlp.down_proj.weight'],
];

export async function planVirtualMerge(source: string | MergeConfig): Promise<VirtualMerge> {
  const parsed = await loadMergeConfig(source);
  const plan = await planMerge(parsed);
  if (plan.method.name !== 'passthrough')
    throw new MergeConfigError(`only passthrough merges load without writing; merge ${plan.method.name} to disk with merge() first`);

  // One checkpoint over every model's files.
  const files = plan.models.flatMap((m) => m.checkpoint.files);
  const tensors = new Map<string, CheckpointTensor>();
  let fileBase = 0;
  plan.models.forEach((m, i) => {
    for (const t of m.checkpoint.tensors.values()) tensors.set(`${i}:${t.name}`, { ...t, file: fileBase + t.file });
    fileBase += m.checkpoint.files.length;
  });
  const checkpoint: Checkpoint = { dir: plan.models[0]!.dir, files, tensors, bytes: plan.models.reduce((a, m) => a + m.checkpoint.bytes, 0) };

  const key = new Map<string, string>();
  for (const t of plan.tensors) {
    const input = t.inputs[0]!;
    if (input.params['scale'] !== undefined && input.params['scale'] !== 1)
      throw new MergeConfigError(`${t.name}: scale changes the weights; merge to disk with merge() to use it`);
    if (t.outDtype !== input.tensor.dtype)
      throw new MergeConfigError(`${t.name}: converting ${input.tensor.dtype} to ${t.outDtype} needs merge() to disk`);
    key.set(t.name, `${input.model}:${input.name}`);
  }
  const embedding = key.get('model.embed_tokens.weight')!;
  const layerPlan: LayerPlan = {
    embedding,
    finalNorm: key.get('model.norm.weight')!,
    lmHead: key.get('lm_head.weight') ?? embedding,
    layers: plan.layers.map((_, j) => Object.fromEntries(ROLES.map(([role, suffix]) => [role, key.get(`model.layers.${j}.${suffix}`)!])) as unknown as LayerTensorNames),
  };
  const { config: yaml, baseDir } = parsed;
  const tokenizerRef = yaml.tokenizer_source && yaml.tokenizer_source !== 'base' ? modelDir(yaml.tokenizer_source, baseDir) : plan.models[plan.donor]!.dir;
  const rawConfig = { ...plan.outConfig, num_hidden_layers: plan.layers.length };
  return {
    rawConfig,
    config: parseConfig(rawConfig, `${plan.models[plan.donor]!.dir}/config.json (merged)`),
    checkpoint,
    plan: layerPlan,
    tokenizerDir: tokenizerRef,
    label: `${plan.method.name} merge of ${plan.models.map((m) => m.dir).join(', ')}`,
  };
}
