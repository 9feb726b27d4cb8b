#!/usr/bin/env node
// The `laminate` command: generate, chat, serve, merge, quantize, export, info, cpu, gpu.
import { createInterface } from 'node:readline/promises';
import { parseArgs } from 'node:util';

import cliProgress from 'cli-progress';

import type { GenerateOptions, Generation, LoadOptions, LoadProgress, Model, QuantizeProgress } from '../index.js';
import { cpuInfo, cudaInfo, exportModel, loadModel, measure, merge, quantize, serve } from '../index.js';

const HELP = `laminate: run transformer language models from Node.js

Usage:
  laminate generate [--model DIR] "prompt"      stream a continuation of the prompt
  laminate generate [--model DIR] --tokens 1,415,2936
  laminate chat [--model DIR] [--system TEXT]   interactive chat (Ctrl-C stops a reply, Ctrl-D quits)
  laminate serve [--model DIR|CONFIG.yml] [--port 8080] [--api-key KEY]
                                                an OpenAI-compatible HTTP server (SIGTERM drains it)
  laminate merge CONFIG.yml OUT_DIR             run a mergekit configuration, write the merged model
  laminate quantize --model DIR|CONFIG.yml OUT_DIR --bpw B [--head-bits 6]
                                                EXL2 at B bits per weight (2 to 8), as ExLlamaV2 writes it
  laminate quantize --model DIR --measure-only OUT.json
                                                the measurement alone, to reuse for every bitrate
  laminate export --model DIR OUT_DIR [--dtype float16|bfloat16|float32]
                                                a plain checkpoint (EXL2 layers dequantized exactly)
  laminate info [--model DIR]                   config and engine details
  laminate cpu                                  what this CPU offers
  laminate gpu                                  what the CUDA build sees (devices, or why none)

Without --model, the small demo model bundled with laminate is used.

Sampling:
  --temperature T        0 (default) is greedy
  --top-k K  --top-p P  --min-p P  --typical-p P
  --repetition-penalty R  --presence-penalty P  --frequency-penalty F  --penalty-window N
  --seed S               same seed, same output
  --max-tokens N         most new tokens (default 256)
  --stop TEXT            stop at this text (repeatable)
  --ignore-eos           keep going past end-of-sequence

Merging:
  --out-shard-size BYTES shard size limit (default 5e9)
  --random-seed N        seed of random sparsification (dare_*)
  --overwrite            replace OUT_DIR if it exists

Quantizing (Ctrl-C stops; the same command again resumes from the last finished layer):
  --bpw B                target bits per weight of the decoder layers
  --head-bits N          bits of the output head: 2, 3, 4, 5, 6 (default) or 8
  --calibration FILE     .jsonl ({"text": ...} per line), .txt or .parquet (default: the set shipped)
  --rows N  --length N   calibration rows and tokens per row (defaults scale with the model)
  --measurement-rows N   rows for the measurement pass
  --measurement FILE     reuse a measurement (laminate's or ExLlamaV2's measurement.json)

--model also takes a passthrough merge configuration (.yml): it loads without writing.

Serving:
  --host H               interface to bind (default 127.0.0.1; 0.0.0.0 for every one)
  --port N               default 8080
  --api-key KEY          accept this bearer key (repeatable; also LAMINATE_API_KEY)
  --model-name NAME      the id clients send as "model" (default: the directory's name)
  --cors ORIGIN          allow cross-origin requests from ORIGIN ('*': any; repeatable)
  --context-size N  --kv-cache-tokens N  --max-batch-tokens N
  --max-queue N          requests that may wait for KV cache memory before 429 (default 64)
  --default-max-tokens N max_tokens of a request that gives none (default 1024)
  --no-prefix-cache      compute every prompt in full
  --shutdown-timeout S   on SIGTERM, seconds running requests get to finish (default 30)

Other:
  --device D             cpu, cuda, cuda:N or auto (default: auto, the GPU when the
                         CUDA build sees one and the model fits)
  --threads N            compute threads (default: physical cores)
  --kv-cache-type T      f16 (default) or q8: int8 keys and values, a little over half
                         the memory, on the CPU (generate, chat, serve)
  --json                 one JSON object with text, tokens and finish reason
  -h, --help
`;

const OPTIONS = {
  model: { type: 'string' },
  tokens: { type: 'string' },
  system: { type: 'string' },
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'typical-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  'presence-penalty': { type: 'string' },
  'frequency-penalty': { type: 'string' },
  'penalty-window': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
  'ignore-eos': { type: 'boolean' },
  threads: { type: 'string' },
  device: { type: 'string' },
  'out-shard-size': { type: 'string' },
  'random-seed': { type: 'string' },
  overwrite: { type: 'boolean' },
  dtype: { type: 'string' },
  bpw: { type: 'string' },
  'head-bits': { type: 'string' },
  calibration: { type: 'string' },
  rows: { type: 'string' },
  length: { type: 'string' },
  'measurement-rows': { type: 'string' },
  measurement: { type: 'string' },
  'measure-only': { type: 'boolean' },
  host: { type: 'string' },
  port: { type: 'string' },
  'api-key': { type: 'string', multiple: true },
  'model-name': { type: 'string' },
  cors: { type: 'string', multiple: true },
  'context-size': { type: 'string' },
  'kv-cache-tokens': { type: 'string' },
  'kv-cache-type': { type: 'string' },
  'max-batch-tokens': { type: 'string' },
  'max-queue': { type: 'string' },
  'default-max-tokens': { type: 'string' },
  'no-prefix-cache': { type: 'boolean' },
  'shutdown-timeout': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

function number(values: Values, key: keyof Values): number | undefined {
  const raw = values[key];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || Number.isNaN(n)) throw new Error(`--${key} must be a number (got '${String(raw)}')`);
  return n;
}

function generateOptions(values: Values): GenerateOptions {
  const o: GenerateOptions = {};
  const set = <K extends keyof GenerateOptions>(key: K, flag: keyof Values) => {
    const v = number(values, flag);
    if (v !== undefined) o[key] = v as GenerateOptions[K];
  };
  set('temperature', 'temperature');
  set('topK', 'top-k');
  set('topP', 'top-p');
  set('minP', 'min-p');
  set('typicalP', 'typical-p');
  set('repetitionPenalty', 'repetition-penalty');
  set('presencePenalty', 'presence-penalty');
  set('frequencyPenalty', 'frequency-penalty');
  set('penaltyWindow', 'penalty-window');
  set('seed', 'seed');
  o.maxTokens = number(values, 'max-tokens') ?? 256;
  if (values.stop) o.stop = values.stop;
  if (values['ignore-eos']) o.stopAtEos = false;
  return o;
}

function progressBar(enabled: boolean): ((p: LoadProgress) => void) | undefined {
  if (!enabled || !process.stderr.isTTY) return undefined;
  return (p) => {
    if (p.phase !== 'weights') return;
    const width = 30;
    const fraction = p.total > 0 ? p.loaded / p.total : 1;
    const filled = Math.round(fraction * width);
    process.stderr.write(`\rloading [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%`);
    if (fraction >= 1) process.stderr.write('\r\x1b[K');
  };
}

/** A progress bar per stage on a terminal (stage, layers, ETA); a line per finished layer otherwise. */
function quantizeProgress(quiet: boolean): { onProgress?: (p: QuantizeProgress) => void; stop(): void } {
  if (quiet) return { stop() {} };
  if (!process.stderr.isTTY) {
    let last = '';
    return {
      onProgress: (p) => {
        const line = p.stage === 'write' ? 'write' : `${p.stage} ${Math.floor(p.done)}/${p.total}`;
        if (line !== last) process.stderr.write(`${line}${p.eta !== undefined && p.stage !== 'write' ? ` (about ${Math.round(p.eta)} s left)` : ''}\n`);
        last = line;
      },
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar({ format: '{stage} [{bar}] {percentage}% | {count} | {eta_text}', stream: process.stderr, hideCursor: true, clearOnComplete: false }, cliProgress.Presets.shades_classic);
  let stage = '';
  const minutes = (s: number) => (s >= 90 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`);
  return {
    onProgress: (p) => {
      const payload = { stage: p.stage.padEnd(8), count: p.stage === 'write' ? '' : `layer ${Math.floor(p.done)}/${p.total}`, eta_text: p.eta !== undefined ? `${minutes(p.eta)} left` : '' };
      if (p.stage !== stage) {
        if (stage) bar.stop();
        stage = p.stage;
        bar.start(p.total, p.done, payload);
      } else bar.update(p.done, payload);
    },
    stop: () => bar.stop(),
  };
}

/** Streams a generation to stdout. An abort (Ctrl-C) ends it, not the process. */
async function stream(generation: Generation, json: boolean): Promise<void> {
  try {
    if (!json) for await (const chunk of generation) process.stdout.write(chunk.text);
    const result = await generation;
    if (json) console.log(JSON.stringify({ text: result.text, tokens: result.tokens, finishReason: result.finishReason, promptTokens: result.promptTokens, timeToFirstTokenMs: result.timeToFirstTokenMs, tokensPerSecond: result.tokensPerSecond }));
    else process.stdout.write('\n');
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
    process.stdout.write(json ? `${JSON.stringify({ finishReason: 'abort' })}\n` : ' [stopped]\n');
  }
}

async function chat(model: Model, values: Values): Promise<void> {
  using session = model.createChat(values.system !== undefined ? { system: values.system } : {});
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
  // Ctrl-C stops the reply being written; at the prompt it quits.
  let current: AbortController | null = null;
  const interrupt = () => (current ? current.abort() : rl.close());
  rl.on('SIGINT', interrupt);
  process.on('SIGINT', interrupt);
  const options = generateOptions(values);
  rl.setPrompt('> ');
  rl.prompt();
  for await (const line of rl) {
    if (line.trim() !== '') {
      current = new AbortController();
      await stream(session.send(line, { ...options, signal: current.signal }), values.json ?? false);
      current = null;
    }
    rl.prompt();
  }
  process.off('SIGINT', interrupt);
  if (!values.json) process.stdout.write('\n');
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  const command = positionals[0];
  if (values.help || !command) {
    process.stdout.write(HELP);
    return command || values.help ? 0 : 1;
  }
  if (command === 'cpu') {
    console.log(JSON.stringify(cpuInfo(), null, 2));
    return 0;
  }
  if (command === 'gpu') {
    console.log(JSON.stringify(cudaInfo(), null, 2));
    return 0;
  }
  if (command === 'merge') {
    const [, config, out] = positionals;
    if (!config || !out) throw new Error('usage: laminate merge CONFIG.yml OUT_DIR');
    const seed = number(values, 'random-seed');
    const shardSize = number(values, 'out-shard-size');
    const controller = new AbortController();
    process.once('SIGINT', () => controller.abort());
    const show = !values.json && process.stderr.isTTY;
    const result = await merge(config, out, {
      signal: controller.signal,
      ...(seed !== undefined ? { seed } : {}),
      ...(shardSize !== undefined ? { outShardSize: shardSize } : {}),
      ...(values.overwrite ? { overwrite: true } : {}),
      ...(show ? { onProgress: ({ written, total }: { written: number; total: number }) => process.stderr.write(`\rmerging ${((100 * written) / Math.max(1, total)).toFixed(0).padStart(3)}%`) } : {}),
    });
    if (show) process.stderr.write('\n');
    console.log(values.json ? JSON.stringify(result) : `wrote ${result.tensors} tensors (${(result.bytes / 1e9).toFixed(2)} GB) in ${result.shards.length} shard(s) to ${result.outDir}`);
    return 0;
  }
  if (command === 'quantize') {
    const out = positionals[1];
    if (!values.model || !out) throw new Error('usage: laminate quantize --model DIR OUT_DIR --bpw B (or --measure-only OUT.json)');
    const controller = new AbortController();
    process.once('SIGINT', () => controller.abort());
    const progress = quantizeProgress(values.json ?? false);
    const common = {
      signal: controller.signal,
      ...(values.calibration !== undefined ? { calibration: values.calibration } : {}),
      ...(values.length !== undefined ? { length: number(values, 'length')! } : {}),
      ...(values['measurement-rows'] !== undefined ? { measurementRows: number(values, 'measurement-rows')! } : {}),
      ...(values.threads !== undefined ? { threads: number(values, 'threads')! } : {}),
      ...(progress.onProgress ? { onProgress: progress.onProgress } : {}),
    };
    try {
      if (values['measure-only']) {
        const m = await measure(values.model, out, common);
        progress.stop();
        console.log(values.json ? JSON.stringify({ measurement: out, modules: Object.keys(m.modules).length }) : `wrote the measurement of ${Object.keys(m.modules).length} blocks to ${out}`);
        return 0;
      }
      if (values.bpw === undefined) throw new Error('quantize: give the target bits per weight with --bpw (2 to 8)');
      const headBits = number(values, 'head-bits');
      const result = await quantize(values.model, out, {
        ...common,
        bitsPerWeight: number(values, 'bpw')!,
        ...(headBits !== undefined ? { headBits: headBits as 6 } : {}),
        ...(values.rows !== undefined ? { rows: number(values, 'rows')! } : {}),
        ...(values.measurement !== undefined ? { measurement: values.measurement } : {}),
        ...(values.overwrite ? { overwrite: true } : {}),
      });
      progress.stop();
      console.log(values.json ? JSON.stringify(result) : `wrote ${result.outDir}: ${result.bitsPerWeight.toFixed(3)} bits per weight over the decoder layers, head ${result.headBits} bits (measurement ${result.measureSeconds.toFixed(0)} s, quantization ${result.quantizeSeconds.toFixed(0)} s)`);
      return 0;
    } catch (e) {
      progress.stop();
      if ((e as Error).name === 'AbortError') {
        process.stderr.write('laminate: stopped; run the same command again to resume from the last finished layer\n');
        return 130;
      }
      throw e;
    }
  }
  if (command === 'serve') return serveCommand(values);
  if (command === 'export') {
    const out = positionals[1];
    if (!values.model || !out) throw new Error('usage: laminate export --model DIR OUT_DIR [--dtype float16|bfloat16|float32]');
    const result = await exportModel(values.model, out, {
      ...(values.dtype !== undefined ? { dtype: values.dtype as 'float16' } : {}),
      ...(values.overwrite ? { overwrite: true } : {}),
    });
    console.log(values.json ? JSON.stringify(result) : `wrote ${result.tensors} tensors (${(result.bytes / 1e9).toFixed(2)} GB) to ${result.outDir}`);
    return 0;
  }
  if (!['generate', 'chat', 'info'].includes(command)) throw new Error(`unknown command '${command}' (see laminate --help)`);
  const json = values.json ?? false;
  const threads = number(values, 'threads');
  const onProgress = progressBar(!json);
  const device = values.device as LoadOptions['device'];
  const kvCacheType = values['kv-cache-type'] as LoadOptions['kvCacheType'];
  await using model = await loadModel(values.model, { ...(threads !== undefined ? { threads } : {}), ...(device !== undefined ? { device } : {}), ...(kvCacheType !== undefined ? { kvCacheType } : {}), ...(onProgress ? { onProgress } : {}) });

  if (command === 'info') {
    console.log(JSON.stringify({ config: model.config, info: model.info, tokenizer: model.tokenizer ? { vocabSize: model.tokenizer.vocabSize, bos: model.tokenizer.bosToken, eos: model.tokenizer.eosToken, chatTemplate: model.tokenizer.chatTemplate !== null } : null }, null, 2));
    return 0;
  }
  if (command === 'chat') {
    await chat(model, values);
    return 0;
  }
  const options = generateOptions(values);
  const controller = new AbortController();
  options.signal = controller.signal;
  process.once('SIGINT', () => controller.abort());
  let generation: Generation;
  if (values.tokens !== undefined) {
    const tokens = values.tokens.split(',').map((t) => {
      const n = Number(t.trim());
      if (t.trim() === '' || !Number.isSafeInteger(n)) throw new Error(`--tokens: '${t}' is not a token id`);
      return n;
    });
    generation = model.generate(tokens, options);
  } else {
    const prompt = positionals.slice(1).join(' ');
    if (prompt === '') throw new Error('give a prompt: laminate generate "text" (or --tokens ids)');
    if (!json) process.stdout.write(prompt);
    generation = model.generate(prompt, options);
  }
  await stream(generation, json);
  return 0;
}

/** Runs until SIGTERM or SIGINT, then drains: exit 0 once running requests are done. */
async function serveCommand(values: Values): Promise<number> {
  const optional = (flag: keyof Values) => number(values, flag);
  const keys = [...(values['api-key'] ?? []), ...(process.env['LAMINATE_API_KEY'] ? [process.env['LAMINATE_API_KEY']] : [])];
  const cors = values.cors === undefined ? undefined : values.cors.some((o) => o === '' || o === '*') ? true : values.cors;
  const entries: [string, number | undefined][] = [
    ['threads', optional('threads')],
    ['contextSize', optional('context-size')],
    ['kvCacheTokens', optional('kv-cache-tokens')],
    ['maxBatchTokens', optional('max-batch-tokens')],
    ['maxQueue', optional('max-queue') ?? 64],
    ['defaultMaxTokens', optional('default-max-tokens')],
    ['port', optional('port')],
  ];
  const server = await serve({
    ...Object.fromEntries(entries.filter(([, v]) => v !== undefined)),
    ...(values.model !== undefined ? { model: values.model } : {}),
    ...(values.host !== undefined ? { host: values.host } : {}),
    ...(values.device !== undefined ? { device: values.device as LoadOptions['device'] } : {}),
    ...(values['kv-cache-type'] !== undefined ? { kvCacheType: values['kv-cache-type'] as LoadOptions['kvCacheType'] } : {}),
    ...(values['model-name'] !== undefined ? { modelName: values['model-name'] } : {}),
    ...(keys.length > 0 ? { apiKeys: keys } : {}),
    ...(cors !== undefined ? { cors } : {}),
    ...(values['no-prefix-cache'] ? { prefixCache: false } : {}),
  });
  const timeout = (optional('shutdown-timeout') ?? 30) * 1000;
  process.stderr.write(`laminate: listening on ${server.url} (loading the model)\n`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`laminate: ${signal}: finishing ${server.app.inflight} running request(s), at most ${timeout / 1000} s\n`);
    server.close(timeout).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    const model = await server.model;
    process.stderr.write(`laminate: serving ${model.info.dir} on ${model.info.device}${model.info.isa ? ` (${model.info.isa}, ${model.info.threads} threads)` : ''}${keys.length === 0 ? '; no API key set' : ''}\n`);
  } catch (e) {
    process.stderr.write(`laminate: the model failed to load: ${(e as Error).message}\n`);
    await server.close(0);
    return 1;
  }
  // Serve until a signal stops the process.
  await new Promise<never>(() => undefined);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`laminate: ${(e as Error).message}\n`);
    process.exit(1);
  },
);
