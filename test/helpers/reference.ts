// Test helper: a plain float64 reference forward pass for Mistral/Llama
// checkpoints written by ./checkpoint.ts. Shares no code with lib/ or native/.
// Everything is read from ckpt.config (as written to config.json) and ckpt.tensors.

import type { TinyCheckpoint } from './checkpoint.js';

interface Matrix {
  rows: number;
  cols: number;
  data: Float64Array; // row-major [rows, cols], i.e. HF [out, in]
}

interface Layer {
  inputNorm: Float64Array;
  wq: Matrix;
  wk: Matrix;
  wv: Matrix;
  wo: Matrix;
  postNorm: Float64Array;
  wGate: Matrix;
  wUp: Matrix;
  wDown: Matrix;
}

interface Model {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  slidingWindow: number | null;
  invFreq: Float64Array; // length headDim / 2
  embed: Matrix;
  layers: Layer[];
  finalNorm: Float64Array;
  lmHead: Matrix;
}

function num(config: Record<string, unknown>, key: string, fallback?: number): number {
  const v = config[key];
  if (typeof v === 'number') return v;
  if ((v === undefined || v === null) && fallback !== undefined) return fallback;
  throw new Error(`reference: config.${key} missing or not a number`);
}

function tensor(ckpt: TinyCheckpoint, name: string): { shape: number[]; values: Float64Array } {
  const t = ckpt.tensors.get(name);
  if (t === undefined) throw new Error(`reference: missing tensor ${name}`);
  return t;
}

function matrix(ckpt: TinyCheckpoint, name: string): Matrix {
  const t = tensor(ckpt, name);
  if (t.shape.length !== 2) throw new Error(`reference: ${name} is not 2-D`);
  return { rows: t.shape[0]!, cols: t.shape[1]!, data: t.values };
}

function vector(ckpt: TinyCheckpoint, name: string): Float64Array {
  return tensor(ckpt, name).values;
}

/** RoPE inverse frequencies theta^(-2i/d), with optional linear or llama3 scaling. */
function ropeInvFreq(config: Record<string, unknown>, headDim: number): Float64Array {
  const theta = num(config, 'rope_theta', 10000);
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = Math.pow(theta, (-2 * i) / headDim);

  const scaling = config['rope_scaling'] as Record<string, unknown> | null | undefined;
  if (scaling === null || scaling === undefined) return inv;
  const type = scaling['rope_type'] ?? scaling['type'];
  const factor = num(scaling, 'factor');
  if (type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / factor;
  } else if (type === 'llama3') {
    const lowFreqFactor = num(scaling, 'low_freq_factor');
    const highFreqFactor = num(scaling, 'high_freq_factor');
    const orig = num(scaling, 'original_max_position_embeddings');
    const lowWavelen = orig / lowFreqFactor;
    const highWavelen = orig / highFreqFactor;
    for (let i = 0; i < half; i++) {
      const f = inv[i]!;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowWavelen) {
        inv[i] = f / factor;
      } else if (wavelen < highWavelen) {
        inv[i] = f;
      } else {
        const smooth = (orig / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        inv[i] = ((1 - smooth) * f) / factor + smooth * f;
      }
    }
  } else {
    throw new Error(`reference: unsupported rope_scaling type ${String(type)}`);
  }
  return inv;
}

function loadModel(ckpt: TinyCheckpoint): Model {
  const c = ckpt.config;
  const hidden = num(c, 'hidden_size');
  const heads = num(c, 'num_attention_heads');
  const kvHeads = num(c, 'num_key_value_heads', heads);
  const headDim = num(c, 'head_dim', hidden / heads);
  const sw = c['sliding_window'];
  const layers: Layer[] = [];
  for (let i = 0; i < num(c, 'num_hidden_layers'); i++) {
    const p = `model.layers.${i}`;
    layers.push({
      inputNorm: vector(ckpt, `${p}.input_layernorm.weight`),
      wq: matrix(ckpt, `${p}.self_attn.q_proj.weight`),
      wk: matrix(ckpt, `${p}.self_attn.k_proj.weight`),
      wv: matrix(ckpt, `${p}.self_attn.v_proj.weight`),
      wo: matrix(ckpt, `${p}.self_attn.o_proj.weight`),
      postNorm: vector(ckpt, `${p}.post_attention_layernorm.weight`),
      wGate: matrix(ckpt, `${p}.mlp.gate_proj.weight`),
      wUp: matrix(ckpt, `${p}.mlp.up_proj.weight`),
      wDown: matrix(ckpt, `${p}.mlp.down_proj.weight`),
    });
  }
  const embed = matrix(ckpt, 'model.embed_tokens.weight');
  const tied = c['tie_word_embeddings'] === true;
  return {
    hidden,
    heads,
    kvHeads,
    headDim,
    eps: num(c, 'rms_norm_eps', 1e-6),
    slidingWindow: typeof sw === 'number' ? sw : null,
    invFreq: ropeInvFreq(c, headDim),
    embed,
    layers,
    finalNorm: vector(ckpt, 'model.norm.weight'),
    lmHead: tied ? embed : matrix(ckpt, 'lm_head.weight'),
  };
}

/** y = W x for W stored [out, in]. */
function matvec(w: Matrix, x: Float64Array): Float64Array {
  if (x.length !== w.cols) throw new Error(`reference: matvec ${w.rows}x${w.cols} by ${x.length}`);
  const y = new Float64Array(w.rows);
  for (let r = 0; r < w.rows; r++) {
    const base = r * w.cols;
    let s = 0;
    for (let i = 0; i < w.cols; i++) s += w.data[base + i]! * x[i]!;
    y[r] = s;
  }
  return y;
}

/** x / sqrt(mean(x^2) + eps) * weight. */
function rmsNorm(x: Float64Array, weight: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i]! * x[i]!;
  const scale = 1 / Math.sqrt(ss / x.length + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i]! * scale * weight[i]!;
  return y;
}

/** In-place rotate-half RoPE on each head of `v` (nHeads * headDim values) at position `pos`. */
function applyRope(v: Float64Array, nHeads: number, headDim: number, invFreq: Float64Array, pos: number): void {
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    const base = h * headDim;
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i]!;
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      const a = v[base + i]!;
      const b = v[base + i + half]!;
      v[base + i] = a * cos - b * sin;
      v[base + i + half] = b * cos + a * sin;
    }
  }
}

function addInPlace(x: Float64Array, y: Float64Array): void {
  for (let i = 0; i < x.length; i++) x[i] = x[i]! + y[i]!;
}

/**
 * Run the decoder over `tokens`, which sit at positions cache.length... onward.
 * `cache[layer]` holds the post-RoPE keys and the values of all earlier positions
 * and is extended in place. Returns the final hidden states (before the final norm).
 */
function runDecoder(
  m: Model,
  tokens: number[],
  cache: { keys: Float64Array[]; values: Float64Array[] }[],
  storage: KvStorage = 'f16',
): Float64Array[] {
  const start = cache[0]?.keys.length ?? 0;
  const store = (x: Float64Array): Float64Array => (storage === 'f16' ? x.map(roundToHalf) : roundToInt8(x, m.kvHeads, m.headDim));
  const groupSize = m.heads / m.kvHeads;
  const scale = 1 / Math.sqrt(m.headDim);

  // Embedding lookup.
  const xs = tokens.map((tok) => {
    if (!Number.isInteger(tok) || tok < 0 || tok >= m.embed.rows) throw new Error(`reference: token ${tok} out of range`);
    return m.embed.data.slice(tok * m.hidden, (tok + 1) * m.hidden);
  });

  m.layers.forEach((layer, l) => {
    const kv = cache[l]!;
    const queries: Float64Array[] = [];

    // Attention input: RMSNorm, Q/K/V projections, RoPE on Q and K.
    xs.forEach((x, t) => {
      const pos = start + t;
      const h = rmsNorm(x, layer.inputNorm, m.eps);
      const q = matvec(layer.wq, h);
      const k = matvec(layer.wk, h);
      const v = matvec(layer.wv, h);
      applyRope(q, m.heads, m.headDim, m.invFreq, pos);
      applyRope(k, m.kvHeads, m.headDim, m.invFreq, pos);
      queries.push(q);
      // The engines keep keys and values in half precision, or in int8.
      kv.keys.push(store(k));
      kv.values.push(store(v));
    });

    // Causal (optionally sliding-window) grouped-query attention, output projection, residual.
    xs.forEach((x, t) => {
      const i = start + t;
      const q = queries[t]!;
      const first = m.slidingWindow === null ? 0 : Math.max(0, i - m.slidingWindow + 1);
      const o = new Float64Array(m.heads * m.headDim);
      for (let h = 0; h < m.heads; h++) {
        const kvh = Math.floor(h / groupSize);
        const qOff = h * m.headDim;
        const kOff = kvh * m.headDim;
        // scores over allowed positions j in [first, i]
        const scores = new Float64Array(i - first + 1);
        let max = -Infinity;
        for (let j = first; j <= i; j++) {
          const k = kv.keys[j]!;
          let s = 0;
          for (let d = 0; d < m.headDim; d++) s += q[qOff + d]! * k[kOff + d]!;
          s *= scale;
          scores[j - first] = s;
          if (s > max) max = s;
        }
        // softmax
        let sum = 0;
        for (let n = 0; n < scores.length; n++) {
          const e = Math.exp(scores[n]! - max);
          scores[n] = e;
          sum += e;
        }
        // weighted sum of values
        for (let j = first; j <= i; j++) {
          const p = scores[j - first]! / sum;
          const v = kv.values[j]!;
          for (let d = 0; d < m.headDim; d++) o[qOff + d] = o[qOff + d]! + p * v[kOff + d]!;
        }
      }
      addInPlace(x, matvec(layer.wo, o));
    });

    // MLP: RMSNorm, SwiGLU (silu(gate) * up), down projection, residual.
    xs.forEach((x) => {
      const h = rmsNorm(x, layer.postNorm, m.eps);
      const gate = matvec(layer.wGate, h);
      const up = matvec(layer.wUp, h);
      const act = new Float64Array(gate.length);
      for (let i = 0; i < gate.length; i++) {
        const g = gate[i]!;
        act[i] = (g / (1 + Math.exp(-g))) * up[i]!;
      }
      addInPlace(x, matvec(layer.wDown, act));
    });
  });

  return xs;
}

/** The IEEE half-precision value nearest to x (ties to even; beyond the largest, infinity). */
export function roundToHalf(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  // spacing of half floats around a: 2^(e - 10) for normal numbers, 2^-24 below 2^-14
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  e = Math.max(-14, e);
  const ulp = 2 ** (e - 10);
  let q = a / ulp;
  const f = Math.floor(q);
  q = q - f > 0.5 || (q - f === 0.5 && f % 2 === 1) ? f + 1 : f;
  const r = q * ulp;
  return Math.sign(x) * (r > 65504 ? Infinity : r);
}

/** How the engine stores keys and values (LoadOptions.kvCacheType). */
export type KvStorage = 'f16' | 'q8';

/** Each head's entries as int8 codes times max |x| / 127, rounded to nearest. */
export function roundToInt8(x: Float64Array, heads: number, headDim: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let h = 0; h < heads; h++) {
    let peak = 0;
    for (let d = 0; d < headDim; d++) peak = Math.max(peak, Math.abs(x[h * headDim + d]!));
    const scale = peak / 127;
    for (let d = 0; d < headDim; d++) out[h * headDim + d] = scale > 0 ? Math.round(x[h * headDim + d]! / scale) * scale : 0;
  }
  return out;
}

/** Final RMSNorm and LM head. */
function logitsOf(m: Model, x: Float64Array): Float64Array {
  return matvec(m.lmHead, rmsNorm(x, m.finalNorm, m.eps));
}

function emptyCache(m: Model): { keys: Float64Array[]; values: Float64Array[] }[] {
  return m.layers.map(() => ({ keys: [], values: [] }));
}

/** Logits after every position of `tokens` (full causal forward from scratch), float64. */
export function referenceLogits(ckpt: TinyCheckpoint, tokens: number[], storage: KvStorage = 'f16'): Float64Array[] {
  const m = loadModel(ckpt);
  return runDecoder(m, tokens, emptyCache(m), storage).map((x) => logitsOf(m, x));
}

function argmax(v: Float64Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i; // ties keep the lowest id
  return best;
}

/**
 * `n` greedy tokens after `prompt` (argmax, ties -> lowest id, no EOS stop).
 * Earlier positions' keys/values are kept between steps; this is exactly equal
 * to recomputing referenceLogits on the growing sequence, just faster.
 */
export function referenceGreedy(ckpt: TinyCheckpoint, prompt: number[], n: number): number[] {
  if (prompt.length === 0) throw new Error('reference: empty prompt');
  const m = loadModel(ckpt);
  const cache = emptyCache(m);
  const out: number[] = [];
  let hidden = runDecoder(m, prompt, cache);
  for (let step = 0; step < n; step++) {
    const next = argmax(logitsOf(m, hidden[hidden.length - 1]!));
    out.push(next);
    if (step + 1 < n) hidden = runDecoder(m, [next], cache);
  }
  return out;
}
