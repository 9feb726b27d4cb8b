// Tool calling end to end on a small random model that has the real Mistral v3 tokenizer:
// forced calls valid against the tools' schemas, streamed as they complete, forbidden
// calls, malformed calls reported, and the same through the HTTP server with the openai
// client (tools, tool_choice, tool_calls deltas, tool results in the history,
// response_format).
import { copyFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { Ajv2020 } from 'ajv/dist/2020.js';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createServer, encodeMistralV3, loadModel, renderChat, type ChatTool, type Model } from '../lib/index.js';
import { tmpDir, writeTinyCheckpoint } from './helpers/checkpoint.js';
import { fixturesDir, haveFixtures } from './helpers/fixtures.js';

const tools: ChatTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather in a city',
      parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 20 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'] },
    },
  },
  {
    type: 'function',
    function: { name: 'add', description: 'Adds two numbers', parameters: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 99 }, b: { type: 'integer', minimum: 0, maximum: 99 } }, required: ['a', 'b'] } },
  },
];
const ajv = new Ajv2020({ strict: false });
const validators = new Map(tools.map((t) => [t.function.name, ajv.compile(t.function.parameters!)]));
const messages = [{ role: 'user' as const, content: 'What is the weather in Paris?' }];

let model: Model;
let http: Server;
let client: OpenAI;
const NAME = 'mistral-v3-random';

describe.skipIf(!haveFixtures)('tool calls (random model, Mistral v3 tokenizer)', () => {
  beforeAll(async () => {
    const dir = join(tmpDir(), NAME);
    await writeTinyCheckpoint(dir, { hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 32768, dtype: 'BF16', maxPositions: 4096, seed: 5 });
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) copyFileSync(join(fixturesDir, 'mistral-7b-instruct-v0.3', f), join(dir, f));
    model = await loadModel(dir, { threads: 2 });
    http = createHttpServer(createServer({ model }));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    client = new OpenAI({ baseURL: `http://127.0.0.1:${(http.address() as AddressInfo).port}/v1`, apiKey: 'none', maxRetries: 0 });
  });
  afterAll(async () => {
    await new Promise((resolve) => http?.close(resolve));
    model?.dispose();
  });

  const checkCalls = (calls: { name: string; arguments: string; id: string }[], names: string[]) => {
    expect(calls.length).toBeGreaterThan(0);
    for (const c of calls) {
      expect(names).toContain(c.name);
      expect(c.id).toMatch(/^[a-zA-Z0-9]{9}$/);
      const validate = validators.get(c.name)!;
      expect(validate(JSON.parse(c.arguments)), `${c.name}(${c.arguments}): ${ajv.errorsText(validate.errors)}`).toBe(true);
    }
  };

  it('the prompt is mistral-common encoding', () => {
    const history = [...messages, { role: 'assistant' as const, content: null, tool_calls: [{ id: 'abcDEF123', type: 'function' as const, function: { name: 'get_weather', arguments: '{"city": "Paris", "unit": "celsius"}' } }] }, { role: 'tool' as const, tool_call_id: 'abcDEF123', content: '22' }];
    expect(renderChat(model.tokenizer!, history, tools)).toEqual(encodeMistralV3(model.tokenizer!, history, { tools }));
  });

  it("toolChoice 'required' forces calls whose arguments match the tool's schema, streamed as each completes", async () => {
    for (let seed = 0; seed < 6; seed++) {
      const generation = model.chat(messages, { tools, toolChoice: 'required', temperature: 1, seed, maxTokens: 200 });
      const streamed = [];
      for await (const chunk of generation) if (chunk.toolCalls) streamed.push(...chunk.toolCalls);
      const result = await generation;
      if (result.finishReason === 'length') continue;
      expect(result.finishReason).toBe('tool_calls');
      expect(result.text).toBe('');
      checkCalls(result.toolCalls!, ['get_weather', 'add']);
      expect(streamed).toEqual(result.toolCalls);
    }
  });

  it('a named tool is called once; none forbids [TOOL_CALLS]; an unreadable call is reported with its text', async () => {
    const named = await model.chat(messages, { tools, toolChoice: { name: 'add' }, temperature: 0.8, seed: 3 });
    expect(named.toolCalls).toHaveLength(1);
    checkCalls(named.toolCalls!, ['add']);
    const toolCallsId = model.tokenize('[TOOL_CALLS]', { addSpecialTokens: false })[0]!;
    const none = await model.chat(messages, { tools, toolChoice: 'none', logitBias: { [toolCallsId]: 50 }, maxTokens: 8 });
    expect(none.tokens).not.toContain(toolCallsId);
    expect(none.toolCalls).toBeUndefined();
    // a random model made to open a call writes no valid JSON after it
    const broken = await model.chat(messages, { tools, logitBias: { [toolCallsId]: 100 }, maxTokens: 6, stopAtEos: false });
    expect(broken.tokens[0]).toBe(toolCallsId);
    expect(broken.toolCalls).toBeUndefined();
    expect(broken.toolCallError).toMatch(/tool calls/);
    expect(broken.finishReason).not.toBe('tool_calls');
    await expect(model.chat(messages, { tools, toolChoice: { name: 'nope' } })).rejects.toThrow(/not among the tools/);
    await expect(model.chat(messages, { toolChoice: 'required' })).rejects.toThrow(/needs tools/);
  });

  it('a chat session keeps the calls in its history and continues after the results', async () => {
    using chat = model.createChat({ tools });
    const first = await chat.send('What is the weather in Paris?', { toolChoice: 'required', temperature: 0.5, seed: 4, maxTokens: 200 });
    expect(first.finishReason).toBe('tool_calls');
    checkCalls(first.toolCalls!, ['get_weather', 'add']);
    expect(chat.messages.at(-1)).toMatchObject({ role: 'assistant', content: null, tool_calls: first.toolCalls!.map((c) => ({ id: c.id, function: { name: c.name, arguments: c.arguments } })) });
    const results = first.toolCalls!.map((c) => ({ role: 'tool', tool_call_id: c.id, content: '{"ok": true}' }));
    const second = await chat.send(results, { maxTokens: 4, temperature: 0 });
    // the whole conversation so far is cached, so only the results were computed
    expect(second.promptTokens).toBeLessThan(encodeMistralV3(model.tokenizer!, chat.messages.slice(0, -1), { tools }).length);
    expect(chat.cachedTokens).toBeGreaterThan(0);
  });

  it('through the server: tool_calls, their deltas, tool results in the history', async () => {
    const r = await client.chat.completions.create({ model: NAME, messages, tools, tool_choice: 'required', temperature: 0.7, seed: 1, max_tokens: 200 });
    const choice = r.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    const calls = choice.message.tool_calls!.map((c) => ({ id: c.id, ...(c as { function: { name: string; arguments: string } }).function }));
    checkCalls(calls, ['get_weather', 'add']);

    const stream = await client.chat.completions.create({ model: NAME, messages, tools, tool_choice: { type: 'function', function: { name: 'get_weather' } }, temperature: 0.7, seed: 2, stream: true });
    const deltas = [];
    let finish = null;
    for await (const chunk of stream) {
      deltas.push(...(chunk.choices[0]?.delta.tool_calls ?? []));
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('tool_calls');
    expect(deltas).toHaveLength(1);
    expect(deltas[0]).toMatchObject({ index: 0, type: 'function', function: { name: 'get_weather' } });
    checkCalls([{ id: deltas[0]!.id!, name: deltas[0]!.function!.name!, arguments: deltas[0]!.function!.arguments! }], ['get_weather']);

    const next = await client.chat.completions.create({
      model: NAME,
      messages: [...messages, choice.message, ...calls.map((c) => ({ role: 'tool' as const, tool_call_id: c.id, content: '{"temperature": 22}' }))],
      tools,
      max_tokens: 5,
      temperature: 0,
    });
    expect(next.usage!.prompt_tokens).toBe(encodeMistralV3(model.tokenizer!, [...messages, { role: 'assistant', content: null, tool_calls: choice.message.tool_calls! as never }, ...calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: '{"temperature": 22}' }))], { tools }).length);
  });

  it('through the server: response_format json_schema and json_object', async () => {
    const schema = { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, rain: { type: 'boolean' } }, required: ['city', 'rain'], additionalProperties: false };
    const validate = ajv.compile(schema);
    for (let seed = 0; seed < 4; seed++) {
      const r = await client.chat.completions.create({ model: NAME, messages, response_format: { type: 'json_schema', json_schema: { name: 'weather', schema } }, temperature: 1, seed, max_tokens: 100 });
      if (r.choices[0]!.finish_reason === 'length') continue;
      expect(validate(JSON.parse(r.choices[0]!.message.content!))).toBe(true);
    }
    const bad = await fetch(`${client.baseURL}/chat/completions`, { method: 'POST', body: JSON.stringify({ model: NAME, messages, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', format: 'email' } } } }) });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/'format' is not supported/);
  });
});
