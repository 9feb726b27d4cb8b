// Tool calling in chats: how a conversation becomes a prompt (mistral-common's encoding for
// a Mistral v3 tokenizer, else the model's chat template), what `toolChoice` does to the
// generation, and the tool calls read from the reply as they complete.
import type { GenerateOptions } from './model.js';
import { constraintOf } from '../constrain/constraint.js';
import { Generation, type GenerationResult, type ToolCall } from '../generate/generation.js';
import { tokenizeChat, type ChatMessage, type ChatTool } from '../tokenizer/chat-template.js';
import { encodeMistralV3, isMistralV3Tokenizer, parseToolCalls } from '../tokenizer/mistral.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';

/**
 * 'auto' (default): the model decides; 'none': it may not call a tool; 'required': it must
 * call one or more; `{ name }`: it must call that tool once. 'required' and a named tool
 * need a Mistral v3 tokenizer (the calls are forced with a JSON Schema after [TOOL_CALLS]).
 */
export type ToolChoice = 'auto' | 'none' | 'required' | { name: string } | { type: 'function'; function: { name: string } };

export interface ChatPlan {
  prompt: Int32Array;
  options: GenerateOptions;
  /** off: plain text; detect: the reply may turn into tool calls at [TOOL_CALLS]; forced: the reply is tool calls. */
  calls: 'off' | 'detect' | 'forced';
  toolCallsToken: number;
}

/** The prompt of a conversation: mistral-common's encoding for a Mistral v3 tokenizer, the
 * chat template otherwise. */
export function renderChat(tokenizer: Tokenizer, messages: ChatMessage[], tools: ChatTool[] | undefined): number[] {
  const withTools = tools && tools.length > 0 ? { tools } : {};
  return isMistralV3Tokenizer(tokenizer) ? encodeMistralV3(tokenizer, messages, withTools) : tokenizeChat(tokenizer, messages, withTools);
}

function chosenName(choice: ToolChoice): string | null {
  if (typeof choice !== 'object' || choice === null) return null;
  const name = 'function' in choice ? choice.function?.name : (choice as { name?: unknown }).name;
  if (typeof name !== 'string') throw new TypeError("toolChoice must be 'auto', 'none', 'required' or { name }");
  return name;
}

export function planChat(tokenizer: Tokenizer, messages: ChatMessage[], options: GenerateOptions & { tools?: ChatTool[]; toolChoice?: ToolChoice }): ChatPlan {
  const { tools, toolChoice = 'auto', ...generate } = options;
  if (typeof toolChoice === 'string' && !['auto', 'none', 'required'].includes(toolChoice)) throw new TypeError(`toolChoice must be 'auto', 'none', 'required' or { name } (got '${toolChoice}')`);
  const named = chosenName(toolChoice);
  const hasTools = Array.isArray(tools) && tools.length > 0;
  const forcing = toolChoice === 'required' || named !== null;
  if (forcing && !hasTools) throw new TypeError(`toolChoice ${named ? `'${named}'` : "'required'"} needs tools`);
  const prompt = renderChat(tokenizer, messages, tools);
  const v3 = isMistralV3Tokenizer(tokenizer);
  const toolCallsToken = v3 ? tokenizer.encode('[TOOL_CALLS]', { specialTokens: 'parse', addSpecialTokens: false })[0]! : -1;
  if (!hasTools) return { prompt: Int32Array.from(prompt), options: generate, calls: 'off', toolCallsToken };
  if (!v3) {
    if (forcing) throw new TypeError("toolChoice 'required' or a named tool needs a Mistral v3 tokenizer (tool calls are read after its [TOOL_CALLS] token)");
    return { prompt: Int32Array.from(prompt), options: generate, calls: 'off', toolCallsToken };
  }
  if (toolChoice === 'none') return { prompt: Int32Array.from(prompt), options: { ...generate, logitBias: { ...generate.logitBias, [toolCallsToken]: -Infinity } }, calls: 'off', toolCallsToken };
  if (!forcing) return { prompt: Int32Array.from(prompt), options: generate, calls: 'detect', toolCallsToken };
  if (constraintOf(generate)) throw new TypeError('toolChoice that forces a call cannot be combined with jsonSchema, json, grammar or regex');
  const chosen = named === null ? tools : tools.filter((t) => t.function.name === named);
  if (chosen.length === 0) throw new TypeError(`toolChoice names '${named}', which is not among the tools`);
  const call = (t: ChatTool) => ({
    type: 'object',
    properties: { name: { const: t.function.name }, arguments: t.function.parameters ?? { type: 'object' } },
    required: ['name', 'arguments'],
    additionalProperties: false,
  });
  const jsonSchema = { type: 'array', items: chosen.length === 1 ? call(chosen[0]!) : { anyOf: chosen.map(call) }, minItems: 1, ...(named !== null ? { maxItems: 1 } : {}) };
  return { prompt: Int32Array.from([...prompt, toolCallsToken]), options: { ...generate, jsonSchema }, calls: 'forced', toolCallsToken };
}

/** The text of each complete call object so far in a list of calls (or one object). */
function completeObjects(text: string): string[] {
  const out: string[] = [];
  const start = text.trimStart();
  const base = start.startsWith('[') ? 1 : 0;
  let depth = 0, inString = false, escaped = false, from = -1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (escaped) escaped = false;
      else if (c === '\\') escaped = true;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '{' || c === '[') {
      if (c === '{' && depth === base) from = i;
      depth++;
    } else if (c === '}' || c === ']') {
      depth--;
      if (c === '}' && depth === base && from >= 0) {
        out.push(text.slice(from, i + 1));
        from = -1;
      }
    }
  }
  return out;
}

/** Follows a generation: after [TOOL_CALLS] its text is read as tool calls, each passed on
 * as a chunk once complete, and the result carries them (or why they could not be read). */
export function withToolCalls(inner: Generation, plan: ChatPlan): Generation {
  if (plan.calls === 'off') return inner;
  const outer = new Generation();
  outer.onCancel = () => inner._cancel();
  const sink = outer.sink;
  void (async () => {
    let calling = plan.calls === 'forced';
    let text = '';
    const streamed: ToolCall[] = [];
    for await (const chunk of inner) {
      if (!calling) {
        if (!chunk.tokens.includes(plan.toolCallsToken)) {
          sink.chunk(chunk);
          continue;
        }
        calling = true;
      }
      text += chunk.text;
      const calls: ToolCall[] = [];
      for (const object of completeObjects(text).slice(streamed.length)) {
        const parsed = parseToolCalls(`[${object}]`);
        if (parsed.error) break;
        calls.push(...parsed.calls);
      }
      streamed.push(...calls);
      sink.chunk({ text: '', tokens: chunk.tokens, ...(chunk.logprobs ? { logprobs: chunk.logprobs } : {}), ...(calls.length ? { toolCalls: calls } : {}) });
    }
    const result = await inner;
    if (!calling) return sink.finish(result);
    const parsed = parseToolCalls(text);
    if (parsed.error) return sink.finish({ ...result, text, toolCallError: parsed.error });
    // the ids streamed are the ids of the result
    const toolCalls = parsed.calls.map((c, i) => (streamed[i] && streamed[i]!.name === c.name ? { ...c, id: streamed[i]!.id } : c));
    sink.finish({ ...result, text: '', toolCalls, finishReason: result.finishReason === 'length' ? 'length' : 'tool_calls' } as GenerationResult);
  })().catch((e: unknown) => sink.fail(e as Error));
  return outer;
}
