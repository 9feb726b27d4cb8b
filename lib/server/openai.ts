// The two generation endpoints: a parsed request becomes one laminate generation per
// choice (all sharing the engine's continuous batching), and their results become OpenAI's
// response objects, whole or as server-sent events.
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';

import type { Generation, GenerationResult, TokenLogprob, ToolCall } from '../generate/generation.js';
import { withToolCalls } from '../model/tools.js';
import type { GenerateOptions, Model } from '../model/model.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { ApiError, apiErrorOf, badRequest } from './errors.js';
import type { ServerMetrics } from './metrics.js';
import type { ParsedChat, ParsedCommon, ParsedCompletion } from './request.js';

export interface EndpointContext {
  model: Model;
  modelName: string;
  metrics: ServerMetrics;
  /** max_tokens when a request gives none (capped by what the context leaves). */
  defaultMaxTokens: number;
  tokens: TokenStrings;
}

/** Most choices (prompts x n) one request may ask for. */
const MAX_CHOICES = 64;

/** How a token reads in log-probability listings: its text and its UTF-8 bytes. */
export class TokenStrings {
  readonly #cache = new Map<number, { token: string; bytes: number[] }>();
  constructor(readonly tokenizer: Tokenizer | null) {}

  get(id: number): { token: string; bytes: number[] } {
    let t = this.#cache.get(id);
    if (!t) {
      if (!this.tokenizer) return { token: `<${id}>`, bytes: Array.from(Buffer.from(`<${id}>`)) };
      const stored = this.tokenizer.tokenText(id) ?? '';
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(stored);
      if (byte) {
        const b = parseInt(byte[1]!, 16);
        t = { token: b < 0x80 ? String.fromCharCode(b) : `\\x${byte[1]!.toLowerCase()}`, bytes: [b] };
      } else {
        // SentencePiece marks a leading space with U+2581, which decoding a lone token drops.
        const token = stored.includes('\u2581') ? stored.replaceAll('\u2581', ' ') : this.tokenizer.decode([id]);
        t = { token, bytes: Array.from(Buffer.from(token, 'utf8')) };
      }
      this.#cache.set(id, t);
    }
    return t;
  }
}

interface Choice {
  index: number;
  generation: Generation;
  promptText: string;
}

const finishReason = (r: GenerationResult): 'stop' | 'length' | 'tool_calls' => (r.finishReason === 'length' || r.finishReason === 'tool_calls' ? r.finishReason : 'stop');

const openaiToolCalls = (calls: ToolCall[], first = 0) => calls.map((c, i) => ({ index: first + i, id: c.id, type: 'function' as const, function: { name: c.name, arguments: c.arguments } }));

function assistantMessage(r: GenerationResult) {
  if (r.toolCalls) return { role: 'assistant', content: null, tool_calls: openaiToolCalls(r.toolCalls), refusal: null };
  return { role: 'assistant', content: r.text, refusal: null, ...(r.toolCallError ? { tool_call_error: r.toolCallError } : {}) };
}

function maxTokensFor(ctx: EndpointContext, parsed: ParsedCommon, promptTokens: number): number {
  const context = ctx.model.info.contextSize;
  const room = context - promptTokens;
  if (parsed.maxTokens === null) {
    if (room < 1) throw badRequest(`this model's maximum context length is ${context} tokens, and the prompt has ${promptTokens}`, 'messages', 'context_length_exceeded');
    return Math.min(room, ctx.defaultMaxTokens);
  }
  if (parsed.maxTokens > room)
    throw badRequest(`this model's maximum context length is ${context} tokens; the request asks for ${promptTokens + parsed.maxTokens} (${promptTokens} in the prompt, ${parsed.maxTokens} to generate)`, 'max_tokens', 'context_length_exceeded');
  return parsed.maxTokens;
}

/** Starts a generation for each choice; fails (aborting the others) when any of them is
 * refused at once, as when the cache and its queue are full. */
async function start(
  ctx: EndpointContext,
  parsed: ParsedCommon,
  prompts: Int32Array[],
  signal: AbortSignal,
  base: GenerateOptions = parsed.options,
  wrap: (g: Generation) => Generation = (g) => g,
): Promise<Generation[]> {
  if (prompts.length * parsed.n > MAX_CHOICES) throw badRequest(`at most ${MAX_CHOICES} choices per request (prompts x n)`, 'n');
  const limits = prompts.map((p) => maxTokensFor(ctx, parsed, p.length));
  const generations: Generation[] = [];
  let refused: unknown = null;
  for (const [p, tokens] of prompts.entries()) {
    for (let i = 0; i < parsed.n; i++) {
      const options: GenerateOptions = { ...base, maxTokens: limits[p]!, signal };
      if (parsed.logprobs !== null) options.logprobs = Math.max(1, parsed.logprobs);
      if (options.seed !== undefined && generations.length > 0) options.seed += generations.length;
      const g = wrap(ctx.model.generate({ ...options, tokens }));
      g.catch((e: unknown) => (refused ??= e));
      generations.push(g);
    }
  }
  // A refusal settles within the microtasks of this turn.
  await new Promise((resolve) => setImmediate(resolve));
  if (refused !== null) throw refused;
  return generations;
}

function record(ctx: EndpointContext, results: GenerationResult[]): void {
  const m = ctx.metrics;
  for (const r of results) {
    m.promptTokens.inc(r.promptTokens);
    m.cachedPromptTokens.inc(r.cachedTokens);
    m.generatedTokens.inc(r.tokens.length);
    if (r.tokens.length > 0) m.timeToFirstToken.observe(r.timeToFirstTokenMs / 1000);
    if (r.tokens.length > 1) m.tokensPerSecond.observe(r.tokensPerSecond);
  }
}

function usage(results: GenerationResult[], n: number) {
  // each prompt once (n choices share it), every choice's tokens
  let prompt = 0, completion = 0, cached = 0;
  results.forEach((r, i) => {
    if (i % n === 0) {
      prompt += r.promptTokens;
      cached += r.cachedTokens;
    }
    completion += r.tokens.length;
  });
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } };
}

function chatLogprobs(ctx: EndpointContext, list: TokenLogprob[], top: number) {
  return list.map((lp) => ({
    ...ctx.tokens.get(lp.token),
    logprob: lp.logprob,
    top_logprobs: lp.top.slice(0, top).map((t) => ({ ...ctx.tokens.get(t.token), logprob: t.logprob })),
  }));
}

function completionLogprobs(ctx: EndpointContext, list: TokenLogprob[], top: number, offset: number) {
  const tokens: string[] = [], tokenLogprobs: number[] = [], tops: Record<string, number>[] = [], offsets: number[] = [];
  for (const lp of list) {
    const { token } = ctx.tokens.get(lp.token);
    tokens.push(token);
    tokenLogprobs.push(lp.logprob);
    tops.push(Object.fromEntries(lp.top.slice(0, top).map((t) => [ctx.tokens.get(t.token).token, t.logprob])));
    offsets.push(offset);
    offset += token.length;
  }
  return { tokens, token_logprobs: tokenLogprobs, top_logprobs: tops, text_offset: offsets };
}

const id = (prefix: string): string => `${prefix}-${randomBytes(12).toString('base64url')}`;

/** Server-sent events. */
class EventStream {
  constructor(readonly res: ServerResponse) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    res.flushHeaders();
  }
  send(data: unknown): void {
    if (!this.res.writableEnded && !this.res.destroyed) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }
  end(): void {
    if (!this.res.writableEnded && !this.res.destroyed) this.res.end('data: [DONE]\n\n');
  }
  fail(e: unknown): void {
    // Headers are gone: the error travels as an event, then the stream ends.
    this.send(apiErrorOf(e).body());
    this.end();
  }
}

/** Runs every choice to its end, streaming each chunk through `onChunk` as it comes. */
async function collect(choices: Choice[], onChunk: ((choice: Choice, text: string, logprobs: TokenLogprob[] | undefined, toolCalls: ToolCall[] | undefined) => void) | null): Promise<GenerationResult[]> {
  return Promise.all(
    choices.map(async (c) => {
      if (onChunk) for await (const chunk of c.generation) if (chunk.text !== '' || chunk.logprobs || chunk.toolCalls) onChunk(c, chunk.text, chunk.logprobs, chunk.toolCalls);
      return c.generation;
    }),
  );
}

export async function chatCompletion(ctx: EndpointContext, parsed: ParsedChat, res: ServerResponse, signal: AbortSignal): Promise<void> {
  const tokenizer = ctx.model.tokenizer;
  if (!tokenizer?.chatTemplate) throw badRequest(`the model '${ctx.modelName}' has no chat template: use /v1/completions`, 'model');
  let plan;
  try {
    plan = ctx.model._planChat(parsed.messages, { ...parsed.options, ...(parsed.tools ? { tools: parsed.tools } : {}), ...(parsed.toolChoice ? { toolChoice: parsed.toolChoice } : {}) });
  } catch (e) {
    // the conversation or the tool settings do not work together: the request's fault
    throw e instanceof Error && !(e instanceof ApiError) ? badRequest(e.message, e instanceof TypeError ? 'tool_choice' : 'messages') : e;
  }
  if (plan.prompt.length === 0) throw badRequest('the chat template rendered these messages to nothing', 'messages');
  const generations = await start(ctx, parsed, [plan.prompt], signal, plan.options, (g) => withToolCalls(g, plan));
  const choices = generations.map((generation, index) => ({ index, generation, promptText: '' }));
  const base = { id: id('chatcmpl'), created: Math.floor(Date.now() / 1000), model: ctx.modelName, system_fingerprint: null };
  const top = parsed.logprobs ?? 0;
  if (!parsed.stream) {
    const results = await collect(choices, null);
    record(ctx, results);
    writeJson(res, 200, {
      ...base,
      object: 'chat.completion',
      choices: results.map((r, index) => ({
        index,
        message: assistantMessage(r),
        logprobs: parsed.logprobs === null ? null : { content: chatLogprobs(ctx, r.logprobs ?? [], top), refusal: null },
        finish_reason: finishReason(r),
      })),
      usage: usage(results, parsed.n),
    });
    return;
  }
  const events = new EventStream(res);
  const chunk = (choicesField: unknown[]) => events.send({ ...base, object: 'chat.completion.chunk', choices: choicesField, ...(parsed.includeUsage ? { usage: null } : {}) });
  try {
    for (const c of choices) chunk([{ index: c.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
    const callsSent = new Map<number, number>();
    const results = await collect(choices, (c, text, lps, calls) => {
      const logprobs = parsed.logprobs === null ? null : { content: chatLogprobs(ctx, lps ?? [], top), refusal: null };
      if (calls) {
        const first = callsSent.get(c.index) ?? 0;
        callsSent.set(c.index, first + calls.length);
        chunk([{ index: c.index, delta: { tool_calls: openaiToolCalls(calls, first) }, logprobs, finish_reason: null }]);
      } else if (text !== '') chunk([{ index: c.index, delta: { content: text }, logprobs, finish_reason: null }]);
    });
    for (const [index, r] of results.entries()) chunk([{ index, delta: {}, logprobs: null, finish_reason: finishReason(r) }]);
    record(ctx, results);
    if (parsed.includeUsage) events.send({ ...base, object: 'chat.completion.chunk', choices: [], usage: usage(results, parsed.n) });
    events.end();
  } catch (e) {
    if (!signal.aborted) events.fail(e);
  }
}

export async function completion(ctx: EndpointContext, parsed: ParsedCompletion, res: ServerResponse, signal: AbortSignal): Promise<void> {
  const model = ctx.model;
  const prompts = parsed.prompts.map((p) => {
    if (typeof p !== 'string') return Int32Array.from(p);
    if (!model.tokenizer) throw badRequest(`the model '${ctx.modelName}' has no tokenizer: send the prompt as token ids`, 'prompt');
    return Int32Array.from(model.tokenize(p, { specialTokens: 'parse', addSpecialTokens: true }));
  });
  if (prompts.some((p) => p.length === 0)) throw badRequest('the prompt tokenizes to nothing', 'prompt');
  const promptTexts = parsed.prompts.map((p, i) => (typeof p === 'string' ? p : model.tokenizer ? model.detokenize(prompts[i]!) : ''));
  const generations = await start(ctx, parsed, prompts, signal);
  const choices = generations.map((generation, index) => ({ index, generation, promptText: promptTexts[Math.floor(index / parsed.n)]! }));
  const base = { id: id('cmpl'), created: Math.floor(Date.now() / 1000), model: ctx.modelName, system_fingerprint: null };
  const top = parsed.logprobs ?? 0;
  if (!parsed.stream) {
    const results = await collect(choices, null);
    record(ctx, results);
    writeJson(res, 200, {
      ...base,
      object: 'text_completion',
      choices: results.map((r, index) => {
        const prefix = parsed.echo ? choices[index]!.promptText : '';
        return {
          index,
          text: prefix + r.text,
          logprobs: parsed.logprobs === null ? null : completionLogprobs(ctx, r.logprobs ?? [], top, prefix.length),
          finish_reason: finishReason(r),
        };
      }),
      usage: usage(results, parsed.n),
    });
    return;
  }
  const events = new EventStream(res);
  const offsets = new Map<number, number>();
  const chunk = (c: { index: number; text: string; logprobs: unknown; finish_reason: string | null }) =>
    events.send({ ...base, object: 'text_completion', choices: [c], ...(parsed.includeUsage ? { usage: null } : {}) });
  try {
    if (parsed.echo) for (const c of choices) chunk({ index: c.index, text: c.promptText, logprobs: null, finish_reason: null });
    const results = await collect(choices, (c, text, lps) => {
      const offset = offsets.get(c.index) ?? (parsed.echo ? c.promptText.length : 0);
      offsets.set(c.index, offset + text.length);
      chunk({ index: c.index, text, logprobs: parsed.logprobs === null ? null : completionLogprobs(ctx, lps ?? [], top, offset), finish_reason: null });
    });
    for (const [index, r] of results.entries()) chunk({ index, text: '', logprobs: null, finish_reason: finishReason(r) });
    record(ctx, results);
    if (parsed.includeUsage) events.send({ ...base, object: 'text_completion', choices: [], usage: usage(results, parsed.n) });
    events.end();
  } catch (e) {
    if (!signal.aborted) events.fail(e);
  }
}

export function writeJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

