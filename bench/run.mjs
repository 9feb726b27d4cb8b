#!/usr/bin/env node
// npm run bench -- --model DIR [--threads 2,1] [--prompt-len 128] [--gen 128] [--repeats 3]
//                  [--gguf FILE] [--harness DIR] [--out FILE] [--concurrency 1,4,16]
//
// Prefill and decode tok/s, load time and peak RSS of laminate for one model directory,
// one fresh process per thread count (bench/engine.mjs). With --gguf, runs node-llama-cpp
// on that file through the shared harness (../shared/bench by default) in the same way
// and prints laminate / node-llama-cpp ratios. Then continuous batching: aggregate decode
// tok/s and time to first token with 1, 4 and 16 concurrent generations
// (bench/concurrency.mjs; --concurrency '' skips it). Writes JSON (--out, default
// bench/results/<time>.json) and prints a table.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    threads: { type: 'string', default: '2,1' },
    'prompt-len': { type: 'string', default: '128' },
    gen: { type: 'string', default: '128' },
    repeats: { type: 'string', default: '3' },
    gguf: { type: 'string' },
    harness: { type: 'string', default: resolve(here, '../../shared/bench') },
    out: { type: 'string' },
    concurrency: { type: 'string', default: '1,4,16' },
  },
});
if (!values.model) {
  console.error('usage: npm run bench -- --model DIR [--threads 2,1] [--gguf FILE] (see bench/run.mjs)');
  process.exit(1);
}
const harness = resolve(values.harness);
const common = ['--prompt-len', values['prompt-len'], '--gen', values.gen, '--repeats', values.repeats, '--warmup', '1', '--no-correctness'];

function runJson(cmd, args, cwd) {
  const out = execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, LAMINATE_BENCH_HARNESS: harness, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' } });
  return JSON.parse(out.trim().split('\n').at(-1));
}

const rows = [];
for (const t of values.threads.split(',').map((s) => s.trim())) {
  const lam = runJson(process.execPath, [join(here, 'engine.mjs'), '--model', resolve(values.model), '--threads', t, ...common], process.cwd());
  delete lam.prompt_tokens;
  const row = { threads: Number(t), laminate: lam };
  if (values.gguf) {
    if (!existsSync(join(harness, 'llamacpp_bench.mjs'))) throw new Error(`no benchmark harness at ${harness} (--harness DIR)`);
    row.llamaCpp = runJson(process.execPath, [join(harness, 'llamacpp_bench.mjs'), '--model', resolve(values.gguf), '--threads', t, ...common], harness);
  }
  rows.push(row);
}

const f = (x, d = 1) => (x === undefined ? '-' : Number(x).toFixed(d));
const mb = (b) => (b / 2 ** 20).toFixed(0);
console.log(`\nmodel ${values.model}: prompt ${values['prompt-len']}, gen ${values.gen}, ${values.repeats} repeats (medians)`);
console.log('| threads | isa | pp tok/s | tg tok/s | tg step ms p10/p50/p90 | load s | weights MiB | peak RSS MiB | RSS / weights |' + (values.gguf ? ' llama.cpp pp | llama.cpp tg | pp ratio | tg ratio |' : ''));
console.log('|---|---|---|---|---|---|---|---|---|' + (values.gguf ? '---|---|---|---|' : ''));
for (const { threads, laminate: l, llamaCpp: c } of rows) {
  const s = l.tg_step_ms;
  let line = `| ${threads} | ${l.isa} | ${f(l.pp_tok_s)} | ${f(l.tg_tok_s, 2)} | ${f(s.p10)}/${f(s.p50)}/${f(s.p90)} | ${f(l.load_s, 2)} | ${mb(l.weight_bytes)} | ${mb(l.peak_rss_bytes)} | ${f(l.peak_rss_bytes / l.weight_bytes, 3)} |`;
  if (c) line += ` ${f(c.pp_tok_s)} | ${f(c.tg_tok_s, 2)} | ${f(l.pp_tok_s / c.pp_tok_s, 2)} | ${f(l.tg_tok_s / c.tg_tok_s, 2)} |`;
  console.log(line);
}
const batching = [];
if (values.concurrency) {
  const threads = values.threads.split(',')[0].trim();
  const text = execFileSync(process.execPath, [join(here, 'concurrency.mjs'), '--model', resolve(values.model), '--threads', threads, '--concurrency', values.concurrency, '--prompt-len', values['prompt-len'], '--gen', String(Math.min(64, Number(values.gen)))], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  for (const line of text.trim().split('\n')) batching.push(JSON.parse(line));
  console.log(`\ncontinuous batching (${threads} threads, prompt ${values['prompt-len']}, ${batching[0]?.gen} new tokens each)`);
  console.log('| concurrent requests | aggregate tok/s | decode tok/s | time to first token ms (median / max) |');
  console.log('|---|---|---|---|');
  for (const b of batching) console.log(`| ${b.concurrency} | ${f(b.aggregate_tok_s)} | ${f(b.decode_tok_s)} | ${f(b.ttft_ms_median, 0)} / ${f(b.ttft_ms_max, 0)} |`);
}
const out = values.out ?? join(here, 'results', `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ model: values.model, gguf: values.gguf ?? null, rows, batching }, null, 2));
console.log(`\nwritten ${out}`);
