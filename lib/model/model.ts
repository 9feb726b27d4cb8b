// A loaded model: config, tokenizer, the native engine, and the calls that run it.
// Forward passes go one at a time onto the engine; generations share them through the
// scheduler, which batches all running requests into each pass.
import { CONSTRAINT_KEYS, Constraint, constraintOf, type ConstraintOptions } from '../constrain/constraint.js';
import { CapacityError, abortError } from '../errors.js';
import { Generation } from '../generate/generation.js';
import { Request } from '../generate/request.js';
import { SAMPLER_KEYS, Sampler, type SamplerOptions } from '../generate/sampler.js';
import { Scheduler, type Job, type SchedulerOptions } from '../generate/scheduler.js';
import { StopMatcher } from '../generate/stop.js';
import { abortFlag, type NativeEngine, type StepCounts } from '../native.js';
import type { ChatMessage, ChatTool } from '../tokenizer/chat-template.js';
import { Detokenizer } from '../tokenizer/detokenizer.js';
import type { SpecialTokens, TokenizeOptions, Tokenizer } from '../tokenizer/tokenizer.js';
import { Chat, type ChatSessionOptions } from './chat.js';
import { planChat, withToolCalls, type ToolChoice } from './tools.js';
import type { ModelConfig } from './config.js';

export type LogitsWanted = 'none' | 'last' | 'all';

export interface StepInput {
  sequence: Sequence;
  tokens: ArrayLike<number>;
  /** Which positions' logits to return; default 'last'. */
  logits?: LogitsWanted;
}

export interface ForwardOptions {
  /** Return the logits of every position ([tokens x vocab]), not only the last. */
  allLogits?: boolean;
  signal?: AbortSignal;
}

export interface GenerateOptions extends SamplerOptions, ConstraintOptions {
  /** Most new tokens (default 256). */
  maxTokens?: number;
  /** Stop when the text reaches one of these; the stop string is not part of the output. */
  stop?: string | string[];
  /** Stop at an end-of-sequence token (default true). */
  stopAtEos?: boolean;
  /** Report the log-probability of each chosen token and this many alternatives (0-20). */
  logprobs?: number;
  signal?: AbortSignal;
  /** How a text prompt treats special-token text (default 'parse', as Hugging Face). */
  specialTokens?: SpecialTokens;
  /** Add BOS to a text prompt as the tokenizer config asks (default true). */
  addSpecialTokens?: boolean;
}

/** The token-id form of generate(). */
export interface GenerateTokensOptions extends GenerateOptions {
  tokens: ArrayLike<number>;
}

export interface ChatOptions extends Omit<GenerateOptions, 'specialTokens' | 'addSpecialTokens'> {
  tools?: ChatTool[];
  /** Whether and which tool the reply must call (default 'auto'). */
  toolChoice?: ToolChoice;
}

const GENERATE_KEYS = new Set<string>([...SAMPLER_KEYS, ...CONSTRAINT_KEYS, 'maxTokens', 'stop', 'stopAtEos', 'logprobs', 'signal', 'specialTokens', 'addSpecialTokens', 'tokens', 'tools', 'toolChoice']);

export interface ModelInfo {
  dir: string;
  /** Where the model runs. */
  device: 'cpu' | 'cuda';
  /** The GPU's name (device 'cuda'). */
  deviceName?: string;
  /** Device memory held for weights and KV cache (device 'cuda'; 0 on the CPU). */
  deviceBytes: number;
  /** Kernel family in use on the CPU (an {@link Isa}; '' on a GPU). */
  isa: string;
  threads: number;
  /** Bytes of weight files mapped. */
  weightBytes: number;
  contextSize: number;
  /** How the KV cache stores keys and values (LoadOptions.kvCacheType). */
  kvCacheType: 'f16' | 'q8';
}

// A sequence dropped without dispose() gives its pages back when it is collected.
const dropped = new FinalizationRegistry<{ model: WeakRef<Model>; id: number }>(({ model, id }) => {
  try {
    model.deref()?._releaseSequence(id);
  } catch {
    // the model was disposed: nothing left to free
  }
});

/** A sequence's place in the KV cache. Free it with dispose() when done (one dropped
 * without it is freed when garbage-collected). */
export class Sequence {
  #model: Model;
  #id: number;
  #disposed = false;

  /** @internal */
  constructor(model: Model, id: number) {
    this.#model = model;
    this.#id = id;
    dropped.register(this, { model: new WeakRef(model), id }, this);
  }

  /** @internal */
  get id(): number {
    if (this.#disposed) throw new Error('the sequence has been disposed');
    return this.#id;
  }

  /** Number of tokens in the cache. */
  get length(): number {
    return this.#model._engine().sequenceLength(this.id);
  }

  /** Forgets every position from `length` on (to rewind a conversation). */
  truncate(length: number): void {
    this.#model._engine().truncateSequence(this.id, length);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    dropped.unregister(this);
    this.#model._releaseSequence(this.#id);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

const LOGITS_CODE = { none: 0, last: 1, all: 2 } as const;

function toTokenArray(tokens: ArrayLike<number>, vocab: number, what: string): Int32Array {
  if (tokens === null || typeof tokens !== 'object' || typeof tokens.length !== 'number')
    throw new TypeError(`${what} must be an array of token ids`);
  if (tokens.length === 0) throw new RangeError(`${what} is empty`);
  const out = new Int32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (!Number.isInteger(t) || t < 0 || t >= vocab)
      throw new RangeError(`${what}[${i}] = ${t} is not a token id in [0, ${vocab})`);
    out[i] = t;
  }
  return out;
}

export class Model {
  readonly config: ModelConfig;
  readonly info: ModelInfo;
  /** The model's tokenizer, or null when the directory has no tokenizer.json. */
  readonly tokenizer: Tokenizer | null;
  #engine: NativeEngine | null;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #scheduler: Scheduler;
  readonly #prefixCache: boolean;

  /** @internal Use loadModel(). */
  constructor(config: ModelConfig, engine: NativeEngine, info: ModelInfo, tokenizer: Tokenizer | null, scheduling: SchedulerOptions = {}) {
    this.config = config;
    this.#engine = engine;
    this.info = info;
    this.tokenizer = tokenizer;
    this.#scheduler = new Scheduler(() => this._engine(), (job) => this.#enqueue(job), scheduling);
    this.#prefixCache = scheduling.prefixCache ?? true;
  }

  /** @internal */
  _engine(): NativeEngine {
    if (!this.#engine) throw new Error('the model has been disposed');
    return this.#engine;
  }

  /** @internal */
  _releaseSequence(id: number): void {
    this.#engine?.freeSequence(id);
  }

  get disposed(): boolean {
    return this.#engine === null;
  }

  /** A new, empty sequence in the KV cache. */
  createSequence(): Sequence {
    return new Sequence(this, this._engine().createSequence());
  }

  /** KV cache use: pages of `pageSize` positions; `cachedPages` are held only by the
   * prefix cache (reclaimed when needed). */
  cacheStats(): ReturnType<NativeEngine['cacheStats']> {
    return this._engine().cacheStats();
  }

  /** How the forward steps have run so far: eagerly, or recorded as a CUDA graph and
   * replayed (decode steps on a GPU, after the first two of each batch shape). */
  stepCounts(): StepCounts {
    return this._engine().stepCounts();
  }

  /** Requests being generated now, and waiting for KV cache memory. */
  get pendingRequests(): { active: number; waiting: number } {
    return { active: this.#scheduler.activeCount, waiting: this.#scheduler.waitingCount };
  }

  #requireTokenizer(): Tokenizer {
    if (!this.tokenizer) throw new Error(`${this.info.dir} has no tokenizer.json: use token ids`);
    return this.tokenizer;
  }

  /** Text to token ids; 'plain' keeps special-token text from becoming control tokens. */
  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    return this.#requireTokenizer().encode(text, options);
  }

  detokenize(tokens: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    return this.#requireTokenizer().decode(tokens, options);
  }

  /**
   * One forward pass over a batch: each entry appends its tokens to its sequence (a
   * prompt chunk or a single decode token) and gets back the logits it asked for, as
   * [rows x vocab]. All entries run together in one pass.
   */
  step(batch: StepInput[], options: { signal?: AbortSignal } = {}): Promise<Float32Array[]> {
    if (!Array.isArray(batch) || batch.length === 0) return Promise.reject(new TypeError('step: the batch must be a non-empty array'));
    let entries;
    try {
      entries = batch.map((e, i) => {
        if (!(e?.sequence instanceof Sequence)) throw new TypeError(`step: batch[${i}].sequence is not a Sequence`);
        const logits = e.logits ?? 'last';
        if (!(logits in LOGITS_CODE)) throw new TypeError(`step: batch[${i}].logits must be 'none', 'last' or 'all'`);
        return { sequence: e.sequence.id, tokens: toTokenArray(e.tokens, this.config.vocabSize, `batch[${i}].tokens`), logits: LOGITS_CODE[logits] };
      });
    } catch (e) {
      return Promise.reject(e);
    }
    const { signal } = options;
    return this.#enqueue(async () => {
      if (signal?.aborted) throw abortError(signal);
      // Pages promised to running generations are not this step's to take (otherwise the
      // engine's own checks say what is wrong).
      const promised = this.#scheduler.promisedPages;
      const engine = this._engine();
      const stats = engine.cacheStats();
      const pages = (n: number) => Math.ceil(n / stats.pageSize);
      let needed = 0;
      for (const e of entries) {
        const length = engine.sequenceLength(e.sequence);
        needed += pages(length + e.tokens.length) - pages(length);
      }
      const free = stats.maxPages - stats.pagesInUse - promised;
      if (promised > 0 && needed > free)
        throw new CapacityError(`KV cache is full: this step needs ${needed} more pages of ${stats.pageSize} positions, ${Math.max(0, free)} are free (the rest are in use or promised to running generations)`, true);
      const abort = abortFlag(signal);
      try {
        const { logits, rows } = await this._engine().step(entries, abort.flag);
        const vocab = this.config.vocabSize;
        const out: Float32Array[] = [];
        let offset = 0;
        for (const r of rows) {
          out.push(logits.subarray(offset * vocab, (offset + r) * vocab));
          offset += r;
        }
        return out;
      } catch (e) {
        if ((e as Error).name === 'AbortError') throw abortError(signal);
        throw e;
      } finally {
        abort.release();
      }
    });
  }

  /** Logits after the last token (or after every token with allLogits), from an empty cache. */
  async forward(tokens: ArrayLike<number>, options: ForwardOptions = {}): Promise<Float32Array> {
    const seq = this.createSequence();
    try {
      const [logits] = await this.step([{ sequence: seq, tokens, logits: options.allLogits ? 'all' : 'last' }], options);
      return logits!;
    } finally {
      if (!this.disposed) seq.dispose();
    }
  }

  /**
   * Generates after a prompt (text, or token ids): iterate it for text chunks as they
   * come, or await it for the whole result. Greedy at temperature 0 (the default).
   */
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): Generation;
  generate(options: GenerateTokensOptions): Generation;
  generate(prompt: string | ArrayLike<number> | GenerateTokensOptions, options: GenerateOptions = {}): Generation {
    const generation = new Generation();
    try {
      let tokens: Int32Array;
      if (typeof prompt === 'string') {
        checkOptions(options);
        this.#checkTextLength(prompt.length);
        tokens = Int32Array.from(this.#requireTokenizer().encode(prompt, { specialTokens: options.specialTokens ?? 'parse', addSpecialTokens: options.addSpecialTokens ?? true }));
      } else if (isTokensOptions(prompt)) {
        options = prompt;
        checkOptions(options);
        tokens = toTokenArray(prompt.tokens, this.config.vocabSize, 'tokens');
      } else {
        checkOptions(options);
        tokens = toTokenArray(prompt, this.config.vocabSize, 'prompt');
      }
      if (tokens.length === 0) throw new RangeError('the prompt is empty');
      this._submit(generation, tokens, options, null);
    } catch (e) {
      generation.sink.fail(e as Error);
    }
    return generation;
  }

  /**
   * One reply to a conversation: encoded as mistral-common does for a Mistral v3 tokenizer,
   * else with the model's chat template. Every string from the caller is plain text. With
   * `tools`, a reply may be tool calls (`result.toolCalls`, and `chunk.toolCalls` as each
   * completes); `toolChoice` can forbid or force them.
   */
  chat(messages: ChatMessage[], options: ChatOptions = {}): Generation {
    try {
      const plan = this._planChat(messages, options);
      const generation = new Generation();
      this._submit(generation, plan.prompt, plan.options, null);
      return withToolCalls(generation, plan);
    } catch (e) {
      const failed = new Generation();
      failed.sink.fail(e as Error);
      return failed;
    }
  }

  /** @internal The prompt and generate options of a chat request (the server's path). */
  _planChat(messages: ChatMessage[], options: ChatOptions): ReturnType<typeof planChat> {
    checkOptions(options);
    if (Array.isArray(messages)) {
      let chars = JSON.stringify(options.tools ?? []).length;
      for (const m of messages) chars += (typeof m?.content === 'string' ? m.content.length : 0) + (m?.tool_calls ? JSON.stringify(m.tool_calls).length : 0);
      this.#checkTextLength(chars);
    }
    return planChat(this.#requireTokenizer(), messages, options);
  }

  /** Refuses text that cannot fit the context before spending time on tokenizing it. */
  #checkTextLength(chars: number): void {
    const tokenizer = this.#requireTokenizer();
    const least = Math.ceil(chars / tokenizer.maxTokenChars);
    if (least > this.info.contextSize)
      throw new RangeError(`the prompt has at least ${least} tokens (${chars} characters), more than the context size of ${this.info.contextSize}`);
  }

  /** A conversation that keeps its KV cache between turns: a new turn prefills only the
   * tokens that are new. Dispose it when done. */
  createChat(options: ChatSessionOptions = {}): Chat {
    this.#requireTokenizer();
    return new Chat(this, options);
  }

  /**
   * @internal Queues a generation. With `session`, the tokens continue that sequence
   * (whose first `keep` tokens stay cached) and the sequence is kept afterwards.
   */
  _submit(
    generation: Generation,
    prompt: Int32Array,
    options: GenerateOptions,
    session: { sequence: number; keep: number; onEnd: (fed: number[]) => void } | null,
  ): void {
    const maxTokens = options.maxTokens ?? 256;
    if (!Number.isSafeInteger(maxTokens) || maxTokens < 1) throw new RangeError(`maxTokens must be a positive integer (got ${maxTokens})`);
    const logprobs = options.logprobs ?? 0;
    if (!Number.isSafeInteger(logprobs) || logprobs < 0 || logprobs > 20) throw new RangeError(`logprobs must be an integer in [0, 20] (got ${logprobs})`);
    const stops = options.stop === undefined ? [] : Array.isArray(options.stop) ? options.stop : [options.stop];
    if (!stops.every((s) => typeof s === 'string' && s.length > 0)) throw new TypeError('stop must be a non-empty string or a list of them');
    if (stops.length > 0 && !this.tokenizer) throw new Error('stop strings need a tokenizer (this model has no tokenizer.json)');
    if (prompt.length === 0) throw new RangeError('the prompt is empty');
    const context = this.info.contextSize;
    const start = session?.keep ?? 0;
    if (start + prompt.length > context)
      throw new RangeError(`the prompt has ${start + prompt.length} tokens, more than the context size of ${context}`);
    if (options.signal?.aborted) throw abortError(options.signal);
    const sampler = new Sampler(options);
    const eosIds = [...new Set([...this.config.eosTokenIds, ...(this.tokenizer?.eosTokenIds ?? [])])];
    const eos = options.stopAtEos === false ? new Set<number>() : new Set(eosIds);
    const constrained = constraintOf(options);
    const setup = {
      sink: generation.sink,
      sampler,
      prompt,
      maxTokens,
      eos,
      detokenizer: this.tokenizer ? new Detokenizer(this.tokenizer, prompt) : null,
      stop: stops.length > 0 ? new StopMatcher(stops) : null,
      logprobs,
    };
    // The job stops when the caller's signal aborts, or when the caller leaves the
    // generation's loop early.
    const cancel = new AbortController();
    generation.onCancel = () => cancel.abort(abortError());
    const signal = options.signal ? AbortSignal.any([options.signal, cancel.signal]) : cancel.signal;
    const queue = (constraint: Constraint | null) => {
      const request = new Request({ ...setup, constraint });
      const engine = this._engine();
      const shared = !session && this.#prefixCache;
      const sequence = session ? session.sequence : engine.createSequence(shared);
      const job: Job = {
        request,
        sequence,
        ownsSequence: !session,
        shared,
        pending: prompt,
        fed: 0,
        length: start,
        maxLength: Math.min(context, start + prompt.length + maxTokens),
        signal,
        fedTokens: [],
        ...(session ? { onEnd: session.onEnd } : {}),
      };
      this.#scheduler.submit(job);
    };
    if (!constrained) return queue(null);
    // A constraint is compiled first (XGrammar, against this vocabulary), then queued.
    if (!this.tokenizer) throw new Error('constrained output needs a tokenizer (this model has no tokenizer.json)');
    Constraint.create(this.tokenizer, this.config.vocabSize, eosIds, constrained).then(
      (constraint) => {
        try {
          if (signal.aborted) throw abortError(signal);
          queue(constraint);
        } catch (e) {
          constraint.dispose();
          generation.sink.fail(e as Error);
          session?.onEnd([]);
        }
      },
      (e: unknown) => {
        generation.sink.fail(e as Error);
        session?.onEnd([]);
      },
    );
  }

  /** Frees the weights mapping and the KV cache now; running generations end with an
   * error. Calls after this throw. */
  dispose(): void {
    const engine = this.#engine;
    if (!engine) return;
    this.#engine = null;
    this.#scheduler.close(new Error('the model has been disposed'));
    engine.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #pending = 0;

  /** Runs engine jobs one at a time. An idle engine starts the job at once, so the
   * scheduler's next pass is under way while callers still handle the last one's chunks. */
  #enqueue<T>(job: () => Promise<T>): Promise<T> {
    let run: Promise<T>;
    if (this.#pending === 0) {
      try {
        run = job();
      } catch (e) {
        run = Promise.reject(e as Error);
      }
    } else run = this.#queue.then(job, job);
    this.#pending++;
    this.#queue = run.then(
      () => void this.#pending--,
      () => void this.#pending--,
    );
    return run;
  }
}

function isTokensOptions(v: unknown): v is GenerateTokensOptions {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v) && 'tokens' in v;
}

function checkOptions(options: object): void {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
  for (const key of Object.keys(options)) if (!GENERATE_KEYS.has(key)) throw new TypeError(`unknown option '${key}'`);
}
