// config.json -> ModelConfig: the Hugging Face fields, checked and given camelCase names.
import { join } from 'node:path';

import { FormatError } from '../errors.js';
import { readJsonObject } from '../formats/json.js';

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

/** The largest config values accepted (each far past the largest published models). */
export const LIMITS = { hidden: 1 << 17, intermediate: 1 << 20, layers: 4096, heads: 1024, headDim: 1024, vocab: 1 << 22, positions: 1 << 24 } as const;

export interface ModelConfig {
  architecture: 'MistralForCausalLM' | 'LlamaForCausalLM';
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  /** Attend only to the last this many positions; null for the whole context. */
  slidingWindow: number | null;
  tieWordEmbeddings: boolean;
  attentionBias: boolean;
  torchDtype: string | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** config.json's quantization_config, for display (the weights say how they are stored). */
  quantization: { method: string; bits?: number; headBits?: number } | null;
}

const ARCHITECTURES = ['MistralForCausalLM', 'LlamaForCausalLM'] as const;

type Json = Record<string, unknown>;

class Fields {
  constructor(
    readonly file: string,
    readonly json: Json,
  ) {}

  fail(key: string, what: string): never {
    throw new FormatError(this.file, `${key} ${what} (found ${JSON.stringify(this.json[key])})`);
  }

  has(key: string): boolean {
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  /** A positive integer no larger than `max` (bounds far past any real model, so that a
   * hostile config cannot make the load build millions of layers or huge buffers). */
  positiveInt(key: string, fallback?: number, max = 2 ** 31 - 1): number {
    if (!this.has(key)) {
      if (fallback !== undefined) return fallback;
      this.fail(key, 'is required');
    }
    const v = this.json[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) this.fail(key, 'must be a positive integer');
    if ((v as number) > max) this.fail(key, `must be at most ${max} (got ${v as number})`);
    return v as number;
  }

  positiveNumber(key: string, fallback: number): number {
    if (!this.has(key)) return fallback;
    const v = this.json[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(key, 'must be a positive number');
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    if (!this.has(key)) return fallback;
    const v = this.json[key];
    if (typeof v !== 'boolean') this.fail(key, 'must be true or false');
    return v;
  }

  tokenIds(key: string): number[] {
    if (!this.has(key)) return [];
    const v = this.json[key];
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((t) => Number.isSafeInteger(t) && (t as number) >= 0)) this.fail(key, 'must be a token id or a list of them');
    return list as number[];
  }
}

function ropeScaling(f: Fields): RopeScaling | null {
  const raw = f.json['rope_scaling'];
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) f.fail('rope_scaling', 'must be an object');
  const r = new Fields(f.file, raw as Json);
  const type = r.json['rope_type'] ?? r.json['type'];
  const factor = (): number => r.positiveNumber('factor', NaN);
  if (type === 'default') return null;
  if (type === 'linear') {
    const value = factor();
    if (Number.isNaN(value)) r.fail('factor', 'is required for linear rope_scaling');
    return { type: 'linear', factor: value };
  }
  if (type === 'llama3') {
    const value = factor();
    if (Number.isNaN(value)) r.fail('factor', 'is required for llama3 rope_scaling');
    const low = r.positiveNumber('low_freq_factor', NaN);
    const high = r.positiveNumber('high_freq_factor', NaN);
    const original = r.positiveInt('original_max_position_embeddings');
    if (Number.isNaN(low) || Number.isNaN(high) || !(high > low))
      throw new FormatError(f.file, 'rope_scaling: llama3 needs low_freq_factor < high_freq_factor');
    return { type: 'llama3', factor: value, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: original };
  }
  throw new FormatError(f.file, `rope_scaling type ${JSON.stringify(type)} is not supported (linear, llama3)`);
}

function quantization(q: unknown): ModelConfig['quantization'] {
  if (typeof q !== 'object' || q === null || Array.isArray(q)) return null;
  const r = q as Record<string, unknown>;
  const method = typeof r['quant_method'] === 'string' ? r['quant_method'] : 'unknown';
  return {
    method,
    ...(typeof r['bits'] === 'number' ? { bits: r['bits'] } : {}),
    ...(typeof r['head_bits'] === 'number' ? { headBits: r['head_bits'] } : {}),
  };
}

/** Parses and checks a config.json object. `file` names it in errors. */
export function parseConfig(json: unknown, file: string): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError(file, 'is not a JSON object');
  const f = new Fields(file, json as Json);
  const archs = f.json['architectures'];
  if (!Array.isArray(archs) || archs.length === 0) f.fail('architectures', 'must be a non-empty list');
  const architecture = ARCHITECTURES.find((a) => (archs as unknown[]).includes(a));
  if (!architecture)
    throw new FormatError(file, `architecture ${JSON.stringify(archs)} is not supported (${ARCHITECTURES.join(', ')})`);
  const isMistral = architecture === 'MistralForCausalLM';

  const act = f.json['hidden_act'] ?? 'silu';
  if (act !== 'silu') f.fail('hidden_act', 'must be "silu"');
  if (f.bool('mlp_bias', false)) f.fail('mlp_bias', 'is not supported');

  const hiddenSize = f.positiveInt('hidden_size', undefined, LIMITS.hidden);
  const numAttentionHeads = f.positiveInt('num_attention_heads', undefined, LIMITS.heads);
  const numKeyValueHeads = f.positiveInt('num_key_value_heads', numAttentionHeads, LIMITS.heads);
  if (numAttentionHeads % numKeyValueHeads !== 0)
    throw new FormatError(file, `num_attention_heads (${numAttentionHeads}) is not a multiple of num_key_value_heads (${numKeyValueHeads})`);
  if (!f.has('head_dim') && hiddenSize % numAttentionHeads !== 0)
    throw new FormatError(file, `hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numAttentionHeads}) and head_dim is not given`);
  const headDim = f.positiveInt('head_dim', hiddenSize / numAttentionHeads, LIMITS.headDim);
  if (headDim % 2 !== 0) f.fail('head_dim', 'must be even');

  let slidingWindow: number | null = null;
  if (isMistral) {
    // MistralConfig's default when the key is absent is 4096; null turns it off.
    slidingWindow = f.json['sliding_window'] === null ? null : f.positiveInt('sliding_window', 4096);
  }
  const generationEos = f.tokenIds('eos_token_id');
  const bos = f.tokenIds('bos_token_id');
  const dtype = f.json['torch_dtype'] ?? f.json['dtype'];

  return {
    architecture,
    modelType: typeof f.json['model_type'] === 'string' ? (f.json['model_type'] as string) : isMistral ? 'mistral' : 'llama',
    hiddenSize,
    intermediateSize: f.positiveInt('intermediate_size', undefined, LIMITS.intermediate),
    numHiddenLayers: f.positiveInt('num_hidden_layers', undefined, LIMITS.layers),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    vocabSize: f.positiveInt('vocab_size', undefined, LIMITS.vocab),
    rmsNormEps: f.positiveNumber('rms_norm_eps', 1e-6),
    ropeTheta: f.positiveNumber('rope_theta', 10000),
    ropeScaling: ropeScaling(f),
    maxPositionEmbeddings: f.positiveInt('max_position_embeddings', isMistral ? 32768 : 2048, LIMITS.positions),
    slidingWindow,
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    attentionBias: f.bool('attention_bias', false),
    torchDtype: typeof dtype === 'string' ? dtype : null,
    bosTokenId: bos[0] ?? null,
    eosTokenIds: generationEos,
    quantization: quantization(f.json['quantization_config']),
  };
}

export async function readConfig(dir: string): Promise<ModelConfig> {
  const file = join(dir, 'config.json');
  return parseConfig(await readJsonObject(file), file);
}

/** Rotary inverse frequencies (head_dim / 2 of them), with the config's scaling applied. */
export function ropeInverseFrequencies(config: ModelConfig): number[] {
  const d = config.headDim;
  const inv: number[] = [];
  for (let i = 0; i < d / 2; i++) inv.push(Math.pow(config.ropeTheta, (-2 * i) / d));
  const s = config.ropeScaling;
  if (!s) return inv;
  if (s.type === 'linear') return inv.map((f) => f / s.factor);
  // llama3: long wavelengths are slowed by `factor`, short ones kept, and the band in
  // between blended smoothly.
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen > lowWavelen) return f / s.factor;
    if (wavelen < highWavelen) return f;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}
