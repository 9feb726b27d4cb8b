// The body of an OpenAI completion or chat completion request, checked field by field and
// turned into laminate's generate options. Every problem is a 400 that names the field.
import type { GenerateOptions } from '../model/model.js';
import type { ToolChoice } from '../model/tools.js';
import type { ChatMessage, ChatTool } from '../tokenizer/chat-template.js';
import { badRequest } from './errors.js';

type Body = Record<string, unknown>;

export interface ParsedCommon {
  model: string;
  /** Choices per prompt. */
  n: number;
  stream: boolean;
  includeUsage: boolean;
  /** null: as many as the context leaves room for (up to the server's default). */
  maxTokens: number | null;
  /** Alternatives per token when log-probabilities are asked for; null: not asked. */
  logprobs: number | null;
  /** Sampler settings, stop strings. */
  options: GenerateOptions;
}

export interface ParsedChat extends ParsedCommon {
  messages: ChatMessage[];
  tools?: ChatTool[];
  toolChoice?: ToolChoice;
}

export interface ParsedCompletion extends ParsedCommon {
  /** Each prompt: text, or token ids. */
  prompts: (string | number[])[];
  echo: boolean;
}

// OpenAI request fields accepted and without effect here (bookkeeping, or settings whose
// default is all laminate does).
const IGNORED = ['user', 'store', 'metadata', 'service_tier', 'parallel_tool_calls', 'prediction', 'modalities', 'audio', 'reasoning_effort', 'web_search_options', 'prompt_cache_key', 'safety_identifier', 'verbosity'];
const COMMON = ['model', 'stream', 'stream_options', 'max_tokens', 'temperature', 'top_p', 'stop', 'seed', 'presence_penalty', 'frequency_penalty', 'logit_bias', 'n', 'top_k', 'min_p', 'typical_p', 'repetition_penalty', 'ignore_eos', 'grammar', 'regex'];
const CHAT_FIELDS = new Set([...IGNORED, ...COMMON, 'messages', 'max_completion_tokens', 'logprobs', 'top_logprobs', 'tools', 'tool_choice', 'response_format', 'functions', 'function_call']);
const COMPLETION_FIELDS = new Set([...IGNORED, ...COMMON, 'prompt', 'logprobs', 'echo', 'best_of', 'suffix']);

const MAX_CHOICES = 16;

function present(body: Body, key: string): boolean {
  return body[key] !== undefined && body[key] !== null;
}

function number(body: Body, key: string, min: number, max: number, options: { minOpen?: boolean } = {}): number | undefined {
  if (!present(body, key)) return undefined;
  const v = body[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw badRequest(`'${key}' must be a number (got ${JSON.stringify(v)})`, key);
  if (v < min || v > max || (options.minOpen && v === min))
    throw badRequest(`'${key}' must be in ${options.minOpen ? '(' : '['}${min}, ${max}] (got ${v})`, key);
  return v;
}

function integer(body: Body, key: string, min: number, max: number): number | undefined {
  const v = number(body, key, min, max);
  if (v !== undefined && !Number.isInteger(v)) throw badRequest(`'${key}' must be an integer (got ${v})`, key);
  return v;
}

function boolean(body: Body, key: string): boolean | undefined {
  if (!present(body, key)) return undefined;
  if (typeof body[key] !== 'boolean') throw badRequest(`'${key}' must be true or false (got ${JSON.stringify(body[key])})`, key);
  return body[key];
}

function checkFields(body: Body, allowed: Set<string>): void {
  for (const key of Object.keys(body)) if (!allowed.has(key)) throw badRequest(`unrecognized request argument: '${key}'`, key, 'unknown_parameter');
}

function parseCommon(body: unknown, allowed: Set<string>): { body: Body; common: ParsedCommon } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object');
  const b = body as Body;
  checkFields(b, allowed);
  if (typeof b['model'] !== 'string' || b['model'] === '') throw badRequest("'model' is required: a model id from GET /v1/models", 'model');
  const stream = boolean(b, 'stream') ?? false;
  let includeUsage = false;
  if (present(b, 'stream_options')) {
    const so = b['stream_options'];
    if (typeof so !== 'object' || so === null || Array.isArray(so)) throw badRequest("'stream_options' must be an object", 'stream_options');
    if (!stream) throw badRequest("'stream_options' is only allowed with 'stream': true", 'stream_options');
    for (const key of Object.keys(so)) if (key !== 'include_usage' && key !== 'include_obfuscation') throw badRequest(`unrecognized argument 'stream_options.${key}'`, 'stream_options');
    includeUsage = boolean(so as Body, 'include_usage') ?? false;
  }
  const options: GenerateOptions = {};
  const temperature = number(b, 'temperature', 0, 2);
  // OpenAI samples at temperature 1 unless told otherwise.
  options.temperature = temperature ?? 1;
  const topP = number(b, 'top_p', 0, 1, { minOpen: true });
  if (topP !== undefined) options.topP = topP;
  const presence = number(b, 'presence_penalty', -2, 2);
  if (presence !== undefined) options.presencePenalty = presence;
  const frequency = number(b, 'frequency_penalty', -2, 2);
  if (frequency !== undefined) options.frequencyPenalty = frequency;
  const seed = integer(b, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  if (seed !== undefined) options.seed = seed;
  const topK = integer(b, 'top_k', -1, 1e9);
  if (topK !== undefined) options.topK = Math.max(0, topK);
  const minP = number(b, 'min_p', 0, 1);
  if (minP !== undefined) options.minP = minP;
  const typicalP = number(b, 'typical_p', 0, 1, { minOpen: true });
  if (typicalP !== undefined) options.typicalP = typicalP;
  const repetition = number(b, 'repetition_penalty', 0, 1e6, { minOpen: true });
  if (repetition !== undefined) options.repetitionPenalty = repetition;
  if (present(b, 'logit_bias')) {
    const lb = b['logit_bias'];
    if (typeof lb !== 'object' || lb === null || Array.isArray(lb)) throw badRequest("'logit_bias' must be an object of token id -> bias", 'logit_bias');
    const bias: Record<number, number> = {};
    for (const [id, v] of Object.entries(lb)) {
      if (!/^\d+$/.test(id)) throw badRequest(`'logit_bias': '${id}' is not a token id`, 'logit_bias');
      if (typeof v !== 'number' || !Number.isFinite(v) || v < -100 || v > 100) throw badRequest(`'logit_bias[${id}]' must be a number in [-100, 100] (got ${JSON.stringify(v)})`, 'logit_bias');
      bias[Number(id)] = v;
    }
    options.logitBias = bias;
  }
  if (present(b, 'stop')) {
    const stop = b['stop'];
    const list = typeof stop === 'string' ? [stop] : stop;
    if (!Array.isArray(list) || list.length > 4 || !list.every((s) => typeof s === 'string' && s.length > 0))
      throw badRequest("'stop' must be a non-empty string or a list of at most 4 of them", 'stop');
    if (list.length > 0) options.stop = list as string[];
  }
  if (boolean(b, 'ignore_eos')) options.stopAtEos = false;
  for (const key of ['grammar', 'regex'] as const) {
    if (!present(b, key)) continue;
    if (typeof b[key] !== 'string' || b[key] === '') throw badRequest(`'${key}' must be a non-empty string`, key);
    if (options.grammar !== undefined || options.regex !== undefined) throw badRequest("give 'grammar' or 'regex', not both", key);
    options[key] = b[key];
  }
  const n = integer(b, 'n', 1, MAX_CHOICES) ?? 1;
  const maxTokens = integer(b, 'max_tokens', 1, Number.MAX_SAFE_INTEGER) ?? null;
  return { body: b, common: { model: b['model'], n, stream, includeUsage, maxTokens, logprobs: null, options } };
}

function textContent(content: unknown, where: string): string | null {
  if (content === null || content === undefined) return null;
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw badRequest(`'${where}.content' must be a string, null, or a list of text parts`, 'messages');
  return content
    .map((part: unknown, j) => {
      const p = part as Body;
      if (typeof p !== 'object' || p === null || (p['type'] !== 'text' && p['type'] !== 'input_text') || typeof p['text'] !== 'string')
        throw badRequest(`'${where}.content[${j}]': only text parts are supported (type 'text' with a string 'text')`, 'messages');
      return p['text'];
    })
    .join('');
}

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);

function parseMessages(value: unknown): ChatMessage[] {
  if (!Array.isArray(value) || value.length === 0) throw badRequest("'messages' must be a non-empty list", 'messages');
  return value.map((m: unknown, i) => {
    const where = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw badRequest(`'${where}' must be an object`, 'messages');
    const msg = m as Body;
    if (typeof msg['role'] !== 'string' || !ROLES.has(msg['role'])) throw badRequest(`'${where}.role' must be one of system, developer, user, assistant, tool`, 'messages');
    const out: ChatMessage = { role: msg['role'] === 'developer' ? 'system' : msg['role'], content: textContent(msg['content'], where) };
    if (out.content === null && out.role !== 'assistant') throw badRequest(`'${where}.content' is required for role '${msg['role']}'`, 'messages');
    if (present(msg, 'name')) {
      if (typeof msg['name'] !== 'string') throw badRequest(`'${where}.name' must be a string`, 'messages');
      out.name = msg['name'];
    }
    if (present(msg, 'tool_call_id')) {
      if (typeof msg['tool_call_id'] !== 'string') throw badRequest(`'${where}.tool_call_id' must be a string`, 'messages');
      out.tool_call_id = msg['tool_call_id'];
    }
    if (present(msg, 'tool_calls')) {
      const calls = msg['tool_calls'];
      if (out.role !== 'assistant' || !Array.isArray(calls)) throw badRequest(`'${where}.tool_calls' must be a list, on an assistant message`, 'messages');
      out.tool_calls = calls.map((c: unknown, j) => {
        const call = c as Body;
        const fn = call?.['function'] as Body | undefined;
        if (typeof call !== 'object' || call === null || typeof call['id'] !== 'string' || typeof fn !== 'object' || fn === null || typeof fn['name'] !== 'string' || typeof fn['arguments'] !== 'string')
          throw badRequest(`'${where}.tool_calls[${j}]' must be { id, type: 'function', function: { name, arguments } } with string fields`, 'messages');
        return { id: call['id'], type: 'function' as const, function: { name: fn['name'], arguments: fn['arguments'] } };
      });
    }
    return out;
  });
}

function parseTools(value: unknown): ChatTool[] {
  if (!Array.isArray(value)) throw badRequest("'tools' must be a list", 'tools');
  return value.map((t: unknown, i) => {
    const tool = t as Body;
    const fn = tool?.['function'] as Body | undefined;
    if (typeof tool !== 'object' || tool === null || tool['type'] !== 'function' || typeof fn !== 'object' || fn === null || typeof fn['name'] !== 'string')
      throw badRequest(`'tools[${i}]' must be { type: 'function', function: { name, description?, parameters? } }`, 'tools');
    if (fn['description'] !== undefined && typeof fn['description'] !== 'string') throw badRequest(`'tools[${i}].function.description' must be a string`, 'tools');
    if (fn['parameters'] !== undefined && (typeof fn['parameters'] !== 'object' || fn['parameters'] === null || Array.isArray(fn['parameters'])))
      throw badRequest(`'tools[${i}].function.parameters' must be a JSON Schema object`, 'tools');
    return {
      type: 'function',
      function: {
        name: fn['name'],
        ...(fn['description'] !== undefined ? { description: fn['description'] as string } : {}),
        ...(fn['parameters'] !== undefined ? { parameters: fn['parameters'] as Record<string, unknown> } : {}),
      },
    };
  });
}

export function parseChatRequest(raw: unknown): ParsedChat {
  const { body, common } = parseCommon(raw, CHAT_FIELDS);
  for (const key of ['functions', 'function_call'])
    if (present(body, key)) throw badRequest(`'${key}' is deprecated by OpenAI and not supported: use 'tools'`, key);
  const messages = parseMessages(body['messages']);
  const maxCompletion = integer(body, 'max_completion_tokens', 1, Number.MAX_SAFE_INTEGER);
  if (maxCompletion !== undefined) common.maxTokens = common.maxTokens === null ? maxCompletion : Math.min(common.maxTokens, maxCompletion);
  const logprobs = boolean(body, 'logprobs') ?? false;
  const top = integer(body, 'top_logprobs', 0, 20);
  if (top !== undefined && !logprobs) throw badRequest("'top_logprobs' needs 'logprobs': true", 'top_logprobs');
  if (logprobs) common.logprobs = top ?? 0;
  if (present(body, 'response_format')) {
    const rf = body['response_format'] as Body;
    if (typeof rf !== 'object' || rf === null || Array.isArray(rf) || typeof rf['type'] !== 'string') throw badRequest("'response_format' must be { type: 'text' | 'json_object' | 'json_schema' }", 'response_format');
    if (rf['type'] !== 'text' && (common.options.grammar !== undefined || common.options.regex !== undefined)) throw badRequest("'response_format' cannot be combined with 'grammar' or 'regex'", 'response_format');
    if (rf['type'] === 'json_object') common.options.json = true;
    else if (rf['type'] === 'json_schema') {
      const js = rf['json_schema'] as Body | undefined;
      if (typeof js !== 'object' || js === null || Array.isArray(js)) throw badRequest("'response_format.json_schema' must be { name, schema }", 'response_format');
      const schema = js['schema'] ?? {};
      if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw badRequest("'response_format.json_schema.schema' must be a JSON Schema object", 'response_format');
      common.options.jsonSchema = schema as Record<string, unknown>;
    } else if (rf['type'] !== 'text') throw badRequest(`'response_format.type' must be 'text', 'json_object' or 'json_schema' (got '${rf['type']}')`, 'response_format');
  }
  const parsed: ParsedChat = { ...common, messages };
  if (present(body, 'tools')) {
    const tools = parseTools(body['tools']);
    if (tools.length > 0) parsed.tools = tools;
  }
  if (present(body, 'tool_choice')) {
    const choice = body['tool_choice'] as Body | string;
    if (choice === 'auto' || choice === 'none' || choice === 'required') parsed.toolChoice = choice;
    else {
      const fn = typeof choice === 'object' && choice !== null ? (choice['function'] as Body | undefined) : undefined;
      if (typeof choice !== 'object' || choice === null || choice['type'] !== 'function' || typeof fn?.['name'] !== 'string')
        throw badRequest("'tool_choice' must be 'auto', 'none', 'required' or { type: 'function', function: { name } }", 'tool_choice');
      parsed.toolChoice = { name: fn['name'] };
    }
  }
  return parsed;
}

export function parseCompletionRequest(raw: unknown, vocabSize: number): ParsedCompletion {
  const { body, common } = parseCommon(raw, COMPLETION_FIELDS);
  if (present(body, 'suffix')) throw badRequest("'suffix' (fill-in-the-middle) is not supported", 'suffix', 'unsupported_value');
  const bestOf = integer(body, 'best_of', 1, MAX_CHOICES);
  if (bestOf !== undefined && bestOf !== common.n) throw badRequest("'best_of' other than 'n' is not supported", 'best_of', 'unsupported_value');
  const logprobs = integer(body, 'logprobs', 0, 20);
  if (logprobs !== undefined) common.logprobs = logprobs;
  const echo = boolean(body, 'echo') ?? false;
  const p = body['prompt'];
  const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((t) => Number.isInteger(t) && t >= 0 && t < vocabSize);
  let prompts: (string | number[])[];
  if (typeof p === 'string') prompts = [p];
  else if (isIds(p)) prompts = [p];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string' || isIds(x))) prompts = p as (string | number[])[];
  else throw badRequest(`'prompt' must be a string, a list of strings, a list of token ids in [0, ${vocabSize}), or a list of such lists`, 'prompt');
  if (prompts.some((x) => x.length === 0)) throw badRequest("'prompt' must not be empty", 'prompt');
  return { ...common, prompts, echo };
}
