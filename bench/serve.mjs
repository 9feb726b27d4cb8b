#!/usr/bin/env node
// The HTTP server under load: N client loops stream completions from an in-process
// `serve()` for a fixed time per concurrency level, against the same loop calling
// `model.generate()` on the same model object; then time to first token over a 10-turn
// conversation with the prefix cache on and off.
//   npm run bench:serve -- [--model DIR] [--threads 2] [--concurrency 1,8,32,64]
//        [--prompt-len 128] [--gen 64] [--seconds 20] [--chat-turns 10] [--chat-repeats 1]
//        [--skip-inprocess] [--skip-chat]
// Prints one JSON line per level (HTTP, then in-process with the http/in-process ratio),
// one per conversation, and a final summary line.
//
// Notes on what is measured:
// - The clients run in the server's process (global fetch, i.e. undici): their SSE parsing
//   shares the event loop with the server, as it would not with remote clients.
// - Prompts are token ids (BOS, then LCG ids, as bench/concurrency.mjs builds them), each
//   request a new one, so the prefix cache never helps the throughput levels.
// - Requests may stop early at end-of-sequence (no ignore_eos in the OpenAI API), so
//   tokens are counted from the usage chunk (HTTP) or the result (in-process).
// - TTFT: from sending the request to the first non-empty text chunk. ITL: between
//   successive non-empty text chunks of one request, as the client receives them (chunks
//   that arrive in one network read count as 0 ms apart).
// - tok/s: all completion tokens over the wall time of the level, including the requests
//   started before the deadline that finished after it.
// - The server's JavaScript thread (HTTP, SSE, and here the clients too) needs a core of its
//   own: with --threads equal to the cores (2 on a 2-vCPU machine) the compute threads and
//   it take turns, and HTTP shows stalls of a scheduler slice that in-process does not.
//   Compare with --threads one less than the cores to see the server's own overhead.
import { parseArgs } from 'node:util';

import { serve } from 'laminate';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    threads: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '1,8,32,64' },
    'prompt-len': { type: 'string', default: '128' },
    gen: { type: 'string', default: '64' },
    seconds: { type: 'string', default: '20' },
    'chat-turns': { type: 'string', default: '10' },
    'chat-repeats': { type: 'string', default: '1' },
    'chat-max-tokens': { type: 'string', default: '16' },
    'skip-inprocess': { type: 'boolean', default: false },
    'skip-chat': { type: 'boolean', default: false },
  },
});
const threads = Number(values.threads);
const levels = values.concurrency.split(',').filter((s) => s.trim() !== '').map(Number);
const promptLen = Number(values['prompt-len']);
const gen = Number(values.gen);
const seconds = Number(values.seconds);
const chatTurns = Number(values['chat-turns']);
const chatRepeats = Number(values['chat-repeats']);
const chatMaxTokens = Number(values['chat-max-tokens']);
for (const [k, v] of Object.entries({ threads, promptLen, gen, seconds, chatTurns, chatRepeats, chatMaxTokens }))
  if (!(v > 0)) throw new RangeError(`--${k} must be a positive number`);
if (levels.length === 0 || !levels.every((n) => Number.isSafeInteger(n) && n > 0)) throw new RangeError('--concurrency must list positive integers');
const maxLevel = Math.max(...levels);
const contextSize = promptLen + gen + 16;
const modelLabel = values.model ?? '(demo)';
const withModel = values.model !== undefined ? { model: values.model } : {};

const round = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? null : Math.round(x * 10 ** d) / 10 ** d);
const percentile = (xs, p) => {
  if (xs.length === 0) return null;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
};
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
const rssMiB = () => round(process.memoryUsage().rss / 2 ** 20, 1);
const heapMiB = () => round(process.memoryUsage().heapUsed / 2 ** 20, 1);
// KV cache pages are allocated as they are first used: part of the RSS growth at higher levels.
const kvMiB = (m) => round(m.cacheStats().bytesAllocated / 2 ** 20, 1);
const print = (o) => console.log(JSON.stringify(o));

/** Reads a server-sent event stream, calling onEvent(json | '[DONE]', receivedAt) per event. */
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    const at = performance.now();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        onEvent(data === '[DONE]' ? data : JSON.parse(data), at);
      }
    }
  }
}

/** One streaming request; returns { ok, tokens, ttft, itls, text, usage, error }. */
async function streamRequest(url, body) {
  const t0 = performance.now();
  const out = { ok: false, tokens: 0, ttft: null, itls: [], text: '', usage: null, error: null, finishMs: null };
  try {
    const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    if (res.status !== 200) {
      out.error = `HTTP ${res.status}: ${(await res.text()).slice(0, 300)}`;
      return out;
    }
    let last = null, done = false;
    await readEvents(res, (e, at) => {
      if (e === '[DONE]') return void (done = true);
      if (e.error) return void (out.error ??= `error event: ${JSON.stringify(e.error).slice(0, 300)}`);
      if (e.usage) out.usage = e.usage;
      const c = e.choices?.[0];
      if (!c) return;
      const text = c.text ?? c.delta?.content ?? '';
      if (c.finish_reason) out.finishMs = at - t0;
      if (text === '') return;
      out.text += text;
      if (last === null) out.ttft = at - t0;
      else out.itls.push(at - last);
      last = at;
    });
    if (!out.error && !done) out.error = 'stream ended without [DONE]';
    if (!out.error && !out.usage) out.error = 'no usage chunk';
    out.tokens = out.usage?.completion_tokens ?? 0;
    out.ok = out.error === null;
  } catch (e) {
    out.error = `${e?.name ?? 'Error'}: ${e?.message ?? e}${e?.cause ? ` (${e.cause.message ?? e.cause})` : ''}`;
  }
  return out;
}

// distinct prompts: BOS then LCG ids (no tokenizer needed)
let vocab = 0;
let nextSeed = 1;
const prompt = (seed) => {
  let x = seed;
  return [1, ...Array.from({ length: promptLen - 1 }, () => ((x = (x * 1664525 + 1013904223) % 2 ** 32), 3 + (x % (vocab - 3))))];
};

/** Runs `n` loops of `once()` until the deadline; requests started before it finish. */
async function level(n, once) {
  const stats = { requests: 0, tokens: 0, errors: 0, errorSamples: [], ttfts: [], itls: [] };
  const start = performance.now();
  const deadline = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (performance.now() < deadline) {
        const r = await once(nextSeed++);
        stats.requests++;
        stats.tokens += r.tokens;
        if (r.ttft !== null) stats.ttfts.push(r.ttft);
        for (const x of r.itls) stats.itls.push(x);
        if (!r.ok) {
          stats.errors++;
          if (stats.errorSamples.length < 3) stats.errorSamples.push(r.error);
          await new Promise((resolve) => setTimeout(resolve, 50)); // no hot loop on refusals
        }
      }
    }),
  );
  const wall = (performance.now() - start) / 1000;
  return {
    concurrency: n,
    seconds: round(wall),
    requests: stats.requests,
    completion_tokens: stats.tokens,
    aggregate_tok_s: round(stats.tokens / wall),
    ttft_ms_p50: round(percentile(stats.ttfts, 0.5)),
    ttft_ms_p99: round(percentile(stats.ttfts, 0.99)),
    itl_ms_p50: round(percentile(stats.itls, 0.5), 3),
    itl_ms_p99: round(percentile(stats.itls, 0.99), 3),
    errors: stats.errors,
    ...(stats.errorSamples.length ? { error_samples: stats.errorSamples } : {}),
  };
}

async function modelId(url) {
  const res = await fetch(`${url}/v1/models`);
  if (res.status !== 200) throw new Error(`GET /v1/models: HTTP ${res.status}: ${await res.text()}`);
  return (await res.json()).data[0].id;
}

// ---- throughput: HTTP, then in-process, on one server and one model object ----
const summary = { summary: true, model: modelLabel, threads, prompt_len: promptLen, gen, seconds_per_level: seconds, levels: [], rss_mib: {}, errors_total: 0 };
const server = await serve({ ...withModel, port: 0, threads, contextSize, kvCacheTokens: maxLevel * contextSize, maxQueue: maxLevel, defaultMaxTokens: gen });
const model = await server.model;
vocab = model.config.vocabSize;
const name = await modelId(server.url);
const completionsUrl = `${server.url}/v1/completions`;
const httpOnce = (seed) =>
  streamRequest(completionsUrl, { model: name, prompt: prompt(seed), max_tokens: gen, temperature: 0, stream: true, stream_options: { include_usage: true } });

// warm-up (not counted): one request each way
const warm = await httpOnce(nextSeed++);
if (!warm.ok) throw new Error(`warm-up request failed: ${warm.error}`);
await model.generate({ tokens: prompt(nextSeed++), maxTokens: 4 });

summary.rss_mib.before = rssMiB();
summary.kv_mib_before = kvMiB(model);
summary.rss_mib.after_http = [];
const http = new Map();
for (const n of levels) {
  const r = await level(n, httpOnce);
  const row = { engine: 'laminate-http', model: modelLabel, threads: model.info.threads, prompt_len: promptLen, gen, ...r, inflight_after: server.app.inflight, rss_mib: rssMiB(), heap_mib: heapMiB(), kv_mib: kvMiB(model) };
  http.set(n, row);
  summary.rss_mib.after_http.push(row.rss_mib);
  summary.errors_total += r.errors;
  print(row);
}

if (!values['skip-inprocess']) {
  // The same loop without HTTP: generate() on the server's model object, iterating the
  // chunks as the server does.
  const inprocessOnce = async (seed) => {
    const t0 = performance.now();
    const out = { ok: false, tokens: 0, ttft: null, itls: [], error: null };
    try {
      const g = model.generate({ tokens: prompt(seed), maxTokens: gen });
      let last = null;
      for await (const chunk of g) {
        if (chunk.text === '') continue;
        const at = performance.now();
        if (last === null) out.ttft = at - t0;
        else out.itls.push(at - last);
        last = at;
      }
      out.tokens = (await g).tokens.length;
      out.ok = true;
    } catch (e) {
      out.error = `${e?.name ?? 'Error'}: ${e?.message ?? e}`;
    }
    return out;
  };
  summary.rss_mib.after_inprocess = [];
  for (const n of levels) {
    const r = await level(n, inprocessOnce);
    const h = http.get(n);
    const row = { engine: 'laminate-inprocess', model: modelLabel, threads: model.info.threads, prompt_len: promptLen, gen, ...r, rss_mib: rssMiB(), heap_mib: heapMiB(), kv_mib: kvMiB(model), http_tok_s: h.aggregate_tok_s, ratio_http_over_inprocess: round(h.aggregate_tok_s / r.aggregate_tok_s, 3) };
    summary.rss_mib.after_inprocess.push(row.rss_mib);
    summary.errors_total += r.errors;
    summary.levels.push({ concurrency: n, http_tok_s: h.aggregate_tok_s, inprocess_tok_s: r.aggregate_tok_s, ratio: row.ratio_http_over_inprocess, http_ttft_ms_p50: h.ttft_ms_p50, inprocess_ttft_ms_p50: r.ttft_ms_p50, http_itl_ms_p50: h.itl_ms_p50, inprocess_itl_ms_p50: r.itl_ms_p50 });
    print(row);
  }
} else {
  for (const [n, h] of http) summary.levels.push({ concurrency: n, http_tok_s: h.aggregate_tok_s });
}
const afterHttp = summary.rss_mib.after_http;
summary.rss_mib.growth_over_http_levels = round(afterHttp.at(-1) - afterHttp[0], 1);
await server.close(10_000);

// ---- prefix cache: time to first token over a multi-turn conversation ----
const PARAGRAPH =
  'The tutorial describes how a module is imported, how the interpreter searches the path for packages, ' +
  'and how a function returns a value to its caller. It explains that a list can be sorted in place, that a ' +
  'dictionary maps keys to values, and that a class defines the methods of its instances. When an exception ' +
  'is raised inside a try statement, the matching except clause runs, and the finally clause runs in every case. ' +
  'The documentation then shows a short example with a loop over a range of numbers, a string that is formatted ' +
  'with named fields, and a file that is opened and closed with a with statement.';

// A conversation's text when the model has no chat template (sent to /v1/completions).
const plainConversation = (messages) =>
  messages.map((m) => (m.role === 'user' ? `[INST] ${m.content} [/INST]` : ` ${m.content}</s>`)).join('');

async function conversation(prefixCache) {
  const s = await serve({ ...withModel, port: 0, threads, prefixCache, maxQueue: 4 });
  const m = await s.model;
  vocab = m.config.vocabSize;
  const id = await modelId(s.url);
  const useChat = Boolean(m.tokenizer?.chatTemplate);
  // warm-up on unrelated token ids
  await streamRequest(`${s.url}/v1/completions`, { model: id, prompt: prompt(nextSeed++).slice(0, 32), max_tokens: 2, temperature: 0, stream: true, stream_options: { include_usage: true } });
  const perTurn = Array.from({ length: chatTurns }, () => ({ ttft: [], prompt_tokens: [], cached_tokens: [], completion_tokens: [] }));
  let errors = 0, emptyReplies = 0;
  const errorSamples = [], replies = [];
  for (let rep = 0; rep < chatRepeats; rep++) {
    const messages = [];
    for (let turn = 0; turn < chatTurns; turn++) {
      messages.push({ role: 'user', content: `Conversation ${rep + 1}, question ${turn + 1}. ${PARAGRAPH} What does question ${turn + 1} ask about?` });
      const common = { model: id, max_tokens: chatMaxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } };
      const r = useChat
        ? await streamRequest(`${s.url}/v1/chat/completions`, { ...common, messages })
        : await streamRequest(`${s.url}/v1/completions`, { ...common, prompt: plainConversation(messages) });
      if (!r.ok) {
        errors++;
        if (errorSamples.length < 3) errorSamples.push(r.error);
      }
      // An empty reply (end-of-sequence first) has no text chunk: its first token is the
      // finishing chunk.
      const t = perTurn[turn];
      const ttft = r.ttft ?? r.finishMs;
      if (ttft !== null) t.ttft.push(ttft);
      if (r.ok && r.text === '') emptyReplies++;
      if (rep === chatRepeats - 1) replies.push(r.text);
      t.prompt_tokens.push(r.usage?.prompt_tokens ?? null);
      t.cached_tokens.push(r.usage?.prompt_tokens_details?.cached_tokens ?? null);
      t.completion_tokens.push(r.usage?.completion_tokens ?? null);
      messages.push({ role: 'assistant', content: r.text });
    }
  }
  await s.close(10_000);
  const ttftPerTurn = perTurn.map((t) => round(percentile(t.ttft, 0.5)));
  const later = ttftPerTurn.slice(1).filter((x) => x !== null);
  return {
    engine: 'laminate-http',
    test: 'prefix-cache-conversation',
    endpoint: useChat ? '/v1/chat/completions' : '/v1/completions (no chat template: plain [INST] text)',
    model: modelLabel,
    prefix_cache: prefixCache,
    turns: chatTurns,
    repeats: chatRepeats,
    max_tokens: chatMaxTokens,
    ttft_ms_per_turn: ttftPerTurn,
    ttft_ms_mean: round(mean(ttftPerTurn.filter((x) => x !== null))),
    ttft_ms_mean_turns_2_on: round(mean(later)),
    prompt_tokens_per_turn: perTurn.map((t) => t.prompt_tokens.at(-1)),
    cached_tokens_per_turn: perTurn.map((t) => t.cached_tokens.at(-1)),
    completion_tokens_per_turn: perTurn.map((t) => t.completion_tokens.at(-1)),
    empty_replies: emptyReplies,
    errors,
    ...(errorSamples.length ? { error_samples: errorSamples } : {}),
    replies,
  };
}

if (!values['skip-chat']) {
  const on = await conversation(true);
  const off = await conversation(false);
  const { replies: _a, ...onRow } = on;
  const { replies: _b, ...offRow } = off;
  print(onRow);
  print(offRow);
  summary.errors_total += on.errors + off.errors;
  summary.prefix_cache = {
    ttft_ms_mean_on: on.ttft_ms_mean,
    ttft_ms_mean_off: off.ttft_ms_mean,
    ttft_ms_mean_turns_2_on_on: on.ttft_ms_mean_turns_2_on,
    ttft_ms_mean_turns_2_on_off: off.ttft_ms_mean_turns_2_on,
    speedup_turns_2_on: round(off.ttft_ms_mean_turns_2_on / on.ttft_ms_mean_turns_2_on, 2),
    cached_tokens_last_turn_on: on.cached_tokens_per_turn.at(-1),
    cached_tokens_last_turn_off: off.cached_tokens_per_turn.at(-1),
    // greedy: the cache must not change a reply
    same_replies: JSON.stringify(on.replies) === JSON.stringify(off.replies),
  };
}
summary.rss_mib.end = rssMiB();
print(summary);
