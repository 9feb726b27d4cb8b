#!/usr/bin/env node
// GPU benchmark (npm run bench:gpu): a Mistral-7B-shaped model in EXL2 at 4.25 bits per
// weight (6-bit head) made of random codes and written to a temporary directory, so nothing
// is downloaded or converted; decode tok/s at batch 1, 8 and 32, prefill tok/s for 512 and
// 2048 tokens; the 48-layer depth-upscaled shape ([0,24) + [8,32) of 32 layers, written with
// 48 layers of its own so that decode reads 48 layers of weights); the device-to-device copy
// bandwidth, the limit of decode; PyTorch fp16 on the same shapes where python3 has torch
// with CUDA (bench/gpu_torch.py).
//   node bench/gpu.mjs [--out DIR] [--shape 7b|small] [--steps 64] [--batches 1,8,32] [--prefill 512,2048] [--keep]
// Results: one JSON line per measurement on stdout, and DIR/gpu.json.
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { cudaInfo, layoutGroups, loadModel } from '../dist/index.js';
import { cudaAddon } from '../dist/native.js';
import { shardHeader } from '../dist/formats/safetensors-write.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    out: { type: 'string', default: join(here, 'results') },
    shape: { type: 'string', default: '7b' },
    steps: { type: 'string', default: '64' },
    prefill: { type: 'string', default: '512,2048' },
    batches: { type: 'string', default: '1,8,32' },
    keep: { type: 'boolean', default: false },
  },
});
const SHAPES = {
  // Mistral-7B-Instruct-v0.3
  '7b': { hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kvHeads: 8, headDim: 128, vocab: 32768 },
  // for a quick run of the script itself (on the simulator build too)
  small: { hidden: 256, intermediate: 512, layers: 4, heads: 4, kvHeads: 2, headDim: 64, vocab: 512 },
};
const shape = SHAPES[values.shape];
if (!shape) throw new Error(`--shape must be one of ${Object.keys(SHAPES).join(', ')}`);
const steps = Number(values.steps);
const LAYOUT = [[0.125, 5], [0.875, 4]]; // 4.25 bits per code, groups of 32 rows
const HEAD = [[0.15, 8], [0.85, 6]]; // the 6-bit head of bench/make-exl2.mjs

const info = cudaInfo();
if (info.devices.length === 0) {
  console.log(JSON.stringify({ skipped: `no CUDA device: ${info.reason}` }));
  process.exit(0);
}
const device = info.devices[0];
const results = [];
const record = (r) => {
  const row = { device: device.name, simulated: info.simulated, shape: values.shape, ...r };
  results.push(row);
  console.log(JSON.stringify(row));
};

// The model: random EXL2 codes in the stored layout (every bit pattern is a valid code),
// random 4-bit scale codes, small maximum scales, a random permutation per layer. Bytes come
// from one random pool, at a different offset for each tensor.
const pool = new Uint8Array(64 << 20);
for (let at = 0; at < pool.length; at += 65536) randomFillSync(pool, at, 65536);
let poolAt = 0;
function writeModel(dir, layers) {
  const s = { ...shape, layers };
  const tensors = [];
  const f16 = (values) => {
    const out = new Uint16Array(values.length);
    const f = new Float32Array(1), u = new Uint32Array(f.buffer);
    values.forEach((v, i) => {
      f[0] = v;
      const x = u[0], e = ((x >>> 23) & 255) - 112, m = (x >>> 13) & 1023;
      out[i] = ((x >>> 16) & 0x8000) | (e <= 0 ? 0 : (e << 10) | m);
    });
    return out;
  };
  const random = (bytes) => () => {
    const b = new Uint8Array(bytes);
    for (let at = 0; at < bytes; ) {
      poolAt = (poolAt + 4099) % (pool.length - 65536);
      const n = Math.min(65536, bytes - at);
      b.set(pool.subarray(poolAt, poolAt + n), at);
      at += n;
    }
    return b;
  };
  const dense = (name, shape, fill) => tensors.push({ name, dtype: 'F16', shape, make: () => new Uint8Array(f16(Float32Array.from({ length: shape.reduce((a, b) => a * b) }, fill)).buffer) });
  const exl2 = (key, n, k, parts, groupSize) => {
    const groups = layoutGroups(k, parts, groupSize);
    const np = Math.ceil(n / 32) * 32;
    const qrows = groups.reduce((a, g) => a + (g.rows * g.bits) / 32, 0);
    const qGroups = new Int16Array(groups.length * 2);
    let qrow = 0;
    groups.forEach((g, i) => {
      qGroups[2 * i] = g.bits;
      qGroups[2 * i + 1] = qrow;
      qrow += (g.rows * g.bits) / 32;
    });
    tensors.push({ name: `${key}.q_weight`, dtype: 'I32', shape: [qrows, np], make: random(qrows * np * 4) });
    tensors.push({
      name: `${key}.q_invperm`, dtype: 'I32', shape: [k], make: () => {
        const p = Int32Array.from({ length: k }, (_, i) => i);
        for (let i = k - 1; i > 0; i--) {
          const j = Math.floor(Math.random() * (i + 1));
          [p[i], p[j]] = [p[j], p[i]];
        }
        return new Uint8Array(p.buffer);
      },
    });
    tensors.push({ name: `${key}.q_scale`, dtype: 'I32', shape: [groups.length, np / 8], make: random(groups.length * np * 4 / 8) });
    tensors.push({ name: `${key}.q_scale_max`, dtype: 'F16', shape: [groups.length], make: () => new Uint8Array(f16(Array.from({ length: groups.length }, () => 0.02 / Math.sqrt(k) * (1 + Math.random()))).buffer) });
    tensors.push({ name: `${key}.q_groups`, dtype: 'I16', shape: [groups.length * 2], make: () => new Uint8Array(qGroups.buffer) });
  };
  dense('model.embed_tokens.weight', [s.vocab, s.hidden], () => (Math.random() - 0.5) * 0.1);
  dense('model.norm.weight', [s.hidden], () => 1);
  exl2('lm_head', s.vocab, s.hidden, HEAD, 128);
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    dense(`${p}.input_layernorm.weight`, [s.hidden], () => 1);
    dense(`${p}.post_attention_layernorm.weight`, [s.hidden], () => 1);
    exl2(`${p}.self_attn.q_proj`, s.heads * s.headDim, s.hidden, LAYOUT, 32);
    exl2(`${p}.self_attn.k_proj`, s.kvHeads * s.headDim, s.hidden, LAYOUT, 32);
    exl2(`${p}.self_attn.v_proj`, s.kvHeads * s.headDim, s.hidden, LAYOUT, 32);
    exl2(`${p}.self_attn.o_proj`, s.hidden, s.heads * s.headDim, LAYOUT, 32);
    exl2(`${p}.mlp.gate_proj`, s.intermediate, s.hidden, LAYOUT, 32);
    exl2(`${p}.mlp.up_proj`, s.intermediate, s.hidden, LAYOUT, 32);
    exl2(`${p}.mlp.down_proj`, s.hidden, s.intermediate, LAYOUT, 32);
  }
  const { header, order } = shardHeader(tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })));
  const fd = openSync(join(dir, 'output.safetensors'), 'w');
  writeSync(fd, header);
  for (const i of order) writeSync(fd, tensors[i].make());
  closeSync(fd);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    architectures: ['MistralForCausalLM'], model_type: 'mistral', hidden_size: s.hidden, intermediate_size: s.intermediate,
    num_hidden_layers: s.layers, num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, head_dim: s.headDim,
    vocab_size: s.vocab, max_position_embeddings: 32768, rope_theta: 1000000.0, rms_norm_eps: 1e-5, sliding_window: null,
    tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float16',
    quantization_config: { quant_method: 'exl2', version: 'laminate-random', bits: 4.25, head_bits: 6 },
  }));
}

const prompt = (n, seed = 1) => Int32Array.from({ length: n }, (_, i) => (i * 7919 + seed * 104729) % shape.vocab);

async function decode(model, batch, label) {
  const seqs = Array.from({ length: batch }, () => model.createSequence());
  await model.step(seqs.map((s, i) => ({ sequence: s, tokens: prompt(16, i), logits: 'none' })));
  for (let w = 0; w < 3; w++) await model.step(seqs.map((s, i) => ({ sequence: s, tokens: [(w * 31 + i) % shape.vocab] })));
  const t0 = performance.now();
  for (let t = 0; t < steps; t++) await model.step(seqs.map((s, i) => ({ sequence: s, tokens: [(t * 131 + i) % shape.vocab] })));
  const seconds = (performance.now() - t0) / 1000;
  seqs.forEach((s) => s.dispose());
  // so far on this model: how many steps replayed a recorded graph (graphError: why not)
  return { label, batch, steps, ms_per_step: (seconds * 1000) / steps, tok_s: (batch * steps) / seconds, step_counts: model.stepCounts() };
}

async function prefill(model, tokens, label) {
  const run = async () => {
    const s = model.createSequence();
    const t0 = performance.now();
    await model.step([{ sequence: s, tokens: prompt(tokens), logits: 'last' }]);
    const seconds = (performance.now() - t0) / 1000;
    s.dispose();
    return seconds;
  };
  await run();
  const seconds = Math.min(await run(), await run());
  return { label, tokens, ms: seconds * 1000, tok_s: tokens / seconds };
}

async function run(layers, batches, lengths) {
  const dir = mkdtempSync(join(tmpdir(), 'laminate-bench-gpu-'));
  try {
    let t0 = performance.now();
    writeModel(dir, layers);
    record({ stage: `write ${layers}-layer model`, seconds: (performance.now() - t0) / 1000 });
    t0 = performance.now();
    const model = await loadModel(dir, { device: 'cuda', contextSize: 4096, kvCacheTokens: Math.max(...batches) * 128 + 4096 });
    record({ stage: `load ${layers}-layer model to the GPU`, seconds: (performance.now() - t0) / 1000, device_bytes: model.info.deviceBytes });
    // bytes read per decode step: the weights but the embedding table, of which a step
    // reads a row (the KV cache read is small at these lengths)
    const weightBytes = model.info.deviceBytes - model.cacheStats().bytesAllocated - shape.vocab * shape.hidden * 2;
    for (const batch of batches) {
      const r = await decode(model, batch, `decode ${layers} layers`);
      const limit = bandwidth / weightBytes;
      record({ ...r, weight_bytes: weightBytes, bandwidth_limit_steps_s: limit, fraction_of_limit: 1000 / r.ms_per_step / limit });
    }
    for (const n of lengths) record(await prefill(model, n, `prefill ${layers} layers`));
    model.dispose();
  } finally {
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
    else console.log(JSON.stringify({ kept: dir }));
  }
}

const batches = values.batches.split(',').map(Number), lengths = values.prefill.split(',').map(Number);
const bandwidth = cudaAddon().addon.cudaCopyBandwidth(device.index, values.shape === '7b' ? 1 << 30 : 1 << 24, 20);
record({ measure: 'device-to-device copy', GB_s: bandwidth / 1e9 });
try {
  await run(shape.layers, batches, lengths);
  // the depth-upscaled shape: [0, 3/4) + [1/4, 1) of the layers
  await run(Math.round((shape.layers * 3) / 4) + shape.layers - shape.layers / 4, [1], [lengths[0]]);

  // PyTorch fp16 on the same shapes, where it is installed with CUDA
  const torch = spawnSync('python3', [join(here, 'gpu_torch.py'), JSON.stringify({ ...shape, steps, prefill: lengths, batches })], { encoding: 'utf8', timeout: 300_000 });
  if (torch.status === 0) {
    for (const line of torch.stdout.trim().split('\n')) if (line.startsWith('{')) record({ peer: 'pytorch fp16', ...JSON.parse(line) });
  } else {
    record({ peer: 'pytorch fp16', skipped: (torch.stderr || torch.error?.message || 'python3 failed').trim().split('\n').slice(-1)[0] });
  }
} finally {
  mkdirSync(resolve(values.out), { recursive: true });
  writeFileSync(join(resolve(values.out), 'gpu.json'), JSON.stringify(results, null, 2));
}
