#!/usr/bin/env node
// laminate as an engine of the shared benchmark harness (../shared/bench, run_bench.sh):
// the same arguments as its node-llama-cpp runner, a token-id prompt, greedy decoding,
// and one JSON line on stdout.
//
//   node bench/engine.mjs --model DIR [--quant NAME] --threads T --prompt-len P --gen N
//        --repeats R --warmup W [--dump-logits FILE | --no-correctness] [--no-timing]
//        [--prompt-file ids.json] [--prompt-seed S] [--isa auto|scalar|avx2|avx2vnni|avx512|avx512vnni]
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

import { loadModel } from 'laminate';

function parseArgs(argv) {
  const a = { quant: null, threads: 1, promptLen: 128, gen: 128, repeats: 3, warmup: 1, promptFile: null, promptSeed: 42,
    dumpLogits: null, correctness: true, timing: true, isa: 'auto' };
  const num = (v, k) => { const n = Number(v); if (!Number.isInteger(n) || n < 0) throw new Error(`--${k} needs a non-negative integer`); return n; };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    const v = () => { if (i + 1 >= argv.length) throw new Error(`${k} needs a value`); return argv[++i]; };
    switch (k) {
      case '--model': a.model = v(); break;
      case '--quant': a.quant = v(); break;
      case '--threads': a.threads = num(v(), 'threads'); break;
      case '--prompt-len': a.promptLen = num(v(), 'prompt-len'); break;
      case '--gen': a.gen = num(v(), 'gen'); break;
      case '--repeats': a.repeats = num(v(), 'repeats'); break;
      case '--warmup': a.warmup = num(v(), 'warmup'); break;
      case '--prompt-file': a.promptFile = v(); break;
      case '--prompt-seed': a.promptSeed = num(v(), 'prompt-seed'); break;
      case '--dump-logits': a.dumpLogits = v(); break;
      case '--no-correctness': a.correctness = false; break;
      case '--no-timing': a.timing = false; break;
      case '--isa': a.isa = v(); break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  if (!a.model) throw new Error('--model is required');
  return a;
}

// The harness's prompt generator, from its folder (the harness runs engines from there).
async function makePrompt(n, vocab, seed) {
  const dirs = [process.env.LAMINATE_BENCH_HARNESS, process.cwd(), resolve(import.meta.dirname ?? '.', '../../shared/bench')].filter(Boolean);
  const file = dirs.map((d) => join(d, 'prompt_tokens.mjs')).find((f) => existsSync(f));
  if (!file) throw new Error('prompt_tokens.mjs of the benchmark harness not found (set LAMINATE_BENCH_HARNESS)');
  return (await import(pathToFileURL(file).href)).makePrompt(n, vocab, seed);
}

const now = () => Number(process.hrtime.bigint()) / 1e9;
const r3 = (x) => Math.round(x * 1000) / 1000;
const median = (xs) => { const s = [...xs].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
function machineBusySeconds() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = f;
    return (user + nice + system + irq + softirq + (steal || 0)) / 100;
  } catch { return NaN; }
}
const ownCpuSeconds = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };

// One greedy run from an empty cache: the prompt, then `steps` single-token decode steps;
// returns steps + 1 tokens.
async function greedyRun(model, prompt, decodeSteps) {
  const seq = model.createSequence();
  try {
    const t0 = now();
    const [first] = await model.step([{ sequence: seq, tokens: prompt }]);
    let token = argmax(first);
    const t1 = now();
    const tokens = [token];
    const steps = [];
    for (let i = 0; i < decodeSteps; i++) {
      const s = now();
      const [logits] = await model.step([{ sequence: seq, tokens: [token] }]);
      token = argmax(logits);
      steps.push(now() - s);
      tokens.push(token);
    }
    return { tokens, tPrompt: t1 - t0, tDecode: now() - t1, steps, first };
  } finally {
    seq.dispose();
  }
}

function argmax(v) {
  let b = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[b]) b = i;
  return b;
}

async function main() {
  const args = parseArgs(process.argv);
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  const t0 = now();
  const model = await loadModel(args.model, { threads: args.threads, isa: args.isa, contextSize: Math.max(256, args.promptLen + args.gen + 16) });
  const loadS = now() - t0;
  const vocab = model.config.vocabSize;
  const prompt = args.promptFile ? JSON.parse(readFileSync(args.promptFile, 'utf8')).map(Number) : await makePrompt(args.promptLen, vocab, args.promptSeed);
  const out = {
    engine: 'laminate', engine_version: pkg.version, model: args.model, threads: model.info.threads, isa: model.info.isa,
    prompt_len: prompt.length, gen: args.gen, load_s: r3(loadS), rss_after_load_bytes: process.memoryUsage().rss,
    weight_bytes: model.info.weightBytes, prompt_tokens: prompt,
  };
  if (args.quant) out.quant = args.quant;

  if (args.correctness) {
    const { tokens, first } = await greedyRun(model, prompt, Math.max(0, args.gen - 1));
    let max = -Infinity;
    for (const x of first) max = Math.max(max, x);
    let sum = 0;
    for (const x of first) sum += Math.exp(x - max);
    const lse = max + Math.log(sum);
    out.greedy_tokens = tokens.slice(0, args.gen);
    const order = Array.from(first.keys()).sort((x, y) => first[y] - first[x] || x - y);
    out.first_top10 = order.slice(0, 10).map((id) => ({ id, logprob: first[id] - lse }));
    if (args.dumpLogits) writeFileSync(args.dumpLogits, JSON.stringify({ kind: 'logits', values: Array.from(first) }));
  }

  if (args.timing) {
    for (let i = 0; i < args.warmup; i++) await greedyRun(model, prompt, Math.min(args.gen, 8));
    const pp = [], tg = [];
    let steps = [];
    const busy0 = machineBusySeconds(), own0 = ownCpuSeconds(), wall0 = now();
    for (let i = 0; i < args.repeats; i++) {
      const r = await greedyRun(model, prompt, args.gen);
      pp.push(prompt.length / r.tPrompt);
      tg.push(args.gen / r.tDecode);
      steps = steps.concat(r.steps);
    }
    const wall = now() - wall0;
    out.own_cpu_cores = r3((ownCpuSeconds() - own0) / wall);
    out.other_load_cores = r3((machineBusySeconds() - busy0 - (ownCpuSeconds() - own0)) / wall);
    const ms = steps.map((x) => x * 1000).sort((x, y) => x - y);
    const pct = (q) => r3(ms[Math.min(ms.length - 1, Math.floor(q * ms.length))]);
    out.tg_step_ms = { p10: pct(0.1), p50: pct(0.5), p90: pct(0.9), max: r3(ms[ms.length - 1]) };
    out.pp_tok_s = r3(median(pp));
    out.tg_tok_s = r3(median(tg));
    out.pp_tok_s_runs = pp.map(r3);
    out.tg_tok_s_runs = tg.map(r3);
  }
  out.peak_rss_bytes = (await import('node:process')).resourceUsage().maxRSS * 1024;
  model.dispose();
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(e?.stack ?? String(e)); process.exit(1); });
