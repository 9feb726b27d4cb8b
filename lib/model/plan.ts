// The layer plan: which stored tensor serves each role of each decoder layer. Loading a
// checkpoint, a virtual merge or a quant differ only in how this plan is built; the
// engine receives the plan with every tensor resolved to (file, offset, dtype, shape).
import { FormatError } from '../errors.js';
import type { NativeLayer, NativeModelSpec, NativeTensor } from '../native.js';
import { expectedShapes, tensorNames, type LayerTensorNames } from './architecture.js';
import type { Checkpoint } from './checkpoint.js';
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

const RUNNABLE_DTYPES = new Set(['F32', 'F16', 'BF16']);

export interface EngineOptions {
  isa: string;
  threads: number;
  contextSize: number;
  kvCacheTokens: number;
  kvPageSize: number;
}

/** Resolves every tensor of the plan in the checkpoint, checks it against config.json and
 * returns the engine's spec. Throws FormatError naming file and tensor. */
export function resolvePlan(config: ModelConfig, checkpoint: Checkpoint, plan: LayerPlan, options: EngineOptions): NativeModelSpec {
  const shapes = expectedShapes(config);
  const tensors: NativeTensor[] = [];
  const indexOf = new Map<string, number>();

  const use = (name: string, role: keyof typeof shapes): number => {
    const known = indexOf.get(name);
    if (known !== undefined) return known;
    const t = checkpoint.tensors.get(name);
    if (!t) {
      const where = checkpoint.files.length === 1 ? checkpoint.files[0]!.path : checkpoint.dir;
      throw new FormatError(where, `is missing tensor '${name}' (${role}), which config.json requires`);
    }
    const path = checkpoint.files[t.file]!.path;
    if (!RUNNABLE_DTYPES.has(t.dtype))
      throw new FormatError(path, `dtype ${t.dtype} is not supported (F32, F16, BF16)`, name);
    const want = shapes[role];
    if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i]))
      throw new FormatError(path, `shape [${t.shape.join(', ')}] does not match config.json, which implies [${want.join(', ')}]`, name);
    tensors.push({ name, file: t.file, offset: t.offset, bytes: t.bytes, dtype: t.dtype as NativeTensor['dtype'], shape: t.shape });
    indexOf.set(name, tensors.length - 1);
    return tensors.length - 1;
  };

  const layers: NativeLayer[] = plan.layers.map((l) => {
    const layer: NativeLayer = {
      inputNorm: use(l.inputNorm, 'inputNorm'),
      postAttentionNorm: use(l.postAttentionNorm, 'postAttentionNorm'),
      q: use(l.q, 'q'),
      k: use(l.k, 'k'),
      v: use(l.v, 'v'),
      o: use(l.o, 'o'),
      gate: use(l.gate, 'gate'),
      up: use(l.up, 'up'),
      down: use(l.down, 'down'),
    };
    if (l.qBias) layer.qBias = use(l.qBias, 'qBias');
    if (l.kBias) layer.kBias = use(l.kBias, 'kBias');
    if (l.vBias) layer.vBias = use(l.vBias, 'vBias');
    if (l.oBias) layer.oBias = use(l.oBias, 'oBias');
    return layer;
  });

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
    lmHead: use(plan.lmHead, 'lmHead'),
    layers,
    isa: options.isa,
    threads: options.threads,
    kvPageSize: options.kvPageSize,
    kvCacheTokens: options.kvCacheTokens,
  };
}
