// Chat templates (Jinja, from tokenizer_config.json) rendered with @huggingface/jinja and
// tokenized so that only the template's own markers become control tokens: every string
// that comes from the caller (message contents, names, tool definitions and arguments) is
// tokenized as plain text, so a user who types `[/INST]` or `</s>` cannot forge a turn.
import { RENDER_MS, RENDER_MS_PER_ITEM, renderTemplate } from './template-render.js';
import type { TextPiece, Tokenizer } from './tokenizer.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {});
  content: string | null;
  /** Assistant tool calls, as in the OpenAI chat format. */
  tool_calls?: { id: string; type?: 'function'; function: { name: string; arguments: string | Record<string, unknown> } }[] | null;
  tool_call_id?: string;
  name?: string;
}

export interface ChatTool {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

export interface ChatTemplateOptions {
  tools?: ChatTool[];
  /** End with the opening of an assistant turn (templates that have one); default true. */
  addGenerationPrompt?: boolean;
}

// Private-use characters mark where caller text stood in the rendered template. Caller
// text holding them is escaped the same way, so no input can fake a marker.
const OPEN = '\uE000';
const CLOSE = '\uE001';

/** Renders a conversation with the tokenizer's chat template and tokenizes it. */
export function tokenizeChat(tokenizer: Tokenizer, messages: ChatMessage[], options: ChatTemplateOptions = {}, template = tokenizer.chatTemplate): number[] {
  if (!template) throw new Error('this model has no chat template (tokenizer_config.json chat_template)');
  if (!Array.isArray(messages) || messages.length === 0) throw new TypeError('chat: messages must be a non-empty array');
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null || typeof m.role !== 'string') throw new TypeError(`chat: messages[${i}] needs a string role`);
    if (m.content !== null && m.content !== undefined && typeof m.content !== 'string') throw new TypeError(`chat: messages[${i}].content must be a string or null`);
  });

  // In caller strings (object keys included: JSON keys of tool parameters and call
  // arguments are printed too), replace every added-token text (and any marker character)
  // by a marker around an index into `originals`; everything else passes through unchanged,
  // so the template's trim, length and JSON filters see the caller's text.
  const originals: string[] = [];
  const sensitive = tokenizer.addedTokenPattern(`${OPEN}|${CLOSE}`);
  const protectText = (text: string): string =>
    text.replace(sensitive, (special) => {
      originals.push(special);
      return `${OPEN}${originals.length - 1}${CLOSE}`;
    });
  const protect = (value: unknown): unknown => {
    if (typeof value === 'string') return protectText(value);
    if (Array.isArray(value)) return value.map(protect);
    if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [protectText(k), protect(v)]));
    return value;
  };
  const context: Record<string, unknown> = {
    messages: messages.map((m) => protect(normalizeToolCalls(m))),
    bos_token: tokenizer.bosToken ?? '',
    eos_token: tokenizer.eosToken ?? '',
    add_generation_prompt: options.addGenerationPrompt ?? true,
  };
  if (options.tools) context['tools'] = protect(options.tools);

  // The template is untrusted: its render has a budget (see template-render.ts) that grows
  // with the conversation.
  const ms = RENDER_MS + RENDER_MS_PER_ITEM * (messages.length + (options.tools?.length ?? 0));
  let rendered: string;
  try {
    rendered = renderTemplate(template, context, ms);
  } catch (e) {
    throw new ChatTemplateError(`chat template: ${(e as Error).message}`, e);
  }

  // Back to pieces: template text (markers parsed) and caller text (plain).
  const pieces: TextPiece[] = [];
  const marker = new RegExp(`${OPEN}(\\d+)${CLOSE}`, 'g');
  let last = 0;
  for (const m of rendered.matchAll(marker)) {
    pieces.push({ text: rendered.slice(last, m.index), plain: false });
    pieces.push({ text: originals[Number(m[1])]!, plain: true });
    last = m.index + m[0].length;
  }
  pieces.push({ text: rendered.slice(last), plain: false });
  if (pieces.some((p) => !p.plain && (p.text.includes(OPEN) || p.text.includes(CLOSE))))
    throw new ChatTemplateError('chat template changed caller text in a way laminate cannot track (e.g. slicing or case changes of message contents)');
  return tokenizer.encodePieces(pieces);
}

// OpenAI-style tool calls carry their arguments as a JSON string; templates such as
// Mistral's write them with |tojson and expect the object, name first.
function normalizeToolCalls(message: ChatMessage): ChatMessage {
  if (!Array.isArray(message.tool_calls)) return message;
  return {
    ...message,
    tool_calls: message.tool_calls.map((call) => {
      const { name, arguments: args, ...rest } = call.function;
      let parsed: unknown = args;
      if (typeof args === 'string') {
        try {
          parsed = JSON.parse(args);
        } catch {
          parsed = args;
        }
      }
      return { ...call, function: { name, arguments: parsed as Record<string, unknown>, ...rest } };
    }),
  };
}

export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
  constructor(message: string, cause?: unknown) {
    super(message, cause !== undefined ? { cause } : undefined);
  }
}
