// Turning logits into the next token: greedy at temperature 0, else a seeded draw from
// softmax(logits / temperature), optionally limited to the topK most likely tokens.
import { Random } from './random.js';

export interface SamplerOptions {
  /** 0 (the default) picks the most likely token. */
  temperature?: number;
  /** Keep only the k most likely tokens before drawing (0: all). */
  topK?: number;
  /** Seed of the draw; the same seed gives the same tokens. */
  seed?: number;
}

/** Index of the largest value; the lowest index wins a tie. */
export function argmax(values: Float32Array): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < values.length; i++) {
    if (values[i]! > bestValue) {
      bestValue = values[i]!;
      best = i;
    }
  }
  return best;
}

export function checkSamplerOptions(o: SamplerOptions): void {
  const t = o.temperature ?? 0;
  if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) throw new RangeError(`temperature must be a finite number >= 0 (got ${t})`);
  const k = o.topK ?? 0;
  if (!Number.isSafeInteger(k) || k < 0) throw new RangeError(`topK must be a non-negative integer (got ${k})`);
  if (o.seed !== undefined && !Number.isSafeInteger(o.seed)) throw new RangeError(`seed must be an integer (got ${o.seed})`);
}

export class Sampler {
  readonly #temperature: number;
  readonly #topK: number;
  readonly #random: Random;

  constructor(options: SamplerOptions = {}) {
    checkSamplerOptions(options);
    this.#temperature = options.temperature ?? 0;
    this.#topK = options.topK ?? 0;
    this.#random = new Random(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  sample(logits: Float32Array): number {
    if (this.#temperature === 0) return argmax(logits);
    let ids: number[] = Array.from({ length: logits.length }, (_, i) => i);
    if (this.#topK > 0 && this.#topK < logits.length) {
      ids.sort((a, b) => logits[b]! - logits[a]! || a - b);
      ids = ids.slice(0, this.#topK);
    }
    let max = -Infinity;
    for (const i of ids) max = Math.max(max, logits[i]!);
    const weights = ids.map((i) => Math.exp((logits[i]! - max) / this.#temperature));
    const total = weights.reduce((a, b) => a + b, 0);
    let u = this.#random.next() * total;
    for (let j = 0; j < ids.length; j++) {
      u -= weights[j]!;
      if (u < 0) return ids[j]!;
    }
    return ids[ids.length - 1]!;
  }
}
