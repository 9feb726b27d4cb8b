// Continuous batching: every active request contributes to each forward pass (a prompt
// chunk, or its one new token), requests join and leave between passes, and KV cache
// pages are promised to a request when it is admitted, so a pass never runs out of them.
import { CapacityError, abortError } from '../errors.js';
import type { NativeEngine, NativeStepEntry, NativeStepResult } from '../native.js';
import type { Request } from './request.js';

export interface SchedulerOptions {
  /** Most tokens in one forward pass, prompt chunks included (default 512). */
  maxBatchTokens?: number;
  /** Requests that may wait for KV cache memory; beyond, a request fails at once (default 0: never wait). */
  maxQueue?: number;
  /** Generations that own their sequence start from cached prompt pages (default true). */
  prefixCache?: boolean;
}

export interface Job {
  request: Request;
  sequence: number;
  /** Free the sequence when done (false for a conversation that keeps its cache). */
  ownsSequence: boolean;
  /** The sequence takes part in the prefix cache: its prompt may start from cached pages. */
  shared: boolean;
  /** Tokens still to feed, and how many of them were fed. */
  pending: Int32Array;
  fed: number;
  /** Sequence length now, and the most it may reach. */
  length: number;
  /** Tokens in the forward pass running now (their pages are already taken). */
  stepping?: number;
  maxLength: number;
  signal: AbortSignal | undefined;
  /** Called once with every token that went into the sequence, when the job ends. */
  onEnd?: (fedTokens: number[]) => void;
  fedTokens: number[];
}

export class Scheduler {
  readonly #engine: () => NativeEngine;
  readonly #run: <T>(job: () => Promise<T>) => Promise<T>;
  readonly #maxBatchTokens: number;
  readonly #maxQueue: number;
  #active: Job[] = [];
  #waiting: Job[] = [];
  #running = false;
  #closed: Error | null = null;

  /** run: serializes engine work with the model's other steps. */
  constructor(engine: () => NativeEngine, run: <T>(job: () => Promise<T>) => Promise<T>, options: SchedulerOptions = {}) {
    this.#engine = engine;
    this.#run = run;
    this.#maxBatchTokens = options.maxBatchTokens ?? 512;
    this.#maxQueue = options.maxQueue ?? 0;
  }

  get activeCount(): number {
    return this.#active.length;
  }

  get waitingCount(): number {
    return this.#waiting.length;
  }

  #pageSize = 0;

  #pages(length: number): number {
    this.#pageSize ||= this.#engine().cacheStats().pageSize;
    return Math.ceil(length / this.#pageSize);
  }

  /** Pages promised to running generations and not yet taken. */
  get promisedPages(): number {
    return this.#active.length ? this.#promised() : 0;
  }

  /** Pages promised to running jobs but not yet taken. */
  #promised(): number {
    return this.#active.reduce((sum, j) => sum + this.#pages(j.maxLength) - this.#pages(j.length + (j.stepping ?? 0)), 0);
  }

  #fits(job: Job): boolean {
    const stats = this.#engine().cacheStats();
    const free = stats.maxPages - stats.pagesInUse - this.#promised();
    return this.#pages(job.maxLength) - this.#pages(job.length) <= free;
  }

  /** Whether the job can run now; a new shared job first takes the cached pages its prompt
   * begins with, and gives them back if it still cannot run. */
  #place(job: Job): boolean {
    if (!job.shared || job.length !== 0) return this.#fits(job);
    const engine = this.#engine();
    const hit = engine.attachPrefix(job.sequence, job.pending);
    job.length = job.fed = hit;
    if (this.#fits(job)) {
      for (let i = 0; i < hit; i++) job.fedTokens.push(job.pending[i]!);
      job.request.cachedTokens = hit;
      return true;
    }
    if (hit > 0) engine.truncateSequence(job.sequence, 0);
    job.length = job.fed = 0;
    return false;
  }

  submit(job: Job): void {
    if (this.#closed) return this.#end(job, this.#closed);
    const stats = this.#engine().cacheStats();
    if (this.#pages(job.maxLength) > stats.maxPages)
      return this.#end(job, new CapacityError(`KV cache too small: this request needs ${this.#pages(job.maxLength)} pages of ${stats.pageSize} tokens, the cache holds ${stats.maxPages} (loadModel kvCacheTokens)`, false));
    if (this.#place(job)) this.#active.push(job);
    else if (this.#waiting.length < this.#maxQueue) this.#waiting.push(job);
    else
      return this.#end(job, new CapacityError(`KV cache is full: ${this.#active.length} requests are running and ${this.#waiting.length} waiting (raise kvCacheTokens or maxQueue)`, true));
    this.#kick();
  }

  /** Ends every job with `error`; later submissions fail with it too. */
  close(error: Error): void {
    this.#closed = error;
    for (const job of [...this.#active, ...this.#waiting]) this.#end(job, error, false);
    this.#active = [];
    this.#waiting = [];
  }

  #kick(): void {
    if (!this.#running && this.#active.length > 0) void this.#loop();
  }

  #admit(): void {
    for (const job of this.#waiting) if (job.signal?.aborted) this.#end(job, abortError(job.signal));
    this.#waiting = this.#waiting.filter((j) => !j.signal?.aborted);
    while (this.#waiting.length > 0 && this.#place(this.#waiting[0]!)) this.#active.push(this.#waiting.shift()!);
  }

  #end(job: Job, error: Error | null, release = true): void {
    if (error) job.request.fail(error);
    if (release && !this.#closed) {
      try {
        if (job.ownsSequence) this.#engine().freeSequence(job.sequence);
      } catch {
        // the model was disposed: nothing left to free
      }
    }
    job.onEnd?.(job.fedTokens);
  }

  #retire(job: Job, error: Error | null): void {
    this.#active = this.#active.filter((j) => j !== job);
    this.#end(job, error);
  }

  async #loop(): Promise<void> {
    this.#running = true;
    try {
      while (this.#active.length > 0 && !this.#closed) {
        for (const job of this.#active) if (job.signal?.aborted) this.#retire(job, abortError(job.signal));
        if (this.#active.length === 0) break;
        // Decode tokens first (one each), then prompt chunks while the budget lasts.
        const order = [...this.#active].sort((a, b) => a.pending.length - a.fed - (b.pending.length - b.fed));
        let budget = this.#maxBatchTokens;
        const batch: { job: Job; count: number }[] = [];
        for (const job of order) {
          const count = Math.min(job.pending.length - job.fed, budget);
          if (count <= 0) continue;
          batch.push({ job, count });
          budget -= count;
        }
        // A request decided by the top k logits (greedy: k = 1) gets only those from the engine.
        const entries: NativeStepEntry[] = batch.map(({ job, count }) => {
          const top = job.request.top;
          return {
            sequence: job.sequence,
            tokens: job.pending.subarray(job.fed, job.fed + count),
            logits: job.fed + count < job.pending.length ? 0 : top > 0 ? 3 : 1,
            ...(top > 0 ? { topK: top } : {}),
          };
        });
        let result: NativeStepResult;
        for (const { job, count } of batch) job.stepping = count;
        const pass = this.#run(() => this.#engine().step(entries, undefined));
        // Constrained requests work out their next masks while the pass runs.
        const masks = Promise.all(batch.filter(({ job, count }) => job.fed + count === job.pending.length).map(({ job }) => job.request.prepare()));
        try {
          result = await pass;
          await masks;
        } catch (e) {
          for (const { job } of batch) this.#retire(job, e as Error);
          continue;
        } finally {
          for (const { job } of batch) job.stepping = 0;
        }
        if (this.#closed) break;
        const vocab = result.logits.length / Math.max(1, result.rows.reduce((a, b) => a + b, 0));
        let row = 0, topRow = 0;
        for (const [index, { job, count }] of batch.entries()) {
          for (let i = 0; i < count; i++) job.fedTokens.push(job.pending[job.fed + i]!);
          job.fed += count;
          job.length += count;
          if (job.fed < job.pending.length) continue;
          let next: number | null;
          try {
            const entry = entries[index]!;
            if (entry.logits === 3) {
              const at = topRow++ * result.topK, k = Math.min(entry.topK!, result.topK);
              next = job.request.nextFromTop(result.topValues.subarray(at, at + k), result.topIds.subarray(at, at + k));
            } else next = job.request.next(result.logits.subarray(row * vocab, ++row * vocab));
            // at the context limit the chosen token is the last one: it cannot be fed
            if (next !== null && job.length >= job.maxLength) {
              job.request.finish('length');
              next = null;
            }
          } catch (e) {
            this.#retire(job, e as Error);
            continue;
          }
          if (next === null) this.#retire(job, null);
          else {
            job.pending = Int32Array.of(next);
            job.fed = 0;
          }
        }
        this.#admit();
      }
    } finally {
      this.#running = false;
      this.#admit();
      this.#kick();
    }
  }
}
