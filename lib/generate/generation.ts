// A running generation: an async iterable of text chunks that can also be awaited for the
// whole result.
export interface TokenLogprob {
  token: number;
  /** log-probability under the model (log-softmax of its logits, before sampling settings) */
  logprob: number;
  /** The most likely alternatives at this step, most likely first. */
  top: { token: number; logprob: number }[];
}

/** A call of one of the chat's tools, as the model wrote it. */
export interface ToolCall {
  /** 9 characters of [a-zA-Z0-9]: the id a tool result answers. */
  id: string;
  name: string;
  /** The arguments object, as JSON text. */
  arguments: string;
}

export interface GenerationChunk {
  /** New text (may be '' while a character or a possible stop string is held back). */
  text: string;
  /** Token ids chosen since the last chunk. */
  tokens: number[];
  logprobs?: TokenLogprob[];
  /** Tool calls completed by this chunk (chats with tools). */
  toolCalls?: ToolCall[];
}

/** 'tool_calls': a chat reply that is tool calls (see GenerationResult.toolCalls). */
export type FinishReason = 'eos' | 'length' | 'stop' | 'tool_calls';

export interface GenerationResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  promptTokens: number;
  /** Prompt tokens read from the prefix cache instead of computed. */
  cachedTokens: number;
  logprobs?: TokenLogprob[];
  /** The tool calls of a chat reply (then `text` is ''). */
  toolCalls?: ToolCall[];
  /** Why a reply that began with tool calls could not be read as such (`text` holds it). */
  toolCallError?: string;
  /** Milliseconds from the call to the first token, and decode speed after it. */
  timeToFirstTokenMs: number;
  tokensPerSecond: number;
}

/** The producer side, used by the scheduler. */
export interface GenerationSink {
  chunk(c: GenerationChunk): void;
  finish(result: GenerationResult): void;
  fail(error: Error): void;
}

export class Generation implements AsyncIterable<GenerationChunk>, PromiseLike<GenerationResult> {
  readonly #result: Promise<GenerationResult>;
  #resolve!: (r: GenerationResult) => void;
  #reject!: (e: Error) => void;
  #queue: GenerationChunk[] = [];
  #waiting: ((r: IteratorResult<GenerationChunk>) => void) | null = null;
  #failWaiting: ((e: Error) => void) | null = null;
  #done = false;
  #error: Error | null = null;
  #iterated = false;
  #cancel: (() => void) | null = null;

  /** @internal */
  constructor() {
    this.#result = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // Awaiting is optional when iterating: keep an unobserved rejection quiet.
    this.#result.catch(() => undefined);
  }

  /** @internal */
  get sink(): GenerationSink {
    return {
      chunk: (c) => {
        if (this.#done) return;
        if (this.#waiting) {
          const w = this.#waiting;
          this.#waiting = this.#failWaiting = null;
          w({ value: c, done: false });
        } else this.#queue.push(c);
      },
      finish: (r) => {
        if (this.#done) return;
        this.#done = true;
        this.#resolve(r);
        this.#wake();
      },
      fail: (e) => {
        if (this.#done) return;
        this.#done = true;
        this.#error = e;
        this.#reject(e);
        this.#wake();
      },
    };
  }

  #wake(): void {
    if (this.#error && this.#failWaiting) this.#failWaiting(this.#error);
    else if (this.#waiting) this.#waiting({ value: undefined, done: true });
    this.#waiting = this.#failWaiting = null;
  }

  /** @internal What stops the work behind this generation (leaving a `for await` early). */
  set onCancel(cancel: () => void) {
    this.#cancel = cancel;
  }

  /** @internal Stops the generation if it is still running (it then fails with an AbortError). */
  _cancel(): void {
    if (!this.#done) this.#cancel?.();
  }

  then<A = GenerationResult, B = never>(
    onFulfilled?: ((value: GenerationResult) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.#result.then(onFulfilled, onRejected);
  }

  catch<B = never>(onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<GenerationResult | B> {
    return this.#result.catch(onRejected);
  }

  [Symbol.asyncIterator](): AsyncIterator<GenerationChunk> {
    if (this.#iterated) throw new Error('a generation can be iterated once');
    this.#iterated = true;
    return {
      next: () => {
        const queued = this.#queue.shift();
        if (queued) return Promise.resolve({ value: queued, done: false });
        if (this.#error) return Promise.reject(this.#error);
        if (this.#done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => {
          this.#waiting = resolve;
          this.#failWaiting = reject;
        });
      },
      // Leaving the loop early (break, return, throw) stops the generation.
      return: () => {
        this._cancel();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
