// The HTTP server, driven over loopback by the official `openai` client and by raw HTTP:
// the same text as the library, OpenAI's response shapes, streaming, aborts, disconnects,
// errors for every kind of bad request, 429s, metrics, health, mounting, draining.
import { spawn } from 'node:child_process';
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import express from 'express';
import Fastify from 'fastify';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createServer, loadModel, type LaminateServer, type Model } from '../lib/index.js';

let model: Model;
let app: LaminateServer;
let http: Server;
let base: string;
let client: OpenAI;
const KEY = 'sk-test-key';
const NAME = 'tiny-mistral-bf16';

async function listen(handler: Parameters<typeof createHttpServer>[1]): Promise<{ server: Server; url: string }> {
  const server = createHttpServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

beforeAll(async () => {
  model = await loadModel(undefined, { threads: 2, maxQueue: 8, kvCacheTokens: 4096 });
  app = createServer({ model, apiKeys: [KEY, 'sk-second'] });
  ({ server: http, url: base } = await listen(app));
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: KEY, maxRetries: 0 });
});
afterAll(async () => {
  await new Promise((resolve) => http.close(resolve));
  model.dispose();
});

async function raw(path: string, body: unknown, headers: Record<string, string> = {}, method = 'POST'): Promise<{ status: number; headers: Headers; json: any; text: string }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json', ...headers },
    ...(method === 'POST' ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, headers: res.headers, json, text };
}

const until = async (check: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return check();
};

describe('with the openai client', () => {
  const messages = [{ role: 'user' as const, content: 'What is a Python list?' }];

  it('lists the model', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([NAME]);
    expect((await client.models.retrieve(NAME)).id).toBe(NAME);
  });

  it('a greedy chat completion gives the text and token counts of model.chat', async () => {
    const r = await client.chat.completions.create({ model: NAME, messages, max_tokens: 24, temperature: 0 });
    const local = await model.chat(messages, { maxTokens: 24 });
    expect(r.object).toBe('chat.completion');
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0]!.message).toMatchObject({ role: 'assistant', content: local.text });
    expect(r.choices[0]!.finish_reason).toBe(local.finishReason === 'length' ? 'length' : 'stop');
    expect(r.usage).toMatchObject({ prompt_tokens: local.promptTokens, completion_tokens: local.tokens.length, total_tokens: local.promptTokens + local.tokens.length });
  });

  it('a greedy text completion gives the text of model.generate, with finish_reason stop at a stop string', async () => {
    const prompt = 'The function';
    const local = await model.generate(prompt, { maxTokens: 30 });
    const r = await client.completions.create({ model: NAME, prompt, max_tokens: 30, temperature: 0 });
    expect(r.object).toBe('text_completion');
    expect(r.choices[0]!.text).toBe(local.text);
    const stop = local.text.slice(10, 13);
    const cut = await client.completions.create({ model: NAME, prompt, max_tokens: 30, temperature: 0, stop: [stop] });
    expect(cut.choices[0]!.text).toBe(local.text.slice(0, local.text.indexOf(stop)));
    expect(cut.choices[0]!.finish_reason).toBe('stop');
    // token ids as the prompt
    const ids = await client.completions.create({ model: NAME, prompt: model.tokenize(prompt), max_tokens: 30, temperature: 0 });
    expect(ids.choices[0]!.text).toBe(local.text);
  });

  it('streams the same text in deltas, then finish_reason, then usage', async () => {
    const whole = await client.chat.completions.create({ model: NAME, messages, max_tokens: 24, temperature: 0 });
    const stream = await client.chat.completions.create({ model: NAME, messages, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    const finishes: (string | null)[] = [];
    let usage = null;
    let first = true;
    for await (const chunk of stream) {
      expect(chunk.object).toBe('chat.completion.chunk');
      if (chunk.usage) {
        usage = chunk.usage;
        expect(chunk.choices).toEqual([]);
        continue;
      }
      if (first) expect(chunk.choices[0]!.delta.role).toBe('assistant');
      first = false;
      text += chunk.choices[0]!.delta.content ?? '';
      finishes.push(chunk.choices[0]!.finish_reason);
    }
    expect(text).toBe(whole.choices[0]!.message.content);
    expect(finishes.at(-1)).toBe(whole.choices[0]!.finish_reason);
    expect(finishes.slice(0, -1).every((f) => f === null)).toBe(true);
    expect(usage).toMatchObject({ prompt_tokens: whole.usage!.prompt_tokens, completion_tokens: whole.usage!.completion_tokens });
  });

  it('log-probabilities are the model own, with the top alternatives asked for', async () => {
    const local = await model.chat(messages, { maxTokens: 6, logprobs: 3 });
    const r = await client.chat.completions.create({ model: NAME, messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3 });
    const content = r.choices[0]!.logprobs!.content!;
    expect(content).toHaveLength(local.tokens.length);
    content.forEach((entry, i) => {
      expect(entry.logprob).toBeCloseTo(local.logprobs![i]!.logprob, 10);
      expect(entry.top_logprobs).toHaveLength(3);
      expect(entry.top_logprobs[0]!.logprob).toBeGreaterThanOrEqual(entry.top_logprobs[2]!.logprob);
      expect(Buffer.from(entry.bytes!).toString('utf8')).toBe(entry.token);
    });
    const completion = await client.completions.create({ model: NAME, prompt: 'The function', max_tokens: 4, temperature: 0, logprobs: 2 });
    expect(completion.choices[0]!.logprobs!.tokens!.join('')).toBe(completion.choices[0]!.text);
    expect(completion.choices[0]!.logprobs!.top_logprobs![0]!).toSatisfy((o: object) => Object.keys(o).length === 2);
  });

  it('n choices with a seed: each sampled on its own, the same again with the same seed', async () => {
    const ask = () => client.chat.completions.create({ model: NAME, messages, max_tokens: 12, temperature: 1.5, n: 3, seed: 11 });
    const [a, b] = await Promise.all([ask(), ask()]);
    expect(a.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(a.choices.map((c) => c.message.content)).toEqual(b.choices.map((c) => c.message.content));
    expect(new Set(a.choices.map((c) => c.message.content)).size).toBeGreaterThan(1);
    const single = await model.chat(messages, { maxTokens: 12, temperature: 1.5, seed: 11 });
    expect(a.choices[0]!.message.content).toBe(single.text);
    expect(a.usage!.completion_tokens).toBeGreaterThan(a.choices.length);
  });

  it('an abort through the client AbortController cancels the generation and frees its pages', async () => {
    const controller = new AbortController();
    const stream = await client.completions.create(
      { model: NAME, prompt: 'Once upon a time', max_tokens: 2000, temperature: 0, stream: true, ignore_eos: true } as OpenAI.Completions.CompletionCreateParamsStreaming,
      { signal: controller.signal },
    );
    let chunks = 0;
    // (the client ends the iteration, quietly or with an AbortError)
    await (async () => {
      for await (const _ of stream) if (++chunks === 3) controller.abort();
    })().catch((e: Error) => expect(e.name).toMatch(/Abort/));
    expect(chunks).toBeGreaterThanOrEqual(3);
    expect(chunks).toBeLessThan(100);
    expect(await until(() => model.pendingRequests.active === 0 && model.cacheStats().pagesInUse === 0)).toBe(true);
  });

  it('the sampler fields of laminate pass through (top_k: 1 is greedy)', async () => {
    const greedy = await client.chat.completions.create({ model: NAME, messages, max_tokens: 10, temperature: 0 });
    const topK = await client.chat.completions.create({ model: NAME, messages, max_tokens: 10, temperature: 1, top_k: 1, min_p: 0.1, repetition_penalty: 1 } as never);
    expect((topK as typeof greedy).choices[0]!.message.content).toBe(greedy.choices[0]!.message.content);
  });
});

describe('bad requests', () => {
  const chat = { model: NAME, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 };
  const expectError = (r: { status: number; json: any }, status: number, pattern: RegExp, param?: string) => {
    expect(r.status).toBe(status);
    expect(r.json.error).toMatchObject({ type: expect.any(String), message: expect.stringMatching(pattern) });
    if (param) expect(r.json.error.param).toBe(param);
  };

  it('get OpenAI error objects with the right status', async () => {
    expectError(await raw('/v1/chat/completions', '{"model": '), 400, /not valid JSON/);
    expectError(await raw('/v1/chat/completions', '[1, 2]'), 400, /JSON object/);
    expectError(await raw('/v1/chat/completions', { ...chat, model: 'gpt-4' }), 404, /does not exist/, 'model');
    expectError(await raw('/v1/chat/completions', { ...chat, temperature: 'warm' }), 400, /temperature/, 'temperature');
    expectError(await raw('/v1/chat/completions', { ...chat, temperature: 2.5 }), 400, /temperature/, 'temperature');
    expectError(await raw('/v1/chat/completions', { ...chat, top_p: 0 }), 400, /top_p/, 'top_p');
    expectError(await raw('/v1/chat/completions', { ...chat, max_tokens: -1 }), 400, /max_tokens/, 'max_tokens');
    expectError(await raw('/v1/chat/completions', { ...chat, n: 1.5 }), 400, /'n'/, 'n');
    expectError(await raw('/v1/chat/completions', { ...chat, logit_bias: { abc: 1 } }), 400, /token id/, 'logit_bias');
    expectError(await raw('/v1/chat/completions', { ...chat, stop: [1] }), 400, /stop/, 'stop');
    expectError(await raw('/v1/chat/completions', { ...chat, messages: [] }), 400, /messages/, 'messages');
    expectError(await raw('/v1/chat/completions', { ...chat, messages: [{ role: 'wizard', content: 'x' }] }), 400, /role/, 'messages');
    expectError(await raw('/v1/chat/completions', { ...chat, messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }), 400, /text parts/);
    expectError(await raw('/v1/chat/completions', { ...chat, temprature: 1 }), 400, /unrecognized.*temprature/);
    expectError(await raw('/v1/chat/completions', { ...chat, response_format: { type: 'json_schema' } }), 400, /response_format/);
    expectError(await raw('/v1/chat/completions', { ...chat, max_tokens: 100000 }), 400, /context length/, 'max_tokens');
    expectError(await raw('/v1/completions', { model: NAME, prompt: 'word '.repeat(5000), max_tokens: 4 }), 400, /context length/);
    expectError(await raw('/v1/completions', { model: NAME, prompt: [1, 99999] }), 400, /prompt/, 'prompt');
    // a megabyte of text is refused before it is tokenized (and never overflows the stack)
    expectError(await raw('/v1/chat/completions', { ...chat, messages: [{ role: 'user', content: 'word '.repeat(200_000) }] }), 400, /at least \d+ tokens .* more than the context size/);
    expectError(await raw('/v1/completions', { model: NAME, prompt: 'x'.repeat(5 * 1024 * 1024) }), 413, /larger than/);
    expectError(await raw('/v1/embeddings', { model: NAME, input: 'x' }), 404, /unknown request URL/);
    // a Mistral template that refuses the conversation
    expectError(await raw('/v1/chat/completions', { ...chat, messages: [{ role: 'assistant', content: 'a' }, { role: 'assistant', content: 'b' }] }), 400, /template|alternate/i);
  });

  it('need a valid API key, compared whole', async () => {
    expectError(await raw('/v1/models', null, { Authorization: '' }, 'GET'), 401, /API key/);
    expectError(await raw('/v1/models', null, { Authorization: `Bearer ${KEY}x` }, 'GET'), 401, /API key/);
    expectError(await raw('/v1/models', null, { Authorization: `Bearer ${KEY.slice(0, -1)}` }, 'GET'), 401, /API key/);
    expect((await raw('/v1/models', null, { Authorization: 'Bearer sk-second' }, 'GET')).status).toBe(200);
    // health and metrics are for the infrastructure: no key
    expect((await fetch(`${base}/health`)).status).toBe(200);
  });

  it('a burst of garbage leaves every client answered and the server well', async () => {
    const bodies = ['', 'null', '0', '"x"', '{}', '{"model": null}', `{"model":"${NAME}","messages":"hi"}`, `{"model":"${NAME}","prompt":{}}`, '\u0000\u0001', '{"a":'.repeat(2000)];
    for (const path of ['/v1/chat/completions', '/v1/completions'])
      for (const body of bodies) {
        const r = await raw(path, body);
        expect(r.status).toBeGreaterThanOrEqual(400);
        expect(r.status).toBeLessThan(500);
        expect(r.json.error.message).toEqual(expect.any(String));
      }
    const ok = await client.chat.completions.create({ model: NAME, messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, temperature: 0 });
    expect(ok.choices[0]!.message.content).toBe((await model.chat([{ role: 'user', content: 'hi' }], { maxTokens: 3 })).text);
  });
});

describe('many clients', () => {
  it('each gets what it would get alone', async () => {
    const prompts = ['The function', 'Python is', 'A list is', 'In the beginning', 'import os', 'def main():', 'The cat', 'Errors should'];
    const alone = [];
    for (const p of prompts) alone.push((await model.generate(p, { maxTokens: 20 })).text);
    const together = await Promise.all(prompts.map((p) => client.completions.create({ model: NAME, prompt: p, max_tokens: 20, temperature: 0 })));
    expect(together.map((r) => r.choices[0]!.text)).toEqual(alone);
  });

  it('a full cache and queue answers 429 with Retry-After; a request that can never fit answers 400', async () => {
    await using small = await loadModel(undefined, { threads: 2, kvCacheTokens: 64, contextSize: 64, maxQueue: 0 });
    const server = createServer({ model: small });
    const { server: h, url } = await listen(server);
    try {
      const body = (maxTokens: number) => JSON.stringify({ model: NAME, prompt: 'The function', max_tokens: maxTokens, temperature: 0, stream: true });
      const post = (b: string) => fetch(`${url}/v1/completions`, { method: 'POST', body: b });
      const running = await post(body(50));
      expect(running.status).toBe(200);
      const reader = running.body!.getReader();
      await reader.read();
      const refused = await post(body(50));
      expect(refused.status).toBe(429);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(((await refused.json()) as any).error.code).toBe('rate_limit_exceeded');
      const never = await post(JSON.stringify({ model: NAME, prompt: 'The function', max_tokens: 70 }));
      expect(never.status).toBe(400);
      while (!(await reader.read()).done);
      expect((await post(body(5))).status).toBe(200);
    } finally {
      h.closeAllConnections();
      await new Promise((resolve) => h.close(resolve));
    }
  });

  it('a client that disconnects mid-stream frees its generation', async () => {
    const { hostname, port } = new URL(base);
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest({ hostname, port, path: '/v1/completions', method: 'POST', headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' } }, (res) => {
        expect(res.statusCode).toBe(200);
        res.once('data', () => {
          expect(model.pendingRequests.active).toBe(1);
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      req.end(JSON.stringify({ model: NAME, prompt: 'Once upon a time', max_tokens: 3000, temperature: 0, stream: true, ignore_eos: true }));
      setTimeout(() => reject(new Error('no data')), 10_000);
    });
    expect(await until(() => model.pendingRequests.active === 0 && model.cacheStats().pagesInUse === 0)).toBe(true);
  });
});

describe('operations', () => {
  it('metrics count requests by status, tokens, latency and the KV cache', async () => {
    const before = await (await fetch(`${base}/metrics`)).text();
    const value = (text: string, line: string) => Number(new RegExp(`^${line.replace(/[{}"/.]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
    const r = await client.completions.create({ model: NAME, prompt: 'The function', max_tokens: 7, temperature: 0 });
    await raw('/v1/completions', { model: NAME, prompt: 'x', temperature: 9 });
    const res = await fetch(`${base}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/text\/plain/);
    const after = await res.text();
    const ok = 'laminate_http_requests_total{endpoint="/v1/completions",status="200"}';
    const bad = 'laminate_http_requests_total{endpoint="/v1/completions",status="400"}';
    expect(value(after, ok) - value(before, ok)).toBe(1);
    expect(value(after, bad) - value(before, bad)).toBe(1);
    expect(value(after, 'laminate_prompt_tokens_total') - value(before, 'laminate_prompt_tokens_total')).toBe(r.usage!.prompt_tokens);
    expect(value(after, 'laminate_generated_tokens_total') - value(before, 'laminate_generated_tokens_total')).toBe(r.usage!.completion_tokens);
    expect(value(after, 'laminate_time_to_first_token_seconds_count') - value(before, 'laminate_time_to_first_token_seconds_count')).toBe(1);
    expect(after).toMatch(/^laminate_kv_cache_pages\{state="capacity"\} 256$/m);
    expect(after).toMatch(/^laminate_queue_requests\{state="waiting"\} 0$/m);
    expect(after).toMatch(/^laminate_generation_tokens_per_second_bucket/m);
  });

  it('reports cached prompt tokens of a conversation continued', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me about the Python standard library and what it has for files.' }];
    const first = await client.chat.completions.create({ model: NAME, messages, max_tokens: 16, temperature: 0 });
    const next = await client.chat.completions.create({ model: NAME, messages: [...messages, first.choices[0]!.message, { role: 'user', content: 'And for dates?' }], max_tokens: 4, temperature: 0 });
    expect(next.usage!.prompt_tokens_details!.cached_tokens).toBeGreaterThanOrEqual(16);
  });

  it('health is 503 while the model loads and 200 once it is ready; the API waits with 503', async () => {
    let resolve!: (m: Model) => void;
    const server = createServer({ model: new Promise<Model>((r) => (resolve = r)) });
    const { server: h, url } = await listen(server);
    try {
      const loading = await fetch(`${url}/health`);
      expect(loading.status).toBe(503);
      expect(await loading.json()).toMatchObject({ status: 'loading' });
      expect((await fetch(`${url}/health/live`)).status).toBe(200);
      expect((await fetch(`${url}/v1/models`)).status).toBe(503);
      resolve(model);
      await until(() => server.state === 'ready');
      expect((await fetch(`${url}/health`)).status).toBe(200);
      const drained = server.drain(1000);
      await drained;
      expect((await fetch(`${url}/health`)).status).toBe(503);
      expect((await fetch(`${url}/v1/models`)).status).toBe(503);
    } finally {
      await new Promise((r) => h.close(r));
    }
  });

  it('mounts in Express and in Fastify', async () => {
    const outer = express();
    outer.use('/llm', createServer({ model }));
    const { server: e, url: eu } = await listen(outer);
    const fastify = Fastify();
    const inner = createServer({ model });
    fastify.register(async (scope) => {
      // the handler reads the body itself
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', (_req, _payload, done) => done(null));
      scope.all('/*', (req, reply) => {
        reply.hijack();
        inner(req.raw, reply.raw);
      });
    });
    await fastify.listen({ port: 0, host: '127.0.0.1' });
    const fu = `http://127.0.0.1:${(fastify.server.address() as AddressInfo).port}`;
    try {
      const expected = (await model.generate('The function', { maxTokens: 8 })).text;
      for (const url of [`${eu}/llm/v1`, `${fu}/v1`]) {
        const c = new OpenAI({ baseURL: url, apiKey: 'none', maxRetries: 0 });
        const r = await c.completions.create({ model: NAME, prompt: 'The function', max_tokens: 8, temperature: 0 });
        expect(r.choices[0]!.text).toBe(expected);
      }
    } finally {
      await fastify.close();
      await new Promise((r) => e.close(r));
    }
  });

  it('CORS is off unless asked for', async () => {
    const preflight = (url: string) => fetch(`${url}/v1/chat/completions`, { method: 'OPTIONS', headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'POST' } });
    expect((await preflight(base)).headers.get('access-control-allow-origin')).toBeNull();
    const { server: h, url } = await listen(createServer({ model, cors: ['https://app.example'] }));
    try {
      const r = await preflight(url);
      expect(r.status).toBe(204);
      expect(r.headers.get('access-control-allow-origin')).toBe('https://app.example');
      const other = await fetch(`${url}/v1/models`, { headers: { Origin: 'https://evil.example' } });
      expect(other.headers.get('access-control-allow-origin')).toBeNull();
    } finally {
      await new Promise((r) => h.close(r));
    }
  });

  it('laminate serve: SIGTERM stops taking requests, lets the running one finish, exits 0', async () => {
    const cli = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');
    const child = spawn(process.execPath, [cli, 'serve', '--port', '0', '--threads', '2', '--api-key', KEY], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      expect(await until(() => /serving/.test(stderr), 30_000)).toBe(true);
      const url = /listening on (\S+)/.exec(stderr)![1]!;
      const c = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 });
      const stream = await c.completions.create({ model: NAME, prompt: 'Once upon a time', max_tokens: 300, temperature: 0, stream: true, stream_options: { include_usage: true }, ignore_eos: true } as OpenAI.Completions.CompletionCreateParamsStreaming);
      let text = '';
      let usage: { completion_tokens: number } | null = null;
      let signalled = false;
      for await (const chunk of stream) {
        if (!signalled) {
          child.kill('SIGTERM');
          signalled = true;
        }
        text += chunk.choices[0]?.text ?? '';
        usage = chunk.usage ?? usage;
      }
      const local = await model.generate('Once upon a time', { maxTokens: 300, stopAtEos: false });
      expect(text).toBe(local.text);
      expect(usage!.completion_tokens).toBe(300);
      expect(await exited).toBe(0);
      await expect(fetch(`${url}/health`)).rejects.toThrow();
    } finally {
      child.kill('SIGKILL');
    }
  });
});
