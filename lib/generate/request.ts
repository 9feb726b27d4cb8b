// One generation request: samples each next token from its logits, detokenizes, applies
// stop conditions and reports chunks and the result to its Generation.
import type { Constraint } from '../constrain/constraint.js';
import type { Detokenizer } from '../tokenizer/detokenizer.js';
import type { FinishReason, GenerationSink, TokenLogprob } from './generation.js';
import { logSoftmax, type Sampler } from './sampler.js';
import type { StopMatcher } from './stop.js';

export interface RequestSetup {
  sink: GenerationSink;
  sampler: Sampler;
  prompt: Int32Array;
  maxTokens: number;
  eos: ReadonlySet<number>;
  detokenizer: Detokenizer | null;
  stop: StopMatcher | null;
  logprobs: number;
  /** Tokens the output may take at each step (JSON Schema, grammar, regex). */
  constraint: Constraint | null;
}

export class Request {
  readonly #s: RequestSetup;
  readonly #started = performance.now();
  #firstTokenAt = 0;
  readonly tokens: number[] = [];
  /** Prompt tokens whose KV came from the prefix cache. */
  cachedTokens = 0;
  readonly #logprobs: TokenLogprob[] = [];
  #text = '';
  #finished = false;

  constructor(setup: RequestSetup) {
    this.#s = setup;
    setup.sampler.observe(setup.prompt);
  }

  get prompt(): Int32Array {
    return this.#s.prompt;
  }

  get maxTokens(): number {
    return this.#s.maxTokens;
  }

  get finished(): boolean {
    return this.#finished;
  }

  /** How many of the largest logits decide the next token (see Sampler.top); 0: all of them
   * (also when log-probabilities are asked for). */
  get top(): number {
    return this.#s.logprobs === 0 && !this.#s.constraint ? this.#s.sampler.top : 0;
  }

  #prepareError: Error | null = null;

  /** Computes the constraint's mask for the next token (while the forward pass runs). */
  async prepare(): Promise<void> {
    try {
      await this.#s.constraint?.prepare();
    } catch (e) {
      this.#prepareError = e as Error;
    }
  }

  /** Chooses the token after `logits`; returns it, or null when the request is complete
   * (the returned token must then not be fed). */
  next(logits: Float32Array): number | null {
    const s = this.#s;
    let logprob: TokenLogprob | undefined;
    const lp = s.logprobs > 0 ? logSoftmax(logits) : null;
    if (s.constraint) {
      if (this.#prepareError) throw this.#prepareError;
      s.constraint.apply(logits);
    }
    const token = s.sampler.sample(logits);
    if (lp) {
      const order = Array.from(lp.keys()).sort((a, b) => lp[b]! - lp[a]! || a - b).slice(0, s.logprobs);
      logprob = { token, logprob: lp[token]!, top: order.map((t) => ({ token: t, logprob: lp[t]! })) };
    }
    return this.#take(token, logprob);
  }

  /** Like next(), from the `top` largest logits (largest first) and their ids. */
  nextFromTop(values: Float32Array, ids: Int32Array): number | null {
    return this.#take(this.#s.sampler.sampleTop(values, ids), undefined);
  }

  #take(token: number, logprob: TokenLogprob | undefined): number | null {
    const s = this.#s;
    if (this.tokens.length === 0) this.#firstTokenAt = performance.now();
    s.constraint?.accept(token);
    this.tokens.push(token);
    if (logprob) this.#logprobs.push(logprob);
    if (s.eos.has(token) || s.constraint?.terminated) {
      this.#emit('', [token], logprob);
      this.finish('eos');
      return null;
    }
    const piece = s.detokenizer ? s.detokenizer.push(token) : '';
    const { text, stopped } = s.stop ? s.stop.push(piece) : { text: piece, stopped: false };
    this.#emit(text, [token], logprob);
    if (stopped) {
      this.finish('stop', false);
      return null;
    }
    if (this.tokens.length >= s.maxTokens) {
      this.finish('length');
      return null;
    }
    return token;
  }

  #emit(text: string, tokens: number[], logprob?: TokenLogprob): void {
    this.#text += text;
    this.#s.sink.chunk({ text, tokens, ...(logprob ? { logprobs: [logprob] } : {}) });
  }

  /** Ends the request: releases held-back text (unless a stop string ended it). */
  finish(reason: FinishReason, flush = true): void {
    if (this.#finished) return;
    this.#finished = true;
    const s = this.#s;
    s.constraint?.dispose();
    if (flush) {
      let rest = s.detokenizer ? s.detokenizer.flush() : '';
      if (s.stop) rest = s.stop.push(rest).text + s.stop.flush();
      if (rest) this.#emit(rest, []);
    }
    const end = performance.now();
    const decodeSeconds = (end - (this.#firstTokenAt || end)) / 1000;
    s.sink.finish({
      text: this.#text,
      tokens: this.tokens,
      finishReason: reason,
      promptTokens: s.prompt.length,
      cachedTokens: this.cachedTokens,
      ...(s.logprobs > 0 ? { logprobs: this.#logprobs } : {}),
      timeToFirstTokenMs: (this.#firstTokenAt || end) - this.#started,
      tokensPerSecond: decodeSeconds > 0 ? (this.tokens.length - 1) / decodeSeconds : 0,
    });
  }

  fail(error: Error): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#s.constraint?.dispose();
    this.#s.sink.fail(error);
  }
}
