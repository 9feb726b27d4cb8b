#!/usr/bin/env node
// Merge throughput: a passthrough merge of a model directory (layers [0, n) + [n/4, n),
// the seed's depth up-scaling shape) against a plain `cp` of the same number of bytes
// on the same disk, and the merge's peak RSS.
//   node bench/merge.mjs --model DIR [--out DIR]
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { model: { type: 'string' }, out: { type: 'string' } } });
if (!values.model) {
  console.error('usage: node bench/merge.mjs --model DIR [--out DIR]');
  process.exit(1);
}
const model = resolve(values.model);
const layers = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8')).num_hidden_layers;
const work = mkdtempSync(join(values.out ?? model + '/..', '.laminate-merge-bench-'));
const yaml = `slices:
- sources:
  - model: ${model}
    layer_range: [0, ${layers}]
- sources:
  - model: ${model}
    layer_range: [${Math.floor(layers / 4)}, ${layers}]
merge_method: passthrough
`;
const dropCaches = () => spawnSync('sh', ['-c', 'sync']);
try {
  // the merge, in a child process so that its peak RSS is its own
  dropCaches();
  const script = `import { merge } from 'laminate';
    const t = performance.now();
    const r = await merge(process.argv[1], process.argv[2]);
    console.log(JSON.stringify({ seconds: (performance.now() - t) / 1000, bytes: r.bytes, peakRss: process.resourceUsage().maxRSS * 1024 }));`;
  const merged = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script, yaml, join(work, 'merged')], { cwd: resolve(import.meta.dirname, '..'), encoding: 'utf8' }).trim());
  // cp of the same number of bytes: the source weights, and then again up to the merged size
  const weights = readdirSync(model).filter((f) => f.endsWith('.safetensors'));
  const sourceBytes = weights.reduce((a, f) => a + statSync(join(model, f)).size, 0);
  dropCaches();
  const t = performance.now();
  let copied = 0;
  for (let round = 0; copied < merged.bytes; round++) {
    for (const f of weights) {
      execFileSync('cp', [join(model, f), join(work, `copy-${round}-${f}`)]);
      copied += statSync(join(model, f)).size;
    }
  }
  execFileSync('sync');
  const cpSeconds = (performance.now() - t) / 1000;
  const mergeRate = merged.bytes / merged.seconds;
  const cpRate = copied / cpSeconds;
  console.log(JSON.stringify({
    model, source_bytes: sourceBytes, merged_bytes: merged.bytes,
    merge_seconds: Math.round(merged.seconds * 100) / 100, merge_GBps: Math.round(mergeRate / 1e7) / 100,
    cp_seconds: Math.round(cpSeconds * 100) / 100, cp_GBps: Math.round(cpRate / 1e7) / 100,
    ratio_vs_cp: Math.round((mergeRate / cpRate) * 100) / 100,
    merge_peak_rss_MB: Math.round(merged.peakRss / 2 ** 20),
  }));
} finally {
  rmSync(work, { recursive: true, force: true });
}
