#!/usr/bin/env node
// The fuzzing suite: `npm run fuzz -- [--targets model,exl2,merge,api] [--seeds N] [--from S]
// [--jobs J] [--timeout SECONDS] [--verbose]`. Each attempt runs in its own process with a
// timeout and ends as one of: success, error (clean), unclean (an internal error reached
// the caller), wrong (a broken promise: bad numbers, lost data, leaked pages), crash (the
// process died) or hang (the timeout, or a process that would not exit). Anything but
// success and error fails the run. The same seed replays the same attempt:
// `npm run fuzz -- --targets merge --from 1234 --seeds 1 --verbose`.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    targets: { type: 'string', default: 'model,exl2,merge,api' },
    seeds: { type: 'string', default: '50' },
    from: { type: 'string', default: '1' },
    jobs: { type: 'string', default: '2' },
    timeout: { type: 'string', default: '60' },
    verbose: { type: 'boolean', default: false },
    report: { type: 'string' },
  },
});
const targets = args.targets.split(',');
const seeds = Number(args.seeds);
const from = Number(args.from);
const jobs = Number(args.jobs);
const timeoutMs = Number(args.timeout) * 1000;
for (const t of targets) if (!['model', 'exl2', 'merge', 'api'].includes(t)) throw new Error(`unknown target '${t}' (model, exl2, merge, api)`);

const { demoModelDir, quantize } = await import('../dist/index.js');

/** Inputs shared by every attempt, made once per version of the demo model. */
const demoDigest = () =>
  createHash('sha1')
    .update(readdirSync(demoModelDir).sort().map((f) => `${f}:${createHash('sha1').update(readFileSync(join(demoModelDir, f))).digest('hex')}`).join())
    .digest('hex');

async function prepare() {
  const digest = demoDigest();
  const cache = join(tmpdir(), `laminate-fuzz-${digest.slice(0, 12)}`);
  const paths = { digest, demo: demoModelDir, exl2: join(cache, 'exl2'), mergeB: join(cache, 'merge-b'), mergeC: join(cache, 'merge-c') };
  // two more inputs for merges: the demo model with some weights' signs flipped
  for (const [dir, every] of [[paths.mergeB, 7], [paths.mergeC, 5]]) {
    if (existsSync(join(dir, 'model.safetensors'))) continue;
    mkdirSync(dir, { recursive: true });
    for (const f of readdirSync(demoModelDir)) copyFileSync(join(demoModelDir, f), join(dir, f));
    const blob = readFileSync(join(dir, 'model.safetensors'));
    const start = 8 + Number(blob.readBigUInt64LE(0));
    for (let i = start + 1; i < blob.length; i += 2 * every) blob[i] ^= 0x80;
    writeFileSync(join(dir, 'model.safetensors'), blob);
  }
  if (targets.includes('exl2') && !existsSync(join(paths.exl2, 'config.json'))) {
    process.stdout.write('quantizing the demo model for the exl2 target (once)... ');
    await quantize(demoModelDir, paths.exl2, { bitsPerWeight: 4, headBits: 6, rows: 3, length: 48, measurementRows: 2, threads: jobs, overwrite: true });
    console.log('done');
  }
  return paths;
}

function runAttempt(target, seed, cache) {
  const work = mkdtempSync(join(tmpdir(), `laminate-fuzz-${target}-`));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--max-old-space-size=2048', join(here, 'attempt.mjs'), target, String(seed), JSON.stringify(cache), work], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let timedOut = false;
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const started = Date.now();
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      rmSync(work, { recursive: true, force: true });
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      const reported = line ? JSON.parse(line.slice(7)) : undefined;
      let result;
      if (timedOut) result = { ...reported, outcome: 'hang', detail: reported ? `finished (${reported.outcome}) but the process did not exit` : `no answer in ${timeoutMs / 1000} s` };
      else if (!reported || signal || code !== 0) result = { ...reported, outcome: 'crash', detail: `exit ${signal ?? code}: ${(err || out).trim().split('\n').slice(-6).join(' | ').slice(0, 600)}` };
      else result = reported;
      resolve({ target, seed, ms: Date.now() - started, ...result });
    });
  });
}

const cache = await prepare();
const queue = targets.flatMap((target) => Array.from({ length: seeds }, (_, i) => ({ target, seed: from + i })));
const results = [];
const FAILING = new Set(['unclean', 'wrong', 'crash', 'hang']);
async function worker() {
  for (let next = queue.shift(); next; next = queue.shift()) {
    const r = await runAttempt(next.target, next.seed, cache);
    results.push(r);
    if (args.verbose || FAILING.has(r.outcome)) {
      console.log(`${r.target} seed ${r.seed}: ${r.outcome} (${r.ms} ms, event loop blocked ${r.blockMs ?? '?'} ms) ${r.detail ?? ''}`);
      if (r.log?.length) for (const l of r.log) console.log(`    ${l.slice(0, 300)}`);
    }
  }
}
const t0 = Date.now();
await Promise.all(Array.from({ length: jobs }, worker));

const outcomes = ['success', 'error', 'unclean', 'wrong', 'crash', 'hang'];
console.log(`\n${'target'.padEnd(8)}${outcomes.map((o) => o.padStart(9)).join('')}   longest event-loop block`);
for (const t of targets) {
  const mine = results.filter((r) => r.target === t);
  const worst = mine.reduce((a, r) => ((r.blockMs ?? 0) > (a?.blockMs ?? -1) ? r : a), undefined);
  console.log(`${t.padEnd(8)}${outcomes.map((o) => String(mine.filter((r) => r.outcome === o).length).padStart(9)).join('')}   ${worst?.blockMs ?? '?'} ms (seed ${worst?.seed})`);
}
// the attempts work on copies: the demo model they start from must be as it was
if (demoDigest() !== cache.digest) {
  results.push({ target: 'harness', seed: 0, outcome: 'wrong', detail: `the demo model at ${demoModelDir} changed during the run` });
  console.log(`the demo model at ${demoModelDir} changed during the run`);
}
const failed = results.filter((r) => FAILING.has(r.outcome));
console.log(`\n${results.length} attempts in ${((Date.now() - t0) / 1000).toFixed(0)} s; ${failed.length} failed`);
if (args.report) writeFileSync(args.report, JSON.stringify(results, null, 1));
process.exitCode = failed.length ? 1 : 0;
