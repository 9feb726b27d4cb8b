#!/usr/bin/env node
// npm run bench -- --model DIR [--threads 2,1] [--prompt-len 128] [--gen 128] [--repeats 3]
//                  [--gguf FILE] [--harness DIR] [--out FILE] [--concurrency 1,4,16]
//                  [--rounds N] [--isa auto|scalar|avx2|avx2vnni|avx512|avx512vnni] [--busy N]
//                  [--no-single] (only the concurrency table: npm run bench:concurrency)
//
// Prefill and decode tok/s, load time and peak RSS of laminate for one model directory,
// one fresh process per thread count (bench/engine.mjs). With --gguf, runs node-llama-cpp
// on that file through the shared harness (../shared/bench by default) in the same way
// and prints laminate / node-llama-cpp ratios. Then continuous batching: aggregate decode
// tok/s and time to first token with 1, 4 and 16 concurrent generations
// (bench/concurrency.mjs; --concurrency '' skips it), beside node-llama-cpp decoding as
// many sequences in one context (bench/concurrency-llamacpp.mjs) when --gguf is given. With --rounds N the two engines
// run N times each, alternating, and the table gives the median of the rounds: on a
// shared machine whose speed drifts, alternation keeps the ratio fair. --prompt-len takes
// a list (128,2048,8192): one row per thread count and prompt length, for the table of
// how speed falls with context. --busy N runs N processes that spin on a core each while
// both engines run, to see how decode copes with a core taken by another program. Writes JSON (--out, default
// bench/results/<time>.json) and prints a table.
import { execFileSync, spawn } from 'node:child_process';
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
    rounds: { type: 'string', default: '1' },
    isa: { type: 'string', default: 'auto' },
    busy: { type: 'string', default: '0' },
    'no-single': { type: 'boolean', default: false },
  },
});
if (!values.model) {
  console.error('usage: npm run bench -- --model DIR [--threads 2,1] [--gguf FILE] (see bench/run.mjs)');
  process.exit(1);
}
const harness = resolve(values.harness);
const common = ['--gen', values.gen, '--repeats', values.repeats, '--warmup', '1', '--no-correctness'];
const list = (v) => v.split(',').map((x) => x.trim()).filter(Boolean);

function runJson(cmd, args, cwd) {
  const out = execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, LAMINATE_BENCH_HARNESS: harness, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' } });
  return JSON.parse(out.trim().split('\n').at(-1));
}

const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds needs a positive integer');
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
// The median round of one engine: its tok/s and step times are the medians over rounds.
function combine(runs) {
  if (runs.length === 1) return runs[0];
  const out = { ...runs[0], rounds: runs.length };
  for (const k of ['pp_tok_s', 'tg_tok_s', 'load_s', 'peak_rss_bytes']) out[k] = median(runs.map((r) => r[k]));
  out.tg_step_ms = Object.fromEntries(Object.keys(runs[0].tg_step_ms).map((k) => [k, median(runs.map((r) => r.tg_step_ms[k]))]));
  out.pp_tok_s_rounds = runs.map((r) => r.pp_tok_s);
  out.tg_tok_s_rounds = runs.map((r) => r.tg_tok_s);
  return out;
}

const busy = Number(values.busy);
if (!Number.isInteger(busy) || busy < 0) throw new Error('--busy needs a non-negative integer');
const spinners = Array.from({ length: busy }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
process.on('exit', () => spinners.forEach((p) => p.kill()));

const rows = [];
for (const t of values['no-single'] ? [] : list(values.threads)) {
  for (const promptLen of list(values['prompt-len'])) {
    const args = ['--threads', t, '--prompt-len', promptLen, ...common];
    const lamRuns = [], cppRuns = [];
    for (let r = 0; r < rounds; r++) {
      const lam = runJson(process.execPath, [join(here, 'engine.mjs'), '--model', resolve(values.model), '--isa', values.isa, ...args], process.cwd());
      delete lam.prompt_tokens;
      lamRuns.push(lam);
      if (values.gguf) {
        if (!existsSync(join(harness, 'llamacpp_bench.mjs'))) throw new Error(`no benchmark harness at ${harness} (--harness DIR)`);
        const cpp = runJson(process.execPath, [join(harness, 'llamacpp_bench.mjs'), '--model', resolve(values.gguf), ...args], harness);
        delete cpp.prompt_tokens;
        cppRuns.push(cpp);
      }
    }
    const row = { threads: Number(t), promptLen: Number(promptLen), laminate: combine(lamRuns) };
    if (values.gguf) row.llamaCpp = combine(cppRuns);
    rows.push(row);
  }
}
spinners.forEach((p) => p.kill());

const f = (x, d = 1) => (x === undefined ? '-' : Number(x).toFixed(d));
const mb = (b) => (b / 2 ** 20).toFixed(0);
if (rows.length) {
  console.log(`\nmodel ${values.model}: gen ${values.gen}, ${values.repeats} repeats (medians)${rounds > 1 ? `, median of ${rounds} alternating rounds` : ''}${busy ? `, ${busy} busy process(es) beside` : ''}`);
  console.log('| threads | prompt | isa | pp tok/s | tg tok/s | tg step ms p10/p50/p90 | load s | weights MiB | peak RSS MiB | RSS / weights |' + (values.gguf ? ' llama.cpp pp | llama.cpp tg | pp ratio | tg ratio |' : ''));
  console.log('|---|---|---|---|---|---|---|---|---|---|' + (values.gguf ? '---|---|---|---|' : ''));
  for (const { threads, promptLen, laminate: l, llamaCpp: c } of rows) {
    const s = l.tg_step_ms;
    let line = `| ${threads} | ${promptLen} | ${l.isa} | ${f(l.pp_tok_s)} | ${f(l.tg_tok_s, 2)} | ${f(s.p10)}/${f(s.p50)}/${f(s.p90)} | ${f(l.load_s, 2)} | ${mb(l.weight_bytes)} | ${mb(l.peak_rss_bytes)} | ${f(l.peak_rss_bytes / l.weight_bytes, 3)} |`;
    if (c) line += ` ${f(c.pp_tok_s)} | ${f(c.tg_tok_s, 2)} | ${f(l.pp_tok_s / c.pp_tok_s, 2)} | ${f(l.tg_tok_s / c.tg_tok_s, 2)} |`;
    console.log(line);
  }
}
const batching = [];
if (values.concurrency) {
  const threads = list(values.threads)[0];
  const promptLen = list(values['prompt-len'])[0];
  const args = ['--threads', threads, '--concurrency', values.concurrency, '--prompt-len', promptLen, '--gen', String(Math.min(64, Number(values.gen)))];
  const lines = (file, extra, cwd) => execFileSync(process.execPath, [join(here, file), ...extra, ...args], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
    .trim().split('\n').map((line) => JSON.parse(line));
  const ours = lines('concurrency.mjs', ['--model', resolve(values.model)]);
  // node-llama-cpp decodes the same number of sequences in one context
  const peer = values.gguf ? lines('concurrency-llamacpp.mjs', ['--gguf', resolve(values.gguf), '--harness', harness], harness) : [];
  for (const b of ours) batching.push({ ...b, llamaCpp: peer.find((p) => p.concurrency === b.concurrency) ?? null });
  console.log(`\ncontinuous batching (${threads} threads, prompt ${promptLen}, ${batching[0]?.gen} new tokens each)`);
  console.log('| concurrent requests | aggregate tok/s | decode tok/s | time to first token ms (median / max) |' + (values.gguf ? ' llama.cpp aggregate | llama.cpp decode | aggregate ratio | decode ratio |' : ''));
  console.log('|---|---|---|---|' + (values.gguf ? '---|---|---|---|' : ''));
  for (const b of batching) {
    let line = `| ${b.concurrency} | ${f(b.aggregate_tok_s)} | ${f(b.decode_tok_s)} | ${f(b.ttft_ms_median, 0)} / ${f(b.ttft_ms_max, 0)} |`;
    const c = b.llamaCpp;
    if (c) line += ` ${f(c.aggregate_tok_s)} | ${f(c.decode_tok_s)} | ${f(b.aggregate_tok_s / c.aggregate_tok_s, 2)} | ${f(b.decode_tok_s / c.decode_tok_s, 2)} |`;
    console.log(line);
  }
}
const out = values.out ?? join(here, 'results', `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ model: values.model, gguf: values.gguf ?? null, busy, rows, batching }, null, 2));
console.log(`\nwritten ${out}`);
