// The reference job in miniature, on the bundled 8-layer demo model: a passthrough depth
// up-scale merge (layers [0, 6) stacked on layers [2, 8): 12 layers), quantized to EXL2 at
// about 4 bits per weight with a 6-bit head, then loaded and chatted with. The same three
// calls turn Mistral-7B into the 48-layer, 10.7B-parameter model of the design, at 4.0 bpw.
//
//   node examples/pipeline.mjs [OUT_DIR]      (default: a new temporary directory)
//
// Environment: SLICES (the layer ranges stacked, default 0-6,2-8), BPW (default 4.0),
// HEAD_BITS (default 6), the calibration size: ROWS (default 8), LENGTH (tokens per row,
// default 128), MEASUREMENT_ROWS (default 4); MAX_TOKENS (of the reply, default 48), THREADS.
// The calibration text is the set shipped in the package. ExLlamaV2's converter uses 115
// and 19 rows of 2048 tokens (scaled by the model's width); fewer keep this example quick,
// at some cost in accuracy. Measurement takes most of the time: it quantizes and scores
// every candidate recipe of every attention and MLP block.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { demoModelDir, loadModel, merge, quantize } from 'laminate';

const env = (name, fallback) => (process.env[name] ? Number(process.env[name]) : fallback);
const out = process.argv[2] ? resolve(process.argv[2]) : mkdtempSync(join(tmpdir(), 'laminate-pipeline-'));
mkdirSync(out, { recursive: true });
const threads = env('THREADS', undefined);
const seconds = (t0) => ((performance.now() - t0) / 1000).toFixed(1);
console.log(`working in ${out}`);

// 1. Merge: mergekit's YAML, written beside the outputs so that `laminate merge` or mergekit
//    itself could run it too. (loadModel(yaml) would run the merge without writing it.)
const slices = (process.env.SLICES ?? '0-6,2-8').split(',').map((r) => r.split('-').map(Number));
const config = `slices:
${slices.map(([from, to]) => `- sources:\n  - model: ${JSON.stringify(demoModelDir)}\n    layer_range: [${from}, ${to}]\n`).join('')}merge_method: passthrough
dtype: bfloat16
`;
const configPath = join(out, 'upscale.yml');
writeFileSync(configPath, config);
let t0 = performance.now();
const merged = await merge(configPath, join(out, 'merged'), { overwrite: true });
console.log(`merged: ${merged.tensors} tensors, ${(merged.bytes / 2 ** 20).toFixed(1)} MiB in ${merged.shards.length} shard(s) -> ${merged.outDir} (${seconds(t0)} s)`);

// 2. Quantize the merged model to EXL2 (measurement, optimization, GPTQ), with the
//    calibration text shipped in the package.
t0 = performance.now();
let lastStage = '';
const quant = await quantize(merged.outDir, join(out, 'exl2'), {
  bitsPerWeight: env('BPW', 4.0),
  headBits: env('HEAD_BITS', 6),
  rows: env('ROWS', 8),
  length: env('LENGTH', 128),
  measurementRows: env('MEASUREMENT_ROWS', 4),
  overwrite: true,
  ...(threads ? { threads } : {}),
  onProgress: (p) => {
    if (p.stage !== lastStage) process.stderr.write(`  ${(lastStage = p.stage)}...\n`);
  },
});
const layers = new Set(quant.blocks.map((b) => b.layer)).size;
console.log(
  `quantized: ${quant.bitsPerWeight.toFixed(3)} bits per weight over ${layers} layers, ${quant.headBits}-bit head, ` +
    `calibration ${quant.calibration.rows} x ${quant.calibration.length} tokens -> ${quant.outDir} ` +
    `(measure ${quant.measureSeconds.toFixed(1)} s, quantize ${quant.quantizeSeconds.toFixed(1)} s, ${seconds(t0)} s in all)`,
);
const worst = quant.blocks.reduce((a, b) => (b.error > a.error ? b : a));
console.log(`  largest block error: layer ${worst.layer} ${worst.block}, ${(worst.error * 100).toFixed(2)}% (recipes: ${worst.recipes.join(', ')})`);

// 3. Load the EXL2 model and chat with it.
const model = await loadModel(quant.outDir, threads ? { threads } : {});
try {
  console.log(`loaded: ${model.config.numHiddenLayers} layers, ${model.config.quantization?.method ?? 'float'}, ${(model.info.weightBytes / 2 ** 20).toFixed(1)} MiB of weights`);
  const chat = model.createChat({ system: 'Answer briefly.' });
  try {
    const question = 'What does the len() function return?';
    process.stdout.write(`> ${question}\n`);
    const turn = chat.send(question, { maxTokens: env('MAX_TOKENS', 48), temperature: 0 });
    for await (const chunk of turn) process.stdout.write(chunk.text);
    const reply = await turn;
    console.log(`\n[chat: ${reply.tokens.length} tokens, finish: ${reply.finishReason}]`);
  } finally {
    chat.dispose();
  }
} finally {
  model.dispose();
}
