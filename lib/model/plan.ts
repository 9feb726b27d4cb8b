// The layer plan: which stored tensor serves each role of each decoder layer. Loading a
// checkpoint, a virtual merge or a quant differ only in how this plan is built; the
// engine receives the plan with every tensor resolved to (file, offset, dtype, shape).
import { FormatError } from '../errors.js';
import { exl2DtypeProblem, type Exl2Tensors } from '../formats/exl2.js';
import type { NativeLayer, NativeLinear, NativeModelSpec, NativeTensor } from '../native.js';
import { expectedShapes, tensorNames, type LayerTensorNames } from './architecture.js';
import type { Checkpoint, CheckpointTensor } from './checkpoint.js';
import { ropeInverseFrequencies, type ModelConfig } from './config.js';

export interface LayerPlan {
  embedding: string;
  finalNorm: string;
  lmHead: string;
  layers: LayerTensorNames[];
}

/** The plan of an ordinary checkpoint: decoder layer i uses the tensors of layer i. */
export function checkpointPlan(config: ModelConfig): LayerPlan {
  const names = tensorNames(config);
  return {
    embedding: names.embedding,
    finalNorm: names.finalNorm,
    lmHead: names.lmHead,
    layers: Array.from({ length: config.numHiddenLayers }, (_, i) => names.layer(i)),
  };
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16']);

export interface EngineOptions {
  isa: string;
  threads: number;
  contextSize: number;
  kvCacheTokens: number;
  kvPageSize: number;
  kvCacheType?: 'f16' | 'q8';
}

/** Resolves every tensor of the plan in the checkpoint, checks it against config.json and
 * returns the engine's spec. Throws FormatError naming file and tensor. */
export function resolvePlan(config: ModelConfig, checkpoint: Checkpoint, plan: LayerPlan, options: EngineOptions): NativeModelSpec {
  const shapes = expectedShapes(config);
  const tensors: NativeTensor[] = [];
  const indexOf = new Map<string, number>();

  const add = (name: string, t: CheckpointTensor): number => {
    tensors.push({ name, file: t.file, offset: t.offset, bytes: t.bytes, dtype: t.dtype as NativeTensor['dtype'], shape: t.shape });
    indexOf.set(name, tensors.length - 1);
    return tensors.length - 1;
  };
  const missing = (name: string, role: string): never => {
    const where = checkpoint.files.length === 1 ? checkpoint.files[0]!.path : checkpoint.dir;
    throw new FormatError(where, `is missing tensor '${name}' (${role}), which config.json requires`);
  };
  const use = (name: string, role: keyof typeof shapes): number => {
    const known = indexOf.get(name);
    if (known !== undefined) return known;
    const t = checkpoint.tensors.get(name) ?? missing(name, role);
    const path = checkpoint.files[t.file]!.path;
    if (!FLOAT_DTYPES.has(t.dtype)) throw new FormatError(path, `dtype ${t.dtype} is not supported (F32, F16, BF16)`, name);
    const want = shapes[role];
    if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i]))
      throw new FormatError(path, `shape [${t.shape.join(', ')}] does not match config.json, which implies [${want.join(', ')}]`, name);
    return add(name, t);
  };
  // A stored tensor of an EXL2 layer, `<key>.q_weight` etc., in its dtype: the engine checks
  // its shape and contents.
  const useExl2 = (key: string, part: keyof Exl2Tensors, role: string): number => {
    const name = `${key}.${part}`;
    const known = indexOf.get(name);
    if (known !== undefined) return known;
    const t = checkpoint.tensors.get(name) ?? missing(name, role);
    const problem = exl2DtypeProblem(part, t.dtype);
    if (problem) throw new FormatError(checkpoint.files[t.file]!.path, problem, name);
    return add(name, t);
  };
  // A linear layer: EXL2 when `<key>.q_weight` is stored (as ExLlamaV2 decides), else dense.
  const linear = (name: string, role: keyof typeof shapes, bias?: string): NativeLinear => {
    const key = name.replace(/\.weight$/, '');
    const b = bias !== undefined ? { bias: use(bias, `${role}Bias` as keyof typeof shapes) } : {};
    if (checkpoint.tensors.has(`${key}.q_weight`)) {
      const part = (suffix: keyof Exl2Tensors) => useExl2(key, suffix, `${role} (EXL2)`);
      return { qWeight: part('q_weight'), qInvperm: part('q_invperm'), qScale: part('q_scale'), qScaleMax: part('q_scale_max'), qGroups: part('q_groups'), ...b };
    }
    return bias !== undefined ? { weight: use(name, role), ...b } : use(name, role);
  };

  const layers: NativeLayer[] = plan.layers.map((l) => ({
    inputNorm: use(l.inputNorm, 'inputNorm'),
    postAttentionNorm: use(l.postAttentionNorm, 'postAttentionNorm'),
    q: linear(l.q, 'q', l.qBias),
    k: linear(l.k, 'k', l.kBias),
    v: linear(l.v, 'v', l.vBias),
    o: linear(l.o, 'o', l.oBias),
    gate: linear(l.gate, 'gate'),
    up: linear(l.up, 'up'),
    down: linear(l.down, 'down'),
  }));
  // A quantized head is stored as lm_head.q_* even when the embeddings are tied.
  const prefix = plan.embedding.slice(0, plan.embedding.length - 'model.embed_tokens.weight'.length);
  const headName = plan.lmHead === plan.embedding && checkpoint.tensors.has(`${prefix}lm_head.q_weight`) ? `${prefix}lm_head.weight` : plan.lmHead;

  return {
    files: checkpoint.files.map((f) => f.path),
    tensors,
    shape: {
      hiddenSize: config.hiddenSize,
      intermediateSize: config.intermediateSize,
      numAttentionHeads: config.numAttentionHeads,
      numKeyValueHeads: config.numKeyValueHeads,
      headDim: config.headDim,
      vocabSize: config.vocabSize,
      rmsNormEps: config.rmsNormEps,
      slidingWindow: config.slidingWindow ?? 0,
      contextSize: options.contextSize,
      ropeInvFreq: ropeInverseFrequencies(config),
    },
    embedding: use(plan.embedding, 'embedding'),
    finalNorm: use(plan.finalNorm, 'finalNorm'),
    lmHead: linear(headName, 'lmHead'),
    layers,
    isa: options.isa,
    threads: options.threads,
    kvPageSize: options.kvPageSize,
    kvCacheTokens: options.kvCacheTokens,
    ...(options.kvCacheType ? { kvCacheType: options.kvCacheType } : {}),
  };
}
