// Test helper: writes tiny random Hugging Face-style Mistral/Llama checkpoints
// (config.json, generation_config.json, safetensors, optional sharding) and
// encodes/decodes F32/F16/BF16. Independent of lib/ and native/ on purpose.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

export type DType = 'F32' | 'F16' | 'BF16';

export interface TinySpec {
  arch?: 'mistral' | 'llama';
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim?: number;
  vocab: number;
  dtype: DType;
  tied?: boolean;
  shards?: number;
  ropeTheta?: number;
  rmsNormEps?: number;
  maxPositions?: number;
  slidingWindow?: number | null;
  ropeScaling?:
    | {
        rope_type: 'llama3';
        factor: number;
        low_freq_factor: number;
        high_freq_factor: number;
        original_max_position_embeddings: number;
      }
    | { rope_type: 'linear'; factor: number };
  seed: number;
}

export interface TinyCheckpoint {
  dir: string;
  spec: TinySpec;
  config: Record<string, unknown>;
  /** Values exactly as stored (after rounding to the dtype), as float64. Row-major. */
  tensors: Map<string, { shape: number[]; values: Float64Array }>;
}

// ---------------------------------------------------------------------------
// Float encoding
// ---------------------------------------------------------------------------

interface SmallFloatFormat {
  expBits: number;
  mantBits: number;
}
const F16_FORMAT: SmallFloatFormat = { expBits: 5, mantBits: 10 };
const BF16_FORMAT: SmallFloatFormat = { expBits: 8, mantBits: 7 };

/** Exact floor(log2(x)) for finite x > 0. */
function floorLog2(x: number): number {
  let e = Math.floor(Math.log2(x));
  if (Math.pow(2, e) > x) e -= 1;
  else if (Math.pow(2, e + 1) <= x) e += 1;
  return e;
}

function roundHalfEven(m: number): number {
  const f = Math.floor(m);
  const d = m - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** float64 -> 16-bit pattern of a binary format (F16 or BF16), round-to-nearest-even. */
function toSmallFloatBits(x: number, fmt: SmallFloatFormat): number {
  const { expBits, mantBits } = fmt;
  const bias = (1 << (expBits - 1)) - 1;
  const expMask = (1 << expBits) - 1;
  const signBit = 1 << (expBits + mantBits);
  const infBits = expMask << mantBits;
  if (Number.isNaN(x)) return infBits | (1 << (mantBits - 1)); // quiet NaN
  const sign = x < 0 || Object.is(x, -0) ? signBit : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | infBits;
  if (a === 0) return sign;

  const minNormalExp = 1 - bias;
  const e = Math.max(floorLog2(a), minNormalExp);
  const quantum = Math.pow(2, e - mantBits);
  const v = roundHalfEven(a / quantum) * quantum; // rounded magnitude, exact in float64
  if (v >= Math.pow(2, bias + 1)) return sign | infBits; // overflow
  if (v === 0) return sign; // underflow to zero
  if (v < Math.pow(2, minNormalExp)) {
    // subnormal: mantissa counts multiples of the smallest subnormal
    return sign | (v / Math.pow(2, minNormalExp - mantBits));
  }
  const ve = floorLog2(v); // may be e + 1 when rounding carried
  const mant = (v / Math.pow(2, ve) - 1) * (1 << mantBits);
  return sign | ((ve + bias) << mantBits) | mant;
}

function fromSmallFloatBits(bits: number, fmt: SmallFloatFormat): number {
  const { expBits, mantBits } = fmt;
  const bias = (1 << (expBits - 1)) - 1;
  const expMask = (1 << expBits) - 1;
  const sign = bits & (1 << (expBits + mantBits)) ? -1 : 1;
  const exp = (bits >> mantBits) & expMask;
  const mant = bits & ((1 << mantBits) - 1);
  if (exp === expMask) return mant === 0 ? sign * Infinity : NaN;
  if (exp === 0) return sign * mant * Math.pow(2, 1 - bias - mantBits);
  return sign * (1 + mant / (1 << mantBits)) * Math.pow(2, exp - bias);
}

export function bytesPerElement(dtype: DType): number {
  return dtype === 'F32' ? 4 : 2;
}

/** Encode float64 values to little-endian bytes of `dtype` (round-to-nearest-even). */
export function encode(values: Float64Array | number[], dtype: DType): Uint8Array {
  const n = values.length;
  const out = new Uint8Array(n * bytesPerElement(dtype));
  const view = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const x = values[i]!;
    if (dtype === 'F32') view.setFloat32(i * 4, x, true); // JS double->float is RNE
    else view.setUint16(i * 2, toSmallFloatBits(x, dtype === 'F16' ? F16_FORMAT : BF16_FORMAT), true);
  }
  return out;
}

/** Decode little-endian bytes of `dtype` to float64 values. */
export function decode(bytes: Uint8Array, dtype: DType): Float64Array {
  const size = bytesPerElement(dtype);
  if (bytes.length % size !== 0) throw new Error(`decode: ${bytes.length} bytes is not a multiple of ${size}`);
  const n = bytes.length / size;
  const out = new Float64Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) {
    if (dtype === 'F32') out[i] = view.getFloat32(i * 4, true);
    else out[i] = fromSmallFloatBits(view.getUint16(i * 2, true), dtype === 'F16' ? F16_FORMAT : BF16_FORMAT);
  }
  return out;
}

// ---------------------------------------------------------------------------
// safetensors
// ---------------------------------------------------------------------------

const KNOWN_DTYPE_SIZES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/**
 * Write a safetensors file. Tensors are packed back to back in the given order.
 * The header's __metadata__ is {"format":"pt", ...metadata}.
 */
export function writeSafetensors(
  path: string,
  tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[],
  metadata?: Record<string, string>,
): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', ...(metadata ?? {}) } };
  let offset = 0;
  for (const t of tensors) {
    if (t.name in header) throw new Error(`writeSafetensors: duplicate or reserved name ${t.name}`);
    const size = KNOWN_DTYPE_SIZES[t.dtype];
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (size !== undefined && count * size !== t.data.length) {
      throw new Error(`writeSafetensors: ${t.name} has ${t.data.length} bytes, expected ${count * size}`);
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  let json = JSON.stringify(header);
  // pad with spaces so that 8 + N is a multiple of 8 (JSON is ASCII here unless names are not)
  let headerBytes = Buffer.from(json, 'utf8');
  const pad = (8 - ((8 + headerBytes.length) % 8)) % 8;
  if (pad > 0) {
    json += ' '.repeat(pad);
    headerBytes = Buffer.from(json, 'utf8');
  }
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let pos = 8 + headerBytes.length;
  for (const t of tensors) {
    out.set(t.data, pos);
    pos += t.data.length;
  }
  writeFileSync(path, out);
}

// ---------------------------------------------------------------------------
// Deterministic random numbers
// ---------------------------------------------------------------------------

/** mulberry32: 32-bit state PRNG returning uniforms in [0, 1). */
function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples via Box-Muller. */
function normalSampler(seed: number): () => number {
  const uniform = mulberry32(seed);
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u1 = 1 - uniform(); // (0, 1], avoids log(0)
    const u2 = uniform();
    const r = Math.sqrt(-2 * Math.log(u1));
    spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  };
}

// ---------------------------------------------------------------------------
// Tiny checkpoints
// ---------------------------------------------------------------------------

export function tmpDir(prefix = 'laminate-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A maker of fresh temporary directories, all removed after the test file. */
export function scratchDirs(prefix: string): () => string {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  return () => {
    const d = tmpDir(prefix);
    dirs.push(d);
    return d;
  };
}

const TORCH_DTYPE: Record<DType, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

function buildConfig(spec: TinySpec, arch: 'mistral' | 'llama'): Record<string, unknown> {
  const config: Record<string, unknown> = {
    architectures: [arch === 'llama' ? 'LlamaForCausalLM' : 'MistralForCausalLM'],
    model_type: arch,
    hidden_size: spec.hidden,
    intermediate_size: spec.intermediate,
    num_hidden_layers: spec.layers,
    num_attention_heads: spec.heads,
    num_key_value_heads: spec.kvHeads,
  };
  if (spec.headDim !== undefined) config['head_dim'] = spec.headDim;
  config['vocab_size'] = spec.vocab;
  config['rms_norm_eps'] = spec.rmsNormEps ?? 1e-5;
  config['rope_theta'] = spec.ropeTheta ?? (arch === 'llama' ? 10000 : 1e6);
  config['max_position_embeddings'] = spec.maxPositions ?? 4096;
  config['tie_word_embeddings'] = spec.tied ?? false;
  config['torch_dtype'] = TORCH_DTYPE[spec.dtype];
  config['hidden_act'] = 'silu';
  config['bos_token_id'] = 1;
  config['eos_token_id'] = 2;
  if (arch === 'mistral') config['sliding_window'] = spec.slidingWindow ?? null;
  if (spec.ropeScaling !== undefined) config['rope_scaling'] = { ...spec.ropeScaling };
  return config;
}

function validateSpec(spec: TinySpec, arch: 'mistral' | 'llama', headDim: number): void {
  const ints: [string, number][] = [
    ['hidden', spec.hidden], ['intermediate', spec.intermediate], ['layers', spec.layers],
    ['heads', spec.heads], ['kvHeads', spec.kvHeads], ['vocab', spec.vocab], ['headDim', headDim],
  ];
  for (const [name, v] of ints) {
    if (!Number.isInteger(v) || v <= 0) throw new Error(`TinySpec.${name} must be a positive integer, got ${v}`);
  }
  if (spec.heads % spec.kvHeads !== 0) throw new Error('TinySpec.heads must be a multiple of kvHeads');
  if (headDim % 2 !== 0) throw new Error('head dim must be even (RoPE rotate-half)');
  if (arch === 'llama' && spec.slidingWindow != null) {
    throw new Error('TinySpec.slidingWindow is only written for mistral checkpoints');
  }
}

/** Split tensors in order into `shards` non-empty groups of roughly equal bytes. */
function splitIntoShards<T extends { data: Uint8Array }>(tensors: T[], shards: number): T[][] {
  if (!Number.isInteger(shards) || shards < 1) throw new Error(`shards must be a positive integer, got ${shards}`);
  if (shards > tensors.length) throw new Error(`cannot split ${tensors.length} tensors into ${shards} shards`);
  const total = tensors.reduce((a, t) => a + t.data.length, 0);
  const groups: T[][] = [[]];
  let before = 0; // bytes of all tensors already assigned
  tensors.forEach((t, idx) => {
    const current = groups[groups.length - 1]!;
    const tensorsLeft = tensors.length - idx; // including this one
    const groupsStillNeeded = shards - groups.length;
    const midpoint = before + t.data.length / 2;
    const pastTarget = midpoint > (groups.length * total) / shards;
    if (current.length > 0 && groupsStillNeeded > 0 && (pastTarget || tensorsLeft <= groupsStillNeeded)) {
      groups.push([t]);
    } else {
      current.push(t);
    }
    before += t.data.length;
  });
  return groups;
}

/**
 * Write a tiny random checkpoint into `dir` (created if missing) and return what was written.
 * Deterministic in `spec` (including `seed`).
 */
export async function writeTinyCheckpoint(dir: string, spec: TinySpec): Promise<TinyCheckpoint> {
  const arch = spec.arch ?? 'mistral';
  const headDim = spec.headDim ?? spec.hidden / spec.heads;
  validateSpec(spec, arch, headDim);
  mkdirSync(dir, { recursive: true });

  const randn = normalSampler(spec.seed);
  const tensors = new Map<string, { shape: number[]; values: Float64Array }>();
  const records: { name: string; dtype: string; shape: number[]; data: Uint8Array }[] = [];

  // Draw values, round them to the dtype, keep the rounded values.
  const add = (name: string, shape: number[], sample: () => number): void => {
    const count = shape.reduce((a, b) => a * b, 1);
    const raw = new Float64Array(count);
    for (let i = 0; i < count; i++) raw[i] = sample();
    const data = encode(raw, spec.dtype);
    tensors.set(name, { shape, values: decode(data, spec.dtype) });
    records.push({ name, dtype: spec.dtype, shape, data });
  };
  const projection = (name: string, rows: number, cols: number): void => {
    const std = 1 / Math.sqrt(cols);
    add(name, [rows, cols], () => std * randn());
  };
  const norm = (name: string, size: number): void => add(name, [size], () => 1 + 0.1 * randn());

  const { hidden, intermediate, heads, kvHeads, vocab } = spec;
  add('model.embed_tokens.weight', [vocab, hidden], randn);
  for (let i = 0; i < spec.layers; i++) {
    const p = `model.layers.${i}`;
    norm(`${p}.input_layernorm.weight`, hidden);
    projection(`${p}.self_attn.q_proj.weight`, heads * headDim, hidden);
    projection(`${p}.self_attn.k_proj.weight`, kvHeads * headDim, hidden);
    projection(`${p}.self_attn.v_proj.weight`, kvHeads * headDim, hidden);
    projection(`${p}.self_attn.o_proj.weight`, hidden, heads * headDim);
    norm(`${p}.post_attention_layernorm.weight`, hidden);
    projection(`${p}.mlp.gate_proj.weight`, intermediate, hidden);
    projection(`${p}.mlp.up_proj.weight`, intermediate, hidden);
    projection(`${p}.mlp.down_proj.weight`, hidden, intermediate);
  }
  norm('model.norm.weight', hidden);
  if (!(spec.tied ?? false)) projection('lm_head.weight', vocab, hidden);

  // Weights: one file, or shards plus an index.
  const shards = spec.shards ?? 1;
  if (shards === 1) {
    writeSafetensors(join(dir, 'model.safetensors'), records);
  } else {
    const groups = splitIntoShards(records, shards);
    const pad5 = (n: number): string => String(n).padStart(5, '0');
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    groups.forEach((group, g) => {
      const file = `model-${pad5(g + 1)}-of-${pad5(shards)}.safetensors`;
      writeSafetensors(join(dir, file), group);
      for (const t of group) {
        weightMap[t.name] = file;
        totalSize += t.data.length;
      }
    });
    const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index, null, 2) + '\n');
  }

  // Configs.
  const config = buildConfig(spec, arch);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }, null, 2) + '\n');

  return { dir, spec, config, tensors };
}
