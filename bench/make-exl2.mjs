#!/usr/bin/env node
// Makes EXL2 versions of a Hugging Face model by round-to-nearest quantization (laminate's
// writer), for the benchmarks: one directory per target bits per weight.
//   node bench/make-exl2.mjs --model DIR --out DIR [--bpw 2.5,4.0,4.25,5.0,6.0,8.0] [--head-bits 6]
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { bitsPerWeight, layoutGroups, packExl2, quantizeRtn } from 'laminate';
import { shardHeader } from '../dist/formats/safetensors-write.js';

const { values } = parseArgs({ options: { model: { type: 'string' }, out: { type: 'string' }, bpw: { type: 'string', default: '2.5,4.0,4.25,5.0,6.0,8.0' }, 'head-bits': { type: 'string', default: '6' } } });
if (!values.model || !values.out) {
  console.error('usage: node bench/make-exl2.mjs --model DIR --out DIR [--bpw 4.0,...]');
  process.exit(1);
}
// Layouts (fraction, bits) over groups of 32 rows whose average, with 4-bit scale codes per
// group and column (0.125 bpw), lands on each target.
const LAYOUTS = {
  '2.5': [[0.375, 3], [0.625, 2]],
  '3.0': [[0.875, 3], [0.125, 2]],
  '4.0': [[0.875, 4], [0.125, 3]],
  '4.25': [[0.125, 5], [0.875, 4]],
  '5.0': [[0.875, 5], [0.125, 4]],
  '6.0': [[0.875, 6], [0.125, 5]],
  '8.0': [[1, 8]],
};
const HEADS = { 6: [[0.15, 8], [0.85, 6]], 8: [[1, 8]] };

const dir = resolve(values.model);
const file = readFileSync(join(dir, 'model.safetensors'));
const n = Number(file.readBigUInt64LE(0));
const header = JSON.parse(file.subarray(8, 8 + n).toString('utf8'));
const bf16 = (bytes) => {
  const out = new Float32Array(bytes.length / 2);
  const u32 = new Uint32Array(out.buffer);
  for (let i = 0; i < out.length; i++) u32[i] = (bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16;
  return out;
};
for (const target of values.bpw.split(',')) {
  const layout = LAYOUTS[target];
  if (!layout) throw new Error(`no layout for ${target} bpw (have ${Object.keys(LAYOUTS).join(', ')})`);
  const out = join(resolve(values.out), `exl2-${target}bpw-h${values['head-bits']}`);
  if (existsSync(join(out, 'output.safetensors'))) continue;
  mkdirSync(out, { recursive: true });
  const tensors = [];
  let layerBits = 0, layerWeights = 0;
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (e.dtype !== 'BF16') throw new Error(`${name}: expected BF16`);
    const bytes = file.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]);
    if (!/(proj|lm_head)\.weight$/.test(name)) {
      tensors.push({ name, dtype: 'BF16', shape: e.shape, data: bytes });
      continue;
    }
    const [rows, cols] = e.shape;
    const head = name.startsWith('lm_head');
    const packed = packExl2(quantizeRtn(bf16(bytes), rows, cols, layoutGroups(cols, head ? HEADS[values['head-bits']] : layout, head ? 128 : 32)));
    if (!head) {
      layerBits += bitsPerWeight(packed, rows, cols) * rows * cols;
      layerWeights += rows * cols;
    }
    const key = name.replace(/\.weight$/, '');
    const raw = (a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    tensors.push({ name: `${key}.q_weight`, dtype: 'I32', shape: packed.q_weight.shape, data: raw(packed.q_weight.data) });
    tensors.push({ name: `${key}.q_invperm`, dtype: 'I32', shape: packed.q_invperm.shape, data: raw(packed.q_invperm.data) });
    tensors.push({ name: `${key}.q_scale`, dtype: 'I32', shape: packed.q_scale.shape, data: raw(packed.q_scale.data) });
    tensors.push({ name: `${key}.q_scale_max`, dtype: 'F16', shape: packed.q_scale_max.shape, data: raw(packed.q_scale_max.data) });
    tensors.push({ name: `${key}.q_groups`, dtype: 'I16', shape: packed.q_groups.shape, data: raw(packed.q_groups.data) });
  }
  const { header: h, order } = shardHeader(tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })));
  const fd = openSync(join(out, 'output.safetensors'), 'w');
  writeSync(fd, h);
  for (const i of order) writeSync(fd, tensors[i].data);
  closeSync(fd);
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  config.quantization_config = { quant_method: 'exl2', version: 'laminate-rtn', bits: Number(target), head_bits: Number(values['head-bits']) };
  writeFileSync(join(out, 'config.json'), JSON.stringify(config, null, 4));
  for (const f of readdirSync(dir)) if (!f.endsWith('.safetensors') && f !== 'config.json') copyFileSync(join(dir, f), join(out, f));
  console.log(JSON.stringify({ dir: out, target_bpw: Number(target), decoder_bpw: Math.round((layerBits / layerWeights) * 1000) / 1000 }));
}
