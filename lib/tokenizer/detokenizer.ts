// Incremental detokenization: text comes out piece by piece as tokens arrive, with
// characters split over several byte-fallback tokens held back until they are whole, and
// spaces decided the way decoding the whole sequence decides them.
import type { Tokenizer } from './tokenizer.js';

const REPLACEMENT = '\uFFFD';

export class Detokenizer {
  readonly #tokenizer: Tokenizer;
  readonly #skipSpecial: boolean;
  #ids: number[];
  #prefixStart: number;
  #readStart: number;

  /** context: tokens already shown (e.g. the end of the prompt); they decide leading spaces. */
  constructor(tokenizer: Tokenizer, context: ArrayLike<number> = [], options: { skipSpecialTokens?: boolean } = {}) {
    this.#tokenizer = tokenizer;
    this.#skipSpecial = options.skipSpecialTokens ?? true;
    // A few tokens of context are enough to fix spacing and to finish a partial character.
    this.#ids = Array.from(context).slice(-6);
    this.#prefixStart = 0;
    this.#readStart = this.#ids.length;
  }

  #decode(from: number, to?: number): string {
    return this.#tokenizer.decode(this.#ids.slice(from, to), { skipSpecialTokens: this.#skipSpecial });
  }

  /** Adds a token; returns the text it completes ('' while a character is unfinished). */
  push(id: number): string {
    this.#ids.push(id);
    const shown = this.#decode(this.#prefixStart, this.#readStart);
    const full = this.#decode(this.#prefixStart);
    if (full.length <= shown.length || full.endsWith(REPLACEMENT)) return '';
    this.#prefixStart = this.#readStart;
    this.#readStart = this.#ids.length;
    // keep the window short: decoding cost stays constant per token
    if (this.#prefixStart > 32) {
      this.#ids = this.#ids.slice(this.#prefixStart);
      this.#readStart -= this.#prefixStart;
      this.#prefixStart = 0;
    }
    return full.slice(shown.length);
  }

  /** Whatever is still held back (an unfinished character comes out as U+FFFD). */
  flush(): string {
    const shown = this.#decode(this.#prefixStart, this.#readStart);
    const full = this.#decode(this.#prefixStart);
    this.#prefixStart = this.#readStart = this.#ids.length;
    return full.length > shown.length ? full.slice(shown.length) : '';
  }
}
