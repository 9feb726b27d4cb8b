// A loaded model: config, the native engine, and the calls that run it. Forward passes
// are queued one at a time onto the engine (a step may batch many sequences).
import { abortError } from '../errors.js';
import { Sampler, type SamplerOptions } from '../generate/sampler.js';
import { abortFlag, type NativeEngine } from '../native.js';
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

export interface GenerateOptions extends SamplerOptions {
  /** Prompt token ids (include BOS yourself if the model wants it). */
  tokens: ArrayLike<number>;
  /** Most new tokens to produce; default 256. */
  maxTokens?: number;
  /** Stop at an end-of-sequence token (config/generation_config eos ids); default true. */
  stopAtEos?: boolean;
  /** Called with each new token as it is chosen. */
  onToken?: (token: number) => void;
  signal?: AbortSignal;
}

export interface GenerateResult {
  /** The new tokens (without the prompt). */
  tokens: number[];
  finishReason: 'length' | 'eos';
}

export interface ModelInfo {
  dir: string;
  device: 'cpu';
  /** Kernel family in use: scalar, avx2 or avx512. */
  isa: string;
  threads: number;
  /** Bytes of weight files mapped. */
  weightBytes: number;
  contextSize: number;
}

/** A sequence's place in the KV cache. Free it with dispose() when done. */
export class Sequence {
  #model: Model;
  #id: number;
  #disposed = false;

  /** @internal */
  constructor(model: Model, id: number) {
    this.#model = model;
    this.#id = id;
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
  #engine: NativeEngine | null;
  #queue: Promise<unknown> = Promise.resolve();
  #sequences = new Set<number>();

  /** @internal Use loadModel(). */
  constructor(config: ModelConfig, engine: NativeEngine, info: ModelInfo) {
    this.config = config;
    this.#engine = engine;
    this.info = info;
  }

  /** @internal */
  _engine(): NativeEngine {
    if (!this.#engine) throw new Error('the model has been disposed');
    return this.#engine;
  }

  /** @internal */
  _releaseSequence(id: number): void {
    this.#sequences.delete(id);
    this.#engine?.freeSequence(id);
  }

  get disposed(): boolean {
    return this.#engine === null;
  }

  /** A new, empty sequence in the KV cache. */
  createSequence(): Sequence {
    const id = this._engine().createSequence();
    this.#sequences.add(id);
    return new Sequence(this, id);
  }

  /** KV cache use: pages of `pageSize` positions. */
  cacheStats(): ReturnType<NativeEngine['cacheStats']> {
    return this._engine().cacheStats();
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

  /** Generates tokens after a prompt: greedy at temperature 0, seeded sampling otherwise. */
  async generate(options: GenerateOptions): Promise<GenerateResult> {
    const maxTokens = options.maxTokens ?? 256;
    if (!Number.isSafeInteger(maxTokens) || maxTokens < 0) throw new RangeError(`maxTokens must be a non-negative integer (got ${maxTokens})`);
    const sampler = new Sampler(options);
    const prompt = toTokenArray(options.tokens, this.config.vocabSize, 'tokens');
    const eos = options.stopAtEos === false ? new Set<number>() : new Set(this.config.eosTokenIds);
    const out: number[] = [];
    if (maxTokens === 0) return { tokens: out, finishReason: 'length' };
    const seq = this.createSequence();
    try {
      let [logits] = await this.step([{ sequence: seq, tokens: prompt }], options);
      for (;;) {
        const token = sampler.sample(logits!);
        out.push(token);
        options.onToken?.(token);
        if (eos.has(token)) return { tokens: out, finishReason: 'eos' };
        if (out.length >= maxTokens) return { tokens: out, finishReason: 'length' };
        [logits] = await this.step([{ sequence: seq, tokens: [token] }], options);
      }
    } finally {
      if (!this.disposed) seq.dispose();
    }
  }

  /** Frees the weights mapping and the KV cache now. Calls after this throw. */
  dispose(): void {
    const engine = this.#engine;
    if (!engine) return;
    this.#engine = null;
    this.#sequences.clear();
    engine.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(job, job);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}
