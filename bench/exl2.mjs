#!/usr/bin/env node
// EXL2 on the CPU against node-llama-cpp's Q4_0 and Q8_0 on the same weights: decode and
// prefill tok/s, bytes read per decoded token, and the share of the memory-bandwidth limit.
//   node bench/exl2.mjs --models DIR[,DIR...] --gguf FILE[,FILE...] [--threads 2]
//        [--prompt-len 128] [--gen 64] [--repeats 3] [--bandwidth GB/s] [--harness DIR]
//        [--isa auto|avx2,avx2vnni,...] (one row per EXL2 model and kernel family)
// EXL2 directories come from bench/make-exl2.mjs; --bandwidth defaults to the harness's
// bw measurement (./bw 2 2 12, median) when the harness is there.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    models: { type: 'string' }, gguf: { type: 'string', default: '' }, threads: { type: 'string', default: '2' },
    'prompt-len': { type: 'string', default: '128' }, gen: { type: 'string', default: '64' }, repeats: { type: 'string', default: '3' },
    bandwidth: { type: 'string' }, harness: { type: 'string', default: resolve(here, '../../shared/bench') },
    isa: { type: 'string', default: 'auto' },
  },
});
if (!values.models) {
  console.error('usage: node bench/exl2.mjs --models DIR[,DIR...] [--gguf FILE,...] (see bench/exl2.mjs)');
  process.exit(1);
}
const harness = resolve(values.harness);
const common = ['--threads', values.threads, '--prompt-len', values['prompt-len'], '--gen', values.gen, '--repeats', values.repeats, '--warmup', '1', '--no-correctness'];
const env = { ...process.env, LAMINATE_BENCH_HARNESS: harness, NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' };
const run = (cmd, args, cwd) => JSON.parse(execFileSync(cmd, args, { cwd, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').at(-1));

// Bytes a decode step reads: every weight once, the embedding only one row.
function safetensorsBytes(dir) {
  let total = 0;
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.safetensors'))) {
    const buf = readFileSync(join(dir, f));
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
    for (const [name, e] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const bytes = e.data_offsets[1] - e.data_offsets[0];
      total += name === 'model.embed_tokens.weight' ? bytes / e.shape[0] : bytes;
    }
  }
  return total;
}

let bandwidth = values.bandwidth ? Number(values.bandwidth) * 1e9 : NaN;
if (Number.isNaN(bandwidth) && existsSync(join(harness, 'bw.c'))) {
  execFileSync('gcc', ['-O3', '-march=native', '-pthread', 'bw.c', '-o', 'bw'], { cwd: harness });
  const runs = [0, 1, 2].map(() => execFileSync(join(harness, 'bw'), ['2', '2', '12'], { cwd: harness, encoding: 'utf8' }).trim().split('\n').map((l) => JSON.parse(l)).find((r) => r.threads === Number(values.threads)).median_GBps);
  bandwidth = runs.sort((a, b) => a - b)[1] * 1e9;
}

const rows = [];
for (const dir of values.models.split(',').filter(Boolean)) {
  for (const isa of values.isa.split(',').filter(Boolean)) {
    const r = run(process.execPath, [join(here, 'engine.mjs'), '--model', resolve(dir), '--isa', isa, ...common], process.cwd());
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    rows.push({ engine: `laminate (${r.isa})`, weights: basename(dir), bpw: config.quantization_config?.bits ?? null, bytes: safetensorsBytes(dir), pp: r.pp_tok_s, tg: r.tg_tok_s, step: r.tg_step_ms });
  }
}
for (const file of values.gguf.split(',').filter(Boolean)) {
  const r = run(process.execPath, [join(harness, 'llamacpp_bench.mjs'), '--model', resolve(file), ...common], harness);
  // the harness's own accounting of the bytes a GGUF decode step reads
  const bytes = Number(execFileSync('python3', ['-c', `import sys; sys.path.insert(0, '.'); import roofline; print(roofline.bytes_per_token(sys.argv[1], 0, 0)['weights'])`, resolve(file)], { cwd: harness, encoding: 'utf8' }).trim());
  rows.push({ engine: 'node-llama-cpp', weights: basename(file), bpw: null, bytes, pp: r.pp_tok_s, tg: r.tg_tok_s, step: r.tg_step_ms });
}
const f = (x, d = 1) => (x === undefined || x === null || Number.isNaN(x) ? '-' : Number(x).toFixed(d));
console.log(`\n${values.threads} threads, prompt ${values['prompt-len']}, ${values.gen} decode steps, medians of ${values.repeats}; bandwidth ${f(bandwidth / 1e9)} GB/s`);
console.log('| engine | weights | bpw (decoder) | GB read / token | pp tok/s | tg tok/s | tg p50 ms | tg % of bandwidth limit |');
console.log('|---|---|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.engine} | ${r.weights} | ${f(r.bpw, 2)} | ${f(r.bytes / 1e9, 3)} | ${f(r.pp)} | ${f(r.tg, 2)} | ${f(r.step?.p50)} | ${f((100 * r.tg * r.bytes) / bandwidth, 0)}% |`);
