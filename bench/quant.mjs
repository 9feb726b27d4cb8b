#!/usr/bin/env node
// npm run bench:quant -- [--model DIR] [--bpw 2.5,3.0,4.0,4.25,5.0,6.0] [--head-bits 6]
//                        [--eval FILE] [--windows N] [--threads N] [--rows N --length N]
//                        [--bench-model DIR] [--out FILE]
//
// Quantization quality and time. Quantizes the model (default: the tiny fixture model) with
// laminate's quantizer at each bpw from one measurement, and the same model by
// round-to-nearest at the same bpw (bench/make-exl2.mjs); scores every model on held-out
// text (256-token windows, next-token prediction at every position): perplexity, its
// increase over the float model, and mean KL divergence from it. With --bench-model (the
// shared harness's 855M `make_model.py --preset bench` directory), also times measurement
// and one quantization of that model, to show how the time grows.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { loadModel, measure, quantize } from 'laminate';

const here = dirname(fileURLToPath(import.meta.url));
const fixtures = resolve(here, '../../shared/fixtures');
const { values } = parseArgs({
  options: {
    model: { type: 'string', default: join(fixtures, 'models/tiny-mistral-bf16') },
    bpw: { type: 'string', default: '2.5,3.0,4.0,4.25,5.0,6.0' },
    'head-bits': { type: 'string', default: '6' },
    eval: { type: 'string', default: join(fixtures, 'eval/validation.jsonl') },
    windows: { type: 'string', default: '0' },
    threads: { type: 'string' },
    rows: { type: 'string' },
    length: { type: 'string' },
    'bench-model': { type: 'string' },
    work: { type: 'string', default: join(here, 'results', 'quant') },
    out: { type: 'string' },
  },
});
const threads = values.threads ? Number(values.threads) : undefined;
const headBits = Number(values['head-bits']);
const targets = values.bpw.split(',').map(Number);
const work = resolve(values.work);
mkdirSync(work, { recursive: true });
const sizing = { ...(values.rows ? { rows: Number(values.rows) } : {}), ...(values.length ? { length: Number(values.length) } : {}) };

// laminate's quantizer: one measurement, reused for every bitrate.
const model = resolve(values.model);
const measurementPath = join(work, 'measurement.json');
let t0 = performance.now();
await measure(model, measurementPath, { ...(threads ? { threads } : {}), ...(values.length ? { length: Number(values.length) } : {}) });
const measureSeconds = (performance.now() - t0) / 1000;
const rows = [];
for (const bpw of targets) {
  const out = join(work, `laminate-${bpw}`);
  t0 = performance.now();
  const r = await quantize(model, out, { bitsPerWeight: bpw, headBits, measurement: measurementPath, overwrite: true, ...sizing, ...(threads ? { threads } : {}) });
  rows.push({ method: 'laminate', target: bpw, dir: out, bpw: r.bitsPerWeight, quantizeSeconds: (performance.now() - t0) / 1000, calibration: r.calibration });
  console.error(`laminate ${bpw}: ${r.bitsPerWeight.toFixed(3)} bpw in ${rows.at(-1).quantizeSeconds.toFixed(1)} s`);
}
// Round-to-nearest at the same targets.
const rtnDir = join(work, 'rtn');
rmSync(rtnDir, { recursive: true, force: true });
const made = execFileSync(process.execPath, [join(here, 'make-exl2.mjs'), '--model', model, '--out', rtnDir, '--bpw', targets.map((b) => (Number.isInteger(b) ? b.toFixed(1) : String(b))).join(','), '--head-bits', String(headBits)], { encoding: 'utf8' });
for (const line of made.trim().split('\n')) {
  const m = JSON.parse(line);
  rows.push({ method: 'rtn', target: m.target_bpw, dir: m.dir, bpw: m.decoder_bpw });
}

// Scoring: windows of 256 tokens over the held-out text.
const reference = await loadModel(model, { device: 'cpu', ...(threads ? { threads } : {}) });
const tokenizer = reference.tokenizer;
const stream = [];
for (const line of readFileSync(values.eval, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  stream.push(...tokenizer.encode(JSON.parse(line).text), ...tokenizer.eosTokenIds.slice(0, 1));
}
const W = 256;
let windows = Math.floor(stream.length / W);
if (Number(values.windows) > 0) windows = Math.min(windows, Number(values.windows));
const vocab = reference.config.vocabSize;
const models = [];
for (const r of rows) models.push(await loadModel(r.dir, { device: 'cpu', ...(threads ? { threads } : {}) }));
const stats = rows.map(() => ({ nll: 0, kl: 0 }));
let refNll = 0, count = 0;
// log-softmax of row t of logits into out (no allocation: this loop is the scoring's cost)
const logSoftmax = (logits, t, out) => {
  const base = t * vocab;
  let max = -Infinity;
  for (let v = 0; v < vocab; v++) if (logits[base + v] > max) max = logits[base + v];
  let sum = 0;
  for (let v = 0; v < vocab; v++) sum += Math.exp(logits[base + v] - max);
  const lse = max + Math.log(sum);
  for (let v = 0; v < vocab; v++) out[v] = logits[base + v] - lse;
};
const p = new Float64Array(vocab), prob = new Float64Array(vocab), q = new Float64Array(vocab);
for (let w = 0; w < windows; w++) {
  const ids = stream.slice(w * W, (w + 1) * W);
  const ref = await reference.forward(ids, { allLogits: true });
  const outs = [];
  for (const m of models) outs.push(await m.forward(ids, { allLogits: true }));
  for (let t = 0; t < W - 1; t++) {
    logSoftmax(ref, t, p);
    for (let v = 0; v < vocab; v++) prob[v] = Math.exp(p[v]);
    const next = ids[t + 1];
    refNll -= p[next];
    for (let i = 0; i < outs.length; i++) {
      logSoftmax(outs[i], t, q);
      stats[i].nll -= q[next];
      let kl = 0;
      for (let v = 0; v < vocab; v++) kl += prob[v] * (p[v] - q[v]);
      stats[i].kl += kl;
    }
    count++;
  }
  if (process.stderr.isTTY || (w + 1) % 50 === 0) process.stderr.write(`scored ${w + 1}/${windows} windows\n`);
}
const refPpl = Math.exp(refNll / count);
const table = rows.map((r, i) => {
  const ppl = Math.exp(stats[i].nll / count);
  return { ...r, ppl, pplIncrease: ppl / refPpl - 1, kl: stats[i].kl / count };
});

// The bench-shaped model: how the time grows.
let growth = null;
if (values['bench-model']) {
  const dir = resolve(values['bench-model']);
  const m = join(work, 'bench-measurement.json');
  t0 = performance.now();
  await measure(dir, m, { ...(threads ? { threads } : {}), ...(values.length ? { length: Number(values.length) } : {}) });
  const ms = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const r = await quantize(dir, join(work, 'bench-4.0'), { bitsPerWeight: 4.0, headBits, measurement: m, overwrite: true, ...sizing, ...(threads ? { threads } : {}) });
  growth = { model: dir, measureSeconds: ms, quantizeSeconds: (performance.now() - t0) / 1000, calibration: r.calibration };
}

const result = { model, headBits, windows, tokensScored: count, referencePerplexity: refPpl, measureSeconds, table, growth };
const out = values.out ?? join(here, 'results', `quant-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify(result, null, 2));

console.log(`\n${model}: float perplexity ${refPpl.toFixed(3)} over ${count} positions (${windows} windows of ${W})`);
console.log(`measurement: ${measureSeconds.toFixed(1)} s (once, reused for every bpw)\n`);
console.log('| target | laminate bpw | ppl | +ppl | KL | RTN bpw | RTN +ppl | RTN KL | KL ratio (laminate / RTN) | quantize s |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const bpw of targets) {
  const a = table.find((r) => r.method === 'laminate' && r.target === bpw);
  const b = table.find((r) => r.method === 'rtn' && Math.abs(r.target - bpw) < 1e-9);
  console.log(`| ${bpw} | ${a.bpw.toFixed(3)} | ${a.ppl.toFixed(3)} | ${(a.pplIncrease * 100).toFixed(2)}% | ${a.kl.toFixed(4)} | ${b ? b.bpw.toFixed(3) : '-'} | ${b ? (b.pplIncrease * 100).toFixed(2) + '%' : '-'} | ${b ? b.kl.toFixed(4) : '-'} | ${b ? (a.kl / b.kl).toFixed(3) : '-'} | ${a.quantizeSeconds.toFixed(1)} |`);
}
if (growth) console.log(`\nbench-shaped model ${growth.model}: measurement ${growth.measureSeconds.toFixed(1)} s, quantization at 4.0 bpw ${growth.quantizeSeconds.toFixed(1)} s (${growth.calibration.rows} rows x ${growth.calibration.length})`);
console.log(`\n(written to ${out})`);
