// How an architecture names its tensors. Mistral and Llama share one layout; later
// architectures add a description here rather than a copy of the forward pass.
import type { ModelConfig } from './config.js';

export interface LayerTensorNames {
  inputNorm: string;
  postAttentionNorm: string;
  q: string;
  k: string;
  v: string;
  o: string;
  gate: string;
  up: string;
  down: string;
  qBias?: string;
  kBias?: string;
  vBias?: string;
  oBias?: string;
}

export interface TensorNames {
  embedding: string;
  finalNorm: string;
  lmHead: string;
  layer(index: number): LayerTensorNames;
}

const LAYER_PREFIX = 'model.layers.';

/** The decoder layer a stored tensor belongs to (`model.layers.<i>.…`), or null. */
export function layerOfTensor(name: string): number | null {
  if (!name.startsWith(LAYER_PREFIX)) return null;
  const digits = /^\d+(?=\.)/.exec(name.slice(LAYER_PREFIX.length))?.[0];
  return digits === undefined ? null : Number(digits);
}

export function tensorNames(config: ModelConfig): TensorNames {
  const bias = config.attentionBias;
  return {
    embedding: 'model.embed_tokens.weight',
    finalNorm: 'model.norm.weight',
    lmHead: config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight',
    layer(i) {
      const p = `${LAYER_PREFIX}${i}.`;
      return {
        inputNorm: `${p}input_layernorm.weight`,
        postAttentionNorm: `${p}post_attention_layernorm.weight`,
        q: `${p}self_attn.q_proj.weight`,
        k: `${p}self_attn.k_proj.weight`,
        v: `${p}self_attn.v_proj.weight`,
        o: `${p}self_attn.o_proj.weight`,
        gate: `${p}mlp.gate_proj.weight`,
        up: `${p}mlp.up_proj.weight`,
        down: `${p}mlp.down_proj.weight`,
        ...(bias
          ? {
              qBias: `${p}self_attn.q_proj.bias`,
              kBias: `${p}self_attn.k_proj.bias`,
              vBias: `${p}self_attn.v_proj.bias`,
              oBias: `${p}self_attn.o_proj.bias`,
            }
          : {}),
      };
    },
  };
}

/** The shape config.json implies for each tensor role. */
export function expectedShapes(config: ModelConfig): Record<keyof LayerTensorNames | 'embedding' | 'finalNorm' | 'lmHead', number[]> {
  const { hiddenSize: h, intermediateSize: i, numAttentionHeads: nh, numKeyValueHeads: nkv, headDim: d, vocabSize: v } = config;
  return {
    embedding: [v, h],
    finalNorm: [h],
    lmHead: [v, h],
    inputNorm: [h],
    postAttentionNorm: [h],
    q: [nh * d, h],
    k: [nkv * d, h],
    v: [nkv * d, h],
    o: [h, nh * d],
    gate: [i, h],
    up: [i, h],
    down: [h, i],
    qBias: [nh * d],
    kBias: [nkv * d],
    vBias: [nkv * d],
    oBias: [h],
  };
}
