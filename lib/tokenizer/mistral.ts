// Mistral's own chat encoding (the "v3" instruct tokenizer of mistral-common, used by
// Mistral-7B-Instruct-v0.3) with tool definitions, tool calls and tool results, and a parser
// for the tool calls the model writes.
//
// mistral-common does not render a template and tokenize the result: it validates the
// request, normalizes it (merges runs of messages of one role, gathers the system messages
// into one prompt) and then tokenizes every piece of text on its own with SentencePiece,
// placing control tokens between the pieces by id. That is what is done here, so no caller
// string (message text, tool names, descriptions, JSON keys and values) can ever become a
// control token: all text goes through the tokenizer as plain text.
//
// Tool definitions, tool calls and tool results are written as JSON the way Python's
// `json.dumps(..., ensure_ascii=False)` writes it (", " and ": " separators, non-ASCII kept,
// Python float formatting), after parsing JSON strings the way Python's `json.loads` does
// (key order kept, NaN/Infinity accepted, integers kept digit for digit).
import { randomInt } from 'node:crypto';

import { ChatTemplateError, type ChatMessage, type ChatTool } from './chat-template.js';
import type { Tokenizer } from './tokenizer.js';

export interface MistralV3Options {
  /** Tools the model may call, announced before the last user message. */
  tools?: ChatTool[];
  /**
   * true (default): the conversation must end with a user or tool message (or a system
   * message) and the ids end ready for the assistant's reply, as mistral-common encodes a
   * request. false: the conversation may also end with an assistant message, which is then
   * encoded complete with its `</s>` (a transcript, as mistral-common's fine-tuning mode
   * encodes it). A conversation ending in a user or tool message encodes the same either
   * way: Mistral's format has no separate opening of the assistant turn.
   */
  addGenerationPrompt?: boolean;
}

export interface ParsedToolCall {
  /** The id the model wrote, or a fresh one (9 characters of [a-zA-Z0-9]). */
  id: string;
  name: string;
  /** The arguments object as a JSON string (OpenAI style). */
  arguments: string;
}

export interface ParseToolCallsResult {
  calls: ParsedToolCall[];
  /** Set when the text is not a valid list of tool calls; `calls` is then empty. */
  error?: string;
}

/** The control tokens of the v3 vocabulary, by name. */
export const MISTRAL_V3_CONTROL_TOKENS = ['[INST]', '[/INST]', '[AVAILABLE_TOOLS]', '[/AVAILABLE_TOOLS]', '[TOOL_CALLS]', '[TOOL_RESULTS]', '[/TOOL_RESULTS]'] as const;

const TOOL_CALL_ID = /^[a-zA-Z0-9]{9}$/;
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

/** A fresh tool call id: 9 random characters of [a-zA-Z0-9], as Mistral's v3 format wants. */
export function newToolCallId(): string {
  let id = '';
  for (let i = 0; i < 9; i++) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return id;
}

// ---------------------------------------------------------------------------------------
// JSON as Python's json module reads and writes it.

type PyJson =
  | { kind: 'null' }
  | { kind: 'bool'; value: boolean }
  | { kind: 'int'; digits: string }
  | { kind: 'float'; value: number }
  | { kind: 'str'; value: string }
  | { kind: 'list'; items: PyJson[] }
  | { kind: 'dict'; entries: Map<string, PyJson> };

class JsonSyntaxError extends Error {}
class JsonDepthError extends Error {}

// Python's json module gives up (RecursionError) at about this depth.
const MAX_JSON_DEPTH = 900;
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;

/** `json.loads`: strict JSON plus NaN, Infinity and -Infinity; a repeated key keeps its
 * first position and its last value; integers keep their digits. */
function pyLoads(text: string): PyJson {
  let pos = 0;
  const fail = (what: string): never => {
    throw new JsonSyntaxError(`${what} at character ${pos}`);
  };
  const skipWs = () => {
    while (pos < text.length) {
      const c = text.charCodeAt(pos);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      pos++;
    }
  };
  const parseString = (): string => {
    pos++; // opening quote
    let out = '';
    let start = pos;
    for (;;) {
      if (pos >= text.length) fail('unterminated string');
      const c = text.charCodeAt(pos);
      if (c === 0x22) {
        out += text.slice(start, pos);
        pos++;
        return out;
      }
      if (c < 0x20) fail('invalid control character in string');
      if (c !== 0x5c) {
        pos++;
        continue;
      }
      out += text.slice(start, pos);
      const e = text[pos + 1];
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e !== undefined && e in simple) {
        out += simple[e];
        pos += 2;
      } else if (e === 'u') {
        const hex = text.slice(pos + 2, pos + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('invalid \\u escape');
        out += String.fromCharCode(parseInt(hex, 16));
        pos += 6;
      } else fail('invalid escape');
      start = pos;
    }
  };
  const parseValue = (depth: number): PyJson => {
    if (depth > MAX_JSON_DEPTH) throw new JsonDepthError('JSON nested too deeply');
    const c = text[pos];
    if (c === '"') return { kind: 'str', value: parseString() };
    if (c === '{') {
      pos++;
      const entries = new Map<string, PyJson>();
      skipWs();
      if (text[pos] === '}') {
        pos++;
        return { kind: 'dict', entries };
      }
      for (;;) {
        if (text[pos] !== '"') fail('expecting property name enclosed in double quotes');
        const key = parseString();
        skipWs();
        if (text[pos] !== ':') fail("expecting ':' delimiter");
        pos++;
        skipWs();
        entries.set(key, parseValue(depth + 1));
        skipWs();
        if (text[pos] === '}') {
          pos++;
          return { kind: 'dict', entries };
        }
        if (text[pos] !== ',') fail("expecting ',' delimiter");
        pos++;
        skipWs();
      }
    }
    if (c === '[') {
      pos++;
      const items: PyJson[] = [];
      skipWs();
      if (text[pos] === ']') {
        pos++;
        return { kind: 'list', items };
      }
      for (;;) {
        items.push(parseValue(depth + 1));
        skipWs();
        if (text[pos] === ']') {
          pos++;
          return { kind: 'list', items };
        }
        if (text[pos] !== ',') fail("expecting ',' delimiter");
        pos++;
        skipWs();
      }
    }
    for (const [word, value] of [
      ['null', { kind: 'null' }],
      ['true', { kind: 'bool', value: true }],
      ['false', { kind: 'bool', value: false }],
      ['NaN', { kind: 'float', value: NaN }],
      ['Infinity', { kind: 'float', value: Infinity }],
      ['-Infinity', { kind: 'float', value: -Infinity }],
    ] as const) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return value;
      }
    }
    NUMBER.lastIndex = pos;
    const m = NUMBER.exec(text);
    if (!m) return fail('expecting value');
    pos += m[0].length;
    if (m[1] !== undefined || m[2] !== undefined) return { kind: 'float', value: Number(m[0]) };
    return { kind: 'int', digits: m[0] === '-0' ? '0' : m[0] };
  };
  skipWs();
  const value = parseValue(0);
  skipWs();
  if (pos !== text.length) fail('extra data');
  return value;
}

/** Python's `repr(float)`: the shortest digits that read back, in fixed notation for
 * decimal exponents -4..15 and exponent notation (at least two exponent digits) beyond. */
function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mantissa, expText] = Math.abs(x).toExponential().split('e') as [string, string];
  const digits = mantissa.replace('.', '');
  const exp = Number(expText);
  const point = exp + 1; // digits before the decimal point
  if (point > 16 || point < -3) {
    const mant = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${mant}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`;
  if (point >= digits.length) return `${sign}${digits}${'0'.repeat(point - digits.length)}.0`;
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

/** A JSON string as Python writes it with ensure_ascii=False. */
function pyString(s: string): string {
  return `"${s.replace(/[\u0000-\u001f"\\]/g, (c) => {
    switch (c) {
      case '"':
        return '\\"';
      case '\\':
        return '\\\\';
      case '\n':
        return '\\n';
      case '\r':
        return '\\r';
      case '\t':
        return '\\t';
      case '\b':
        return '\\b';
      case '\f':
        return '\\f';
      default:
        return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
    }
  })}"`;
}

/** `json.dumps(value, ensure_ascii=False)`. */
function pyDumps(v: PyJson): string {
  switch (v.kind) {
    case 'null':
      return 'null';
    case 'bool':
      return v.value ? 'true' : 'false';
    case 'int':
      return v.digits;
    case 'float':
      return pyFloatRepr(v.value);
    case 'str':
      return pyString(v.value);
    case 'list':
      return `[${v.items.map(pyDumps).join(', ')}]`;
    case 'dict':
      return `{${[...v.entries].map(([k, x]) => `${pyString(k)}: ${pyDumps(x)}`).join(', ')}}`;
  }
}

/** A JavaScript value (what JSON.parse gives) as the Python value a JSON request holds.
 * Integral numbers that are safe integers count as ints, other numbers as floats. */
function fromJs(value: unknown, where: string, seen: object[] = []): PyJson {
  if (value === null) return { kind: 'null' };
  switch (typeof value) {
    case 'boolean':
      return { kind: 'bool', value };
    case 'number':
      return Number.isSafeInteger(value) ? { kind: 'int', digits: String(value) } : { kind: 'float', value };
    case 'bigint':
      return { kind: 'int', digits: value.toString() };
    case 'string':
      return { kind: 'str', value };
    case 'object': {
      if (seen.includes(value)) throw new ChatTemplateError(`${where} contains a cycle`);
      const inner = [...seen, value];
      const withJson = value as { toJSON?: unknown };
      if (typeof withJson.toJSON === 'function') return fromJs((withJson.toJSON as () => unknown).call(value), where, inner);
      if (Array.isArray(value)) return { kind: 'list', items: Array.from(value, (x) => (x === undefined ? { kind: 'null' as const } : fromJs(x, where, inner))) };
      const entries = new Map<string, PyJson>();
      for (const [k, x] of Object.entries(value)) if (x !== undefined && typeof x !== 'function' && typeof x !== 'symbol') entries.set(k, fromJs(x, where, inner));
      return { kind: 'dict', entries };
    }
    default:
      throw new ChatTemplateError(`${where} holds a value that is not JSON (${typeof value})`);
  }
}

/** What mistral-common makes of a JSON-or-not string (tool results, call arguments): the
 * parsed value when it is JSON, else the string itself; an empty string is `{}`. */
function jsonOrString(text: string, where: string): PyJson {
  if (text === '') return { kind: 'dict', entries: new Map() };
  try {
    return pyLoads(text);
  } catch (e) {
    if (e instanceof JsonDepthError) throw new ChatTemplateError(`${where}: JSON nested too deeply`);
    return { kind: 'str', value: text };
  }
}

// ---------------------------------------------------------------------------------------
// Tool schemas: the checks of the JSON Schema draft 7 meta-schema that mistral-common runs
// (Draft7Validator.check_schema) on each tool's parameters, for the standard keywords.

const SIMPLE_TYPES = new Set(['array', 'boolean', 'integer', 'null', 'number', 'object', 'string']);

function checkSchema(schema: unknown, path: string): string | null {
  if (typeof schema === 'boolean') return null;
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) return `${path} must be an object or a boolean`;
  const s = schema as Record<string, unknown>;
  const isObj = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  const nonNegInt = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0;
  const uniqueStrings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string') && new Set(v).size === v.length;
  const sub = (v: unknown, p: string) => checkSchema(v, p);
  const subArray = (v: unknown, p: string): string | null => {
    if (!Array.isArray(v) || v.length === 0) return `${p} must be a non-empty array of schemas`;
    for (let i = 0; i < v.length; i++) {
      const err = sub(v[i], `${p}[${i}]`);
      if (err) return err;
    }
    return null;
  };
  const subMap = (v: unknown, p: string): string | null => {
    if (!isObj(v)) return `${p} must be an object`;
    for (const [k, x] of Object.entries(v as object)) {
      const err = sub(x, `${p}.${k}`);
      if (err) return err;
    }
    return null;
  };
  for (const [key, v] of Object.entries(s)) {
    const p = `${path}.${key}`;
    let err: string | null = null;
    switch (key) {
      case '$id':
      case '$schema':
      case '$ref':
      case '$comment':
      case 'title':
      case 'description':
      case 'pattern':
      case 'format':
      case 'contentMediaType':
      case 'contentEncoding':
        if (typeof v !== 'string') err = `${p} must be a string`;
        break;
      case 'readOnly':
      case 'uniqueItems':
        if (typeof v !== 'boolean') err = `${p} must be a boolean`;
        break;
      case 'examples':
      case 'enum':
        if (!Array.isArray(v)) err = `${p} must be an array`;
        break;
      case 'multipleOf':
        if (typeof v !== 'number' || !(v > 0)) err = `${p} must be a number above 0`;
        break;
      case 'maximum':
      case 'exclusiveMaximum':
      case 'minimum':
      case 'exclusiveMinimum':
        if (typeof v !== 'number') err = `${p} must be a number`;
        break;
      case 'maxLength':
      case 'minLength':
      case 'maxItems':
      case 'minItems':
      case 'maxProperties':
      case 'minProperties':
        if (!nonNegInt(v)) err = `${p} must be a non-negative integer`;
        break;
      case 'required':
        if (!uniqueStrings(v)) err = `${p} must be an array of distinct strings`;
        break;
      case 'type':
        if (typeof v === 'string') {
          if (!SIMPLE_TYPES.has(v)) err = `${p} '${v}' is not a JSON Schema type`;
        } else if (!(Array.isArray(v) && v.length > 0 && uniqueStrings(v) && v.every((t) => SIMPLE_TYPES.has(t as string)))) err = `${p} must be a type name or a non-empty array of distinct type names`;
        break;
      case 'items':
        err = Array.isArray(v) ? subArray(v, p) : sub(v, p);
        break;
      case 'additionalItems':
      case 'contains':
      case 'additionalProperties':
      case 'propertyNames':
      case 'if':
      case 'then':
      case 'else':
      case 'not':
        err = sub(v, p);
        break;
      case 'definitions':
      case 'properties':
      case 'patternProperties':
        err = subMap(v, p);
        break;
      case 'dependencies':
        if (!isObj(v)) err = `${p} must be an object`;
        else
          for (const [k, x] of Object.entries(v as object)) {
            err = Array.isArray(x) ? (uniqueStrings(x) ? null : `${p}.${k} must be an array of distinct strings`) : sub(x, `${p}.${k}`);
            if (err) break;
          }
        break;
      case 'allOf':
      case 'anyOf':
      case 'oneOf':
        err = subArray(v, p);
        break;
      default:
        break; // other keywords: anything goes
    }
    if (err) return err;
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// The request, checked and normalized as mistral-common does for a v3 tokenizer.

interface Call {
  /** 'null' when the caller gave none (mistral-common's default): left out of the JSON. */
  id: string;
  name: string;
  arguments: PyJson;
}

type Msg =
  | { role: 'system'; content: string; index: number }
  | { role: 'user'; content: string; index: number }
  | { role: 'assistant'; content: string; calls: Call[] | null; index: number }
  | { role: 'tool'; content: string; callId: string; name: string | null; index: number };

type Normalized =
  | { role: 'user'; content: string }
  | { role: 'assistant'; content: string; calls: Call[]; firstIndex: number }
  | { role: 'tool'; content: PyJson; callId: string; index: number };

const ROLES = new Set(['system', 'user', 'assistant', 'tool']);

function describe(i: number, role: string): string {
  return `messages[${i}] (${role})`;
}

/** The shapes of the messages (what mistral-common's request types accept). */
function readMessages(messages: ChatMessage[]): Msg[] {
  if (!Array.isArray(messages)) throw new ChatTemplateError('chat: messages must be an array');
  return messages.map((m, i): Msg => {
    if (typeof m !== 'object' || m === null) throw new ChatTemplateError(`messages[${i}] must be an object`);
    const role = m.role;
    if (typeof role !== 'string' || !ROLES.has(role)) throw new ChatTemplateError(`messages[${i}]: role must be 'system', 'user', 'assistant' or 'tool' (got ${JSON.stringify(role)})`);
    const at = describe(i, role);
    const content: unknown = m.content;
    if (role === 'assistant') {
      if (content !== null && content !== undefined && typeof content !== 'string') throw new ChatTemplateError(`${at}: content must be a string or null`);
      const rawCalls: unknown = m.tool_calls;
      let calls: Call[] | null = null;
      if (rawCalls !== null && rawCalls !== undefined) {
        if (!Array.isArray(rawCalls)) throw new ChatTemplateError(`${at}: tool_calls must be an array`);
        calls = rawCalls.map((c: unknown, j): Call => {
          const cw = `${at} tool_calls[${j}]`;
          if (typeof c !== 'object' || c === null) throw new ChatTemplateError(`${cw} must be an object`);
          const call = c as { id?: unknown; type?: unknown; function?: unknown };
          if (call.type !== undefined && call.type !== 'function') throw new ChatTemplateError(`${cw}: type must be 'function'`);
          if (call.id !== undefined && call.id !== null && typeof call.id !== 'string') throw new ChatTemplateError(`${cw}: id must be a string`);
          const fn = call.function as { name?: unknown; arguments?: unknown } | undefined;
          if (typeof fn !== 'object' || fn === null) throw new ChatTemplateError(`${cw}: function must be an object with name and arguments`);
          if (typeof fn.name !== 'string') throw new ChatTemplateError(`${cw}: function.name must be a string`);
          const args = fn.arguments;
          let parsed: PyJson;
          if (args === undefined || args === null) parsed = { kind: 'dict', entries: new Map() };
          else if (typeof args === 'string') parsed = jsonOrString(args, `${cw} arguments`);
          else if (typeof args === 'object' && !Array.isArray(args)) parsed = fromJs(args, `${cw} arguments`);
          else throw new ChatTemplateError(`${cw}: function.arguments must be a JSON string or an object`);
          return { id: typeof call.id === 'string' ? call.id : 'null', name: fn.name, arguments: parsed };
        });
      }
      return { role: 'assistant', content: content ?? '', calls, index: i };
    }
    if (typeof content !== 'string') {
      if (role === 'system' && (content === null || content === undefined)) throw new ChatTemplateError(`${at}: a system prompt must have content`);
      throw new ChatTemplateError(`${at}: content must be a string`);
    }
    if (role === 'tool') {
      const callId: unknown = m.tool_call_id;
      if (callId === undefined || callId === null) throw new ChatTemplateError(`${at}: tool_call_id has to be defined (the id of the call this answers)`);
      if (typeof callId !== 'string') throw new ChatTemplateError(`${at}: tool_call_id must be a string`);
      const name: unknown = m.name;
      if (name !== undefined && name !== null && typeof name !== 'string') throw new ChatTemplateError(`${at}: name must be a string`);
      return { role: 'tool', content, callId, name: typeof name === 'string' ? name : null, index: i };
    }
    return { role: role as 'system' | 'user', content, index: i };
  });
}

// Which role may follow which (mistral-common's message order check).
const NEXT: Record<Msg['role'], Set<Msg['role']>> = {
  system: new Set(['user', 'assistant', 'system']),
  user: new Set(['assistant', 'system', 'user']),
  assistant: new Set(['assistant', 'user', 'tool']),
  tool: new Set(['assistant', 'tool', 'user']),
};

function validate(msgs: Msg[], allowFinalAssistant: boolean): void {
  if (msgs.length === 0) throw new ChatTemplateError('chat: a conversation must have at least one message');
  if (msgs.length === 1 && msgs[0]!.role !== 'user' && msgs[0]!.role !== 'system')
    throw new ChatTemplateError(`${describe(0, msgs[0]!.role)}: a conversation must start with a user message or a system message`);
  const last = msgs[msgs.length - 1]!;
  if (msgs.length > 1 && last.role === 'assistant' && !allowFinalAssistant)
    throw new ChatTemplateError(`${describe(last.index, 'assistant')}: the last message must be a user or tool message (the model writes the assistant's reply)`);

  for (let i = 1; i < msgs.length; i++) {
    const prev = msgs[i - 1]!.role;
    const cur = msgs[i]!.role;
    if (!NEXT[prev].has(cur))
      throw new ChatTemplateError(
        `${describe(i, cur)}: a ${cur} message cannot follow a ${prev} message${cur === 'tool' ? ' (tool results must follow the assistant message with the tool calls)' : ''}`,
      );
  }

  // Every assistant message with tool calls must be answered by as many tool messages
  // before the next assistant message (the first message of the list is not counted).
  let expected = 0;
  let caller = -1;
  for (let i = 1; i < msgs.length; i++) {
    const m = msgs[i]!;
    if (m.role === 'tool') expected--;
    else if (m.role === 'assistant') {
      if (expected !== 0)
        throw new ChatTemplateError(
          expected > 0
            ? `${describe(i, 'assistant')}: messages[${caller}] made tool calls that have no tool result (${expected} missing) before this assistant message`
            : `${describe(i, 'assistant')}: there are ${-expected} more tool results than tool calls before this assistant message`,
        );
      if (m.calls !== null) {
        expected = m.calls.length;
        caller = i;
      }
    }
  }

  for (const m of msgs) {
    const at = describe(m.index, m.role);
    if (m.role === 'assistant') {
      const hasCalls = m.calls !== null && m.calls.length > 0;
      if (Boolean(m.content) === hasCalls)
        throw new ChatTemplateError(`${at}: an assistant message must have either content or tool_calls, ${hasCalls ? 'not both' : 'and has neither'}`);
      (m.calls ?? []).forEach((c, j) => {
        if (c.id !== 'null' && !TOOL_CALL_ID.test(c.id))
          throw new ChatTemplateError(`${at} tool_calls[${j}]: id ${JSON.stringify(c.id)} must be 9 characters of a-z, A-Z, 0-9`);
        if (!FUNCTION_NAME.test(c.name))
          throw new ChatTemplateError(`${at} tool_calls[${j}]: function name ${JSON.stringify(c.name)} must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -`);
      });
    } else if (m.role === 'tool') {
      if (m.name !== null && !FUNCTION_NAME.test(m.name)) throw new ChatTemplateError(`${at}: name ${JSON.stringify(m.name)} must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -`);
      if (!TOOL_CALL_ID.test(m.callId)) throw new ChatTemplateError(`${at}: tool_call_id ${JSON.stringify(m.callId)} must be 9 characters of a-z, A-Z, 0-9`);
    }
  }
}

function readTools(tools: ChatTool[] | undefined): PyJson | null {
  if (tools === undefined || tools === null) return null;
  if (!Array.isArray(tools)) throw new ChatTemplateError('chat: tools must be an array');
  if (tools.length === 0) return null;
  return {
    kind: 'list',
    items: tools.map((t, i): PyJson => {
      const at = `tools[${i}]`;
      if (typeof t !== 'object' || t === null) throw new ChatTemplateError(`${at} must be an object`);
      if ((t as { type?: unknown }).type !== undefined && t.type !== 'function') throw new ChatTemplateError(`${at}: type must be 'function'`);
      const fn = t.function as { name?: unknown; description?: unknown; parameters?: unknown } | undefined;
      if (typeof fn !== 'object' || fn === null) throw new ChatTemplateError(`${at}: function must be an object`);
      if (typeof fn.name !== 'string' || !FUNCTION_NAME.test(fn.name))
        throw new ChatTemplateError(`${at}: function name ${JSON.stringify(fn.name)} must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -`);
      if (fn.description !== undefined && fn.description !== null && typeof fn.description !== 'string') throw new ChatTemplateError(`${at}: function.description must be a string`);
      const parameters = fn.parameters ?? {};
      if (typeof parameters !== 'object' || Array.isArray(parameters)) throw new ChatTemplateError(`${at}: function.parameters must be a JSON Schema object`);
      const schemaError = checkSchema(parameters, 'parameters');
      if (schemaError) throw new ChatTemplateError(`${at} (${fn.name}): invalid tool schema: ${schemaError}`);
      // Exactly these fields, in this order (mistral-common's Tool with `strict` left out).
      return {
        kind: 'dict',
        entries: new Map<string, PyJson>([
          ['type', { kind: 'str', value: 'function' }],
          [
            'function',
            {
              kind: 'dict',
              entries: new Map<string, PyJson>([
                ['name', { kind: 'str', value: fn.name }],
                ['description', { kind: 'str', value: typeof fn.description === 'string' ? fn.description : '' }],
                ['parameters', fromJs(parameters, `${at} parameters`)],
              ]),
            },
          ],
        ]),
      };
    }),
  };
}

/** Runs of one role are merged (user and assistant texts joined with a blank line, tool
 * calls concatenated; tool messages stay apart); system messages leave the list and become
 * one system prompt; an empty user message is put first when the list does not start with
 * a user message. */
function normalize(msgs: Msg[]): { messages: Normalized[]; systemPrompt: string | null } {
  const join = (texts: string[]) => texts.filter((t) => t !== '').join('\n\n');
  const out: Normalized[] = [];
  for (let i = 0; i < msgs.length; ) {
    const role = msgs[i]!.role;
    let j = i;
    while (j < msgs.length && msgs[j]!.role === role) j++;
    const run = msgs.slice(i, j);
    if (role === 'user') out.push({ role, content: join(run.map((m) => m.content)) });
    else if (role === 'assistant') {
      const calls = run.flatMap((m) => (m.role === 'assistant' && m.calls ? m.calls : []));
      out.push({ role, content: join(run.map((m) => m.content)), calls, firstIndex: run[0]!.index });
    } else if (role === 'tool') {
      for (const m of run) if (m.role === 'tool') out.push({ role, content: jsonOrString(m.content, describe(m.index, 'tool')), callId: m.callId, index: m.index });
    }
    i = j;
  }
  if (out.length === 0 || out[0]!.role !== 'user') out.unshift({ role: 'user', content: '' });
  const system = msgs.filter((m) => m.role === 'system' && m.content !== '').map((m) => m.content);
  return { messages: out, systemPrompt: system.length ? system.join('\n\n') : null };
}

// ---------------------------------------------------------------------------------------
// Tokens.

function controlId(tokenizer: Tokenizer, name: string): number | null {
  const ids = tokenizer.encode(name, { specialTokens: 'parse', addSpecialTokens: false });
  return ids.length === 1 && tokenizer.isSpecial(ids[0]!) && tokenizer.tokenText(ids[0]!) === name ? ids[0]! : null;
}

/** Whether the vocabulary has Mistral's v3 control tokens ([INST], [/INST],
 * [AVAILABLE_TOOLS], [/AVAILABLE_TOOLS], [TOOL_CALLS], [TOOL_RESULTS], [/TOOL_RESULTS]) as
 * special tokens. */
/** Appends one by one: a spread of a long text's ids overflows the stack. */
function append(ids: number[], more: number[]): void {
  for (const id of more) ids.push(id);
}

export function isMistralV3Tokenizer(tokenizer: Tokenizer): boolean {
  return MISTRAL_V3_CONTROL_TOKENS.every((name) => controlId(tokenizer, name) !== null);
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Encodes a conversation exactly as mistral-common's v3 instruct tokenizer does
 * (Mistral-7B-Instruct-v0.3): `<s>`, then per message
 * - user: `[INST]` text `[/INST]`, with the system prompt ("\n\n"-joined system messages)
 *   put before the text of the last user message, and `[AVAILABLE_TOOLS]` JSON
 *   `[/AVAILABLE_TOOLS]` just before that message when there are tools;
 * - assistant: its text, or `[TOOL_CALLS]` and a JSON list of {name, arguments, id}; then `</s>`;
 * - tool: `[TOOL_RESULTS]` {"content": ..., "call_id": ...} `[/TOOL_RESULTS]`.
 * Each text is tokenized on its own as SentencePiece does (with a leading ▁) and always
 * as plain text. Conversations mistral-common rejects throw ChatTemplateError.
 */
export function encodeMistralV3(tokenizer: Tokenizer, messages: ChatMessage[], options: MistralV3Options = {}): number[] {
  const control = (name: string): number => {
    const id = controlId(tokenizer, name);
    if (id === null) throw new ChatTemplateError(`this tokenizer is not Mistral's v3 tokenizer: it has no ${name} control token`);
    return id;
  };
  const INST = control('[INST]');
  const END_INST = control('[/INST]');
  const TOOLS = control('[AVAILABLE_TOOLS]');
  const END_TOOLS = control('[/AVAILABLE_TOOLS]');
  const TOOL_CALLS = control('[TOOL_CALLS]');
  const RESULTS = control('[TOOL_RESULTS]');
  const END_RESULTS = control('[/TOOL_RESULTS]');
  const bos = tokenizer.bosTokenId;
  if (bos === null) throw new ChatTemplateError('this tokenizer has no BOS token');
  const eos = control(tokenizer.eosToken ?? '</s>');

  const msgs = readMessages(messages);
  validate(msgs, options.addGenerationPrompt === false);
  const tools = readTools(options.tools);
  const { messages: normalized, systemPrompt } = normalize(msgs);

  // SentencePiece with add_dummy_prefix: one ▁ before every non-empty text, nothing for ''.
  const text = (s: string, where: string): number[] => {
    if (s === '') return [];
    if (LONE_SURROGATE.test(s)) throw new ChatTemplateError(`${where}: text holds a lone UTF-16 surrogate, which cannot be encoded as UTF-8`);
    return tokenizer.encode(` ${s}`, { specialTokens: 'plain', addSpecialTokens: false });
  };

  let lastUser = -1;
  normalized.forEach((m, i) => {
    if (m.role === 'user') lastUser = i;
  });
  const ids = [bos];
  normalized.forEach((m, i) => {
    if (m.role === 'user') {
      let content = m.content;
      if (i === lastUser) {
        if (tools) {
          ids.push(TOOLS);
          append(ids, text(pyDumps(tools), 'tools'));
          ids.push(END_TOOLS);
        }
        if (systemPrompt) content = `${systemPrompt}\n\n${content}`;
      }
      ids.push(INST);
      append(ids, text(content, 'user message'));
      ids.push(END_INST);
    } else if (m.role === 'assistant') {
      const at = describe(m.firstIndex, 'assistant');
      if (m.calls.length > 0 && m.content)
        throw new ChatTemplateError(`${at}: consecutive assistant messages merge into one with both content and tool calls, which the v3 format cannot hold`);
      if (m.calls.length > 0) {
        const list: PyJson = {
          kind: 'list',
          items: m.calls.map((c): PyJson => {
            const entries = new Map<string, PyJson>([
              ['name', { kind: 'str', value: c.name }],
              ['arguments', c.arguments],
            ]);
            if (c.id && c.id !== 'null') entries.set('id', { kind: 'str', value: c.id });
            return { kind: 'dict', entries };
          }),
        };
        ids.push(TOOL_CALLS);
        append(ids, text(pyDumps(list), at));
      } else append(ids, text(m.content.replace(/ +$/, ''), at));
      ids.push(eos);
    } else {
      const result: PyJson = {
        kind: 'dict',
        entries: new Map<string, PyJson>([
          ['content', m.content],
          ['call_id', { kind: 'str', value: m.callId }],
        ]),
      };
      ids.push(RESULTS);
      append(ids, text(pyDumps(result), describe(m.index, 'tool')));
      ids.push(END_RESULTS);
    }
  });
  return ids;
}

// ---------------------------------------------------------------------------------------
// The model's tool calls.

/**
 * Reads the tool calls the model wrote after its [TOOL_CALLS] token: a JSON list of
 * {"name", "arguments"[, "id"]} objects (or one such object). Arguments come back as a
 * JSON string; a call without a valid id gets a fresh one. Malformed text gives `error`
 * (and no calls) rather than throwing.
 */
export function parseToolCalls(text: string): ParseToolCallsResult {
  const failed = (error: string): ParseToolCallsResult => ({ calls: [], error });
  if (typeof text !== 'string') return failed('tool calls: the text must be a string');
  let body = text.trim();
  if (body.startsWith('[TOOL_CALLS]')) body = body.slice('[TOOL_CALLS]'.length).trim();
  if (body === '') return failed('tool calls: the model wrote no tool calls (empty text)');
  let value: PyJson;
  try {
    value = pyLoads(body);
  } catch (e) {
    return failed(`tool calls: not valid JSON (${(e as Error).message}): ${preview(body)}`);
  }
  const list = value.kind === 'list' ? value.items : value.kind === 'dict' ? [value] : null;
  if (!list) return failed(`tool calls: expected a JSON list of {"name", "arguments"} objects, got ${value.kind === 'str' ? 'a string' : `a ${value.kind}`}`);
  if (list.length === 0) return failed('tool calls: the model wrote an empty list of tool calls');
  const calls: ParsedToolCall[] = [];
  for (const [i, item] of list.entries()) {
    const at = `tool call ${i}`;
    if (item.kind !== 'dict') return failed(`${at}: expected an object with "name" and "arguments"`);
    const name = item.entries.get('name');
    if (!name || name.kind !== 'str') return failed(`${at}: "name" must be a string`);
    if (!FUNCTION_NAME.test(name.value)) return failed(`${at}: function name ${JSON.stringify(name.value)} must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -`);
    let args = item.entries.get('arguments');
    if (args?.kind === 'str') {
      // Some outputs hold the arguments as a JSON string; accept it when it is an object.
      try {
        const inner = pyLoads(args.value);
        if (inner.kind === 'dict') args = inner;
      } catch {
        // reported below
      }
    }
    if (!args || args.kind !== 'dict') return failed(`${at} (${name.value}): "arguments" must be a JSON object`);
    const id = item.entries.get('id');
    calls.push({ id: id?.kind === 'str' && TOOL_CALL_ID.test(id.value) ? id.value : newToolCallId(), name: name.value, arguments: pyDumps(args) });
  }
  return { calls };
}

function preview(s: string): string {
  return s.length > 80 ? `${JSON.stringify(s.slice(0, 80))}...` : JSON.stringify(s);
}
