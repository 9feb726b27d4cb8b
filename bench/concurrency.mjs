#!/usr/bin/env node
// Continuous batching: aggregate decode tok/s and time to first token with N concurrent
// greedy generations on one model.
//   node bench/concurrency.mjs --model DIR [--threads 2] [--concurrency 1,4,16]
//        [--prompt-len 128] [--gen 64] [--repeats 2]
// Prints one JSON line per concurrency level.
import { parseArgs } from 'node:util';

import { loadModel } from 'laminate';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    threads: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '1,4,16' },
    'prompt-len': { type: 'string', default: '128' },
    gen: { type: 'string', default: '64' },
    repeats: { type: 'string', default: '2' },
  },
});
const levels = values.concurrency.split(',').map(Number);
const promptLen = Number(values['prompt-len']);
const gen = Number(values.gen);
const maxLevel = Math.max(...levels);
const model = await loadModel(values.model, {
  threads: Number(values.threads),
  contextSize: promptLen + gen + 16,
  kvCacheTokens: maxLevel * (promptLen + gen + 16),
});
const vocab = model.config.vocabSize;
// distinct prompts: BOS then LCG ids (no tokenizer needed)
const prompt = (seed) => {
  let x = seed;
  return [1, ...Array.from({ length: promptLen - 1 }, () => ((x = (x * 1664525 + 1013904223) % 2 ** 32), 3 + (x % (vocab - 3))))];
};
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

await model.generate(prompt(0), { maxTokens: 4, stopAtEos: false }); // warm-up
for (const n of levels) {
  const runs = [];
  for (let r = 0; r < Number(values.repeats); r++) {
    const start = performance.now();
    const results = await Promise.all(Array.from({ length: n }, (_, i) => model.generate(prompt(1000 * r + i + 1), { maxTokens: gen, stopAtEos: false })));
    const seconds = (performance.now() - start) / 1000;
    const firstTokens = results.map((x) => x.timeToFirstTokenMs);
    // decode phase: from the last first token to the end
    const decodeSeconds = seconds - Math.max(...firstTokens) / 1000;
    runs.push({
      aggregate_tok_s: (n * gen) / seconds,
      decode_tok_s: (n * (gen - 1)) / decodeSeconds,
      ttft_ms_median: median(firstTokens),
      ttft_ms_max: Math.max(...firstTokens),
    });
  }
  const pick = (k) => Math.round(median(runs.map((x) => x[k])) * 100) / 100;
  console.log(JSON.stringify({ engine: 'laminate', model: values.model, threads: model.info.threads, concurrency: n, prompt_len: promptLen, gen,
    aggregate_tok_s: pick('aggregate_tok_s'), decode_tok_s: pick('decode_tok_s'), ttft_ms_median: pick('ttft_ms_median'), ttft_ms_max: pick('ttft_ms_max') }));
}
model.dispose();
