#!/usr/bin/env node
// The `laminate` command.
import { parseArgs } from 'node:util';

import { loadModel, type LoadProgress } from '../index.js';
import { cpuInfo } from '../system.js';

const HELP = `laminate: run transformer language models from Node.js

Usage:
  laminate generate --model DIR --tokens 1,415,2936 [options]   greedy or sampled token ids
  laminate info --model DIR                                       config and engine details
  laminate cpu                                                    what this CPU offers

Options:
  --model DIR          Hugging Face model directory (config.json + safetensors)
  --tokens IDS         prompt token ids, comma-separated
  --max-tokens N       most new tokens (default 64)
  --temperature T      0 (default) is greedy
  --top-k K            sample among the K most likely tokens
  --seed S             seed for sampling
  --threads N          compute threads (default: physical cores)
  --ignore-eos         keep going past end-of-sequence tokens
  --json               print one JSON object instead of text
  -h, --help           this text
`;

function progressBar(json: boolean): ((p: LoadProgress) => void) | undefined {
  if (json || !process.stderr.isTTY) return undefined;
  return (p) => {
    if (p.phase !== 'weights') return;
    const width = 30;
    const fraction = p.total > 0 ? p.loaded / p.total : 1;
    const filled = Math.round(fraction * width);
    process.stderr.write(`\rloading [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%`);
    if (fraction >= 1) process.stderr.write('\n');
  };
}

function intOption(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new Error(`--${name} must be an integer (got '${value}')`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      model: { type: 'string' },
      tokens: { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-k': { type: 'string' },
      seed: { type: 'string' },
      threads: { type: 'string' },
      'ignore-eos': { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const command = positionals[0];
  if (values.help || !command) {
    process.stdout.write(HELP);
    return command || values.help ? 0 : 1;
  }
  if (command === 'cpu') {
    console.log(JSON.stringify(cpuInfo(), null, 2));
    return 0;
  }
  if (command !== 'generate' && command !== 'info') throw new Error(`unknown command '${command}' (see laminate --help)`);
  if (!values.model) throw new Error('--model DIR is required');
  const json = values.json ?? false;
  const threads = intOption(values.threads, 'threads');
  const onProgress = progressBar(json);
  await using model = await loadModel(values.model, { ...(threads !== undefined ? { threads } : {}), ...(onProgress ? { onProgress } : {}) });

  if (command === 'info') {
    console.log(JSON.stringify({ config: model.config, info: model.info }, null, 2));
    return 0;
  }
  if (!values.tokens) throw new Error('--tokens is required (comma-separated prompt token ids)');
  const tokens = values.tokens.split(',').map((t) => {
    const n = Number(t.trim());
    if (t.trim() === '' || !Number.isSafeInteger(n)) throw new Error(`--tokens: '${t}' is not a token id`);
    return n;
  });
  const temperature = values.temperature === undefined ? 0 : Number(values.temperature);
  const topK = intOption(values['top-k'], 'top-k');
  const seed = intOption(values.seed, 'seed');
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  const started = performance.now();
  const result = await model.generate({
    tokens,
    maxTokens: intOption(values['max-tokens'], 'max-tokens') ?? 64,
    temperature,
    ...(topK !== undefined ? { topK } : {}),
    ...(seed !== undefined ? { seed } : {}),
    stopAtEos: !values['ignore-eos'],
    signal: controller.signal,
    onToken: json ? undefined : (t) => process.stdout.write(`${t} `),
  });
  const seconds = (performance.now() - started) / 1000;
  if (json) console.log(JSON.stringify({ ...result, seconds }));
  else process.stdout.write(`\n[${result.tokens.length} tokens, ${result.finishReason}, ${(result.tokens.length / seconds).toFixed(1)} tok/s]\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    const err = e as Error;
    process.stderr.write(`laminate: ${err.name === 'AbortError' ? 'stopped' : err.message}\n`);
    process.exit(err.name === 'AbortError' ? 130 : 1);
  },
);
