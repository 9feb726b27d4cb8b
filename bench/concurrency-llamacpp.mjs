#!/usr/bin/env node
// The peer of bench/concurrency.mjs: node-llama-cpp (from the benchmark harness) decoding N
// greedy generations at once in one context of N sequences, on a GGUF of the same weights,
// with the same prompts. Prints one JSON line per concurrency level, with the same fields.
//   node bench/concurrency-llamacpp.mjs --gguf FILE [--harness DIR] [--threads 2]
//        [--concurrency 1,4,16] [--prompt-len 128] [--gen 64] [--repeats 2]
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    gguf: { type: 'string' },
    harness: { type: 'string', default: resolve(import.meta.dirname, '../../shared/bench') },
    threads: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '1,4,16' },
    'prompt-len': { type: 'string', default: '128' },
    gen: { type: 'string', default: '64' },
    repeats: { type: 'string', default: '2' },
  },
});
if (!values.gguf) {
  console.error('usage: node bench/concurrency-llamacpp.mjs --gguf FILE [--harness DIR] (see the file)');
  process.exit(1);
}
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(join(resolve(values.harness), 'node_modules/node-llama-cpp/dist/index.js')).href);

const levels = values.concurrency.split(',').map(Number);
const promptLen = Number(values['prompt-len']);
const gen = Number(values.gen);
const threads = Number(values.threads);
const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, usePrebuiltBinaries: true, maxThreads: threads, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: resolve(values.gguf), gpuLayers: 0 });
const vocab = Number(model.fileInfo.metadata?.llama?.vocab_size ?? model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length);
// the prompts of bench/concurrency.mjs
const prompt = (seed) => {
  let x = seed;
  return [1, ...Array.from({ length: promptLen - 1 }, () => ((x = (x * 1664525 + 1013904223) % 2 ** 32), 3 + (x % (vocab - 3))))];
};
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function generate(sequence, tokens, start) {
  await sequence.clearHistory();
  let first = null, n = 0;
  for await (const _ of sequence.evaluate(tokens, { temperature: 0, yieldEogToken: true })) {
    first ??= performance.now() - start;
    if (++n >= gen) break;
  }
  return first;
}

for (const n of levels) {
  const context = await model.createContext({ contextSize: Math.ceil((n * (promptLen + gen + 16)) / 256) * 256, sequences: n,
    batchSize: Math.max(512, promptLen), threads: { ideal: threads, min: threads } });
  const sequences = Array.from({ length: n }, () => context.getSequence());
  await generate(sequences[0], prompt(0), performance.now()); // warm-up
  const runs = [];
  for (let r = 0; r < Number(values.repeats); r++) {
    const start = performance.now();
    const firstTokens = await Promise.all(sequences.map((s, i) => generate(s, prompt(1000 * r + i + 1), start)));
    const seconds = (performance.now() - start) / 1000;
    const decodeSeconds = seconds - Math.max(...firstTokens) / 1000;
    runs.push({ aggregate_tok_s: (n * gen) / seconds, decode_tok_s: (n * (gen - 1)) / decodeSeconds,
      ttft_ms_median: median(firstTokens), ttft_ms_max: Math.max(...firstTokens) });
  }
  await context.dispose();
  const pick = (k) => Math.round(median(runs.map((x) => x[k])) * 100) / 100;
  console.log(JSON.stringify({ engine: 'node-llama-cpp', model: values.gguf, threads, concurrency: n, prompt_len: promptLen, gen,
    aggregate_tok_s: pick('aggregate_tok_s'), decode_tok_s: pick('decode_tok_s'), ttft_ms_median: pick('ttft_ms_median'), ttft_ms_max: pick('ttft_ms_max') }));
}
await model.dispose();
await llama.dispose();
