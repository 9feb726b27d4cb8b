// A conversation that keeps its KV cache: each turn renders the whole conversation with
// the chat template, keeps the cached tokens it shares with what is cached, and prefills
// only the rest.
import type { Generation, GenerationResult } from '../generate/generation.js';
import { Generation as GenerationImpl } from '../generate/generation.js';
import type { ChatMessage, ChatTool } from '../tokenizer/chat-template.js';
import { planChat, withToolCalls } from './tools.js';
import type { ChatOptions, Model } from './model.js';

export interface ChatSessionOptions {
  /** A system message that opens the conversation. */
  system?: string;
  tools?: ChatTool[];
}

export class Chat {
  readonly #model: Model;
  readonly #tools: ChatTool[] | undefined;
  readonly messages: ChatMessage[] = [];
  #sequence: number;
  /** Tokens now in the KV cache for this conversation. */
  #cached: number[] = [];
  #busy = false;
  #turn: Generation | null = null;
  #disposed = false;

  /** @internal Use model.createChat(). */
  constructor(model: Model, options: ChatSessionOptions) {
    this.#model = model;
    this.#tools = options.tools;
    if (options.system !== undefined) this.messages.push({ role: 'system', content: options.system });
    this.#sequence = model._engine().createSequence();
  }

  /** Tokens of this conversation held in the KV cache. */
  get cachedTokens(): number {
    return this.#cached.length;
  }

  /** Adds a user message (or any messages) and generates the assistant's reply, which
   * joins the conversation when it completes. */
  send(message: string | ChatMessage | ChatMessage[], options: ChatOptions = {}): Generation {
    const generation = new GenerationImpl();
    let reply: Generation = generation;
    try {
      if (this.#disposed) throw new Error('the chat has been disposed');
      if (this.#busy) throw new Error('chat: a turn is still running');
      const added = typeof message === 'string' ? [{ role: 'user', content: message }] : Array.isArray(message) ? message : [message];
      const tools = options.tools ?? this.#tools;
      const { tools: _tools, ...rest } = options;
      const plan = planChat(this.#model.tokenizer!, [...this.messages, ...added], { ...rest, ...(tools ? { tools } : {}) });
      const tokens = Array.from(plan.prompt);
      // Keep the longest cached prefix; at least one token must be fed to get logits.
      let keep = 0;
      while (keep < this.#cached.length && keep < tokens.length - 1 && this.#cached[keep] === tokens[keep]) keep++;
      this.#model._engine().truncateSequence(this.#sequence, keep);
      this.#cached.length = keep;
      this.#busy = true;
      this.#model._submit(generation, Int32Array.from(tokens.slice(keep)), plan.options, {
        sequence: this.#sequence,
        keep,
        onEnd: (fed) => {
          this.#busy = false;
          this.#turn = null;
          // disposed during the turn: the sequence is freed now that nothing runs on it
          if (this.#disposed) this.#free();
          else for (const t of fed) this.#cached.push(t);
        },
      });
      reply = withToolCalls(generation, plan);
      this.#turn = reply;
      reply.then(
        (result: GenerationResult) =>
          this.messages.push(...added, result.toolCalls ? { role: 'assistant', content: null, tool_calls: result.toolCalls.map((c) => ({ id: c.id, type: 'function' as const, function: { name: c.name, arguments: c.arguments } })) } : { role: 'assistant', content: result.text }),
        () => undefined,
      );
    } catch (e) {
      this.#busy = false;
      generation.sink.fail(e as Error);
    }
    return reply;
  }

  /** Frees this conversation's KV cache; a turn still running is stopped first. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#busy) this.#turn?._cancel();
    else this.#free();
  }

  #free(): void {
    if (!this.#model.disposed) this.#model._engine().freeSequence(this.#sequence);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
