// Turning logits into the next token. In order: logit bias, repetition / presence /
// frequency penalties over the last `penaltyWindow` tokens, then greedy (temperature 0) or
// temperature, top-k, typical-p, top-p and min-p filters and a seeded draw from what is
// left. Each stage is a plain function of the logits so that its formula can be tested.
import { Random } from './random.js';

export interface SamplerOptions {
  /** 0 (the default) picks the most likely token; otherwise softmax(logits / temperature). */
  temperature?: number;
  /** Keep the k most likely tokens (0: off). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches topP (1: off). */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely one (0: off). */
  minP?: number;
  /** Locally typical sampling: keep the tokens closest to the expected surprise, up to this mass (1: off). */
  typicalP?: number;
  /** Divide positive (multiply negative) logits of recent tokens by this (1: off). */
  repetitionPenalty?: number;
  /** Subtract from the logit of every recent token (0: off). */
  presencePenalty?: number;
  /** Subtract this times the count of each recent token (0: off). */
  frequencyPenalty?: number;
  /** How many recent tokens the penalties look at (default 64). */
  penaltyWindow?: number;
  /** Added to the logits of these token ids (-Infinity bans a token). */
  logitBias?: Record<number, number>;
  /** Seed of the draw; the same seed gives the same tokens. */
  seed?: number;
}

export const SAMPLER_KEYS = ['temperature', 'topK', 'topP', 'minP', 'typicalP', 'repetitionPenalty', 'presencePenalty', 'frequencyPenalty', 'penaltyWindow', 'logitBias', 'seed'] as const;

function check(ok: boolean, message: string): void {
  if (!ok) throw new RangeError(message);
}

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Throws RangeError naming the first bad setting. */
export function checkSamplerOptions(o: SamplerOptions): void {
  const t = o.temperature ?? 0;
  check(finite(t) && t >= 0, `temperature must be a finite number >= 0 (got ${String(t)})`);
  const k = o.topK ?? 0;
  check(Number.isSafeInteger(k) && k >= 0, `topK must be a non-negative integer (got ${String(k)})`);
  const p = o.topP ?? 1;
  check(finite(p) && p > 0 && p <= 1, `topP must be in (0, 1] (got ${String(p)})`);
  const minP = o.minP ?? 0;
  check(finite(minP) && minP >= 0 && minP <= 1, `minP must be in [0, 1] (got ${String(minP)})`);
  const typ = o.typicalP ?? 1;
  check(finite(typ) && typ > 0 && typ <= 1, `typicalP must be in (0, 1] (got ${String(typ)})`);
  const rep = o.repetitionPenalty ?? 1;
  check(finite(rep) && rep > 0, `repetitionPenalty must be a positive number (got ${String(rep)})`);
  check(finite(o.presencePenalty ?? 0), `presencePenalty must be a finite number (got ${String(o.presencePenalty)})`);
  check(finite(o.frequencyPenalty ?? 0), `frequencyPenalty must be a finite number (got ${String(o.frequencyPenalty)})`);
  const w = o.penaltyWindow ?? 64;
  check(Number.isSafeInteger(w) && w >= 0, `penaltyWindow must be a non-negative integer (got ${String(w)})`);
  if (o.seed !== undefined) check(Number.isSafeInteger(o.seed), `seed must be an integer (got ${String(o.seed)})`);
  if (o.logitBias !== undefined) {
    check(typeof o.logitBias === 'object' && o.logitBias !== null, 'logitBias must be an object of token id -> bias');
    for (const [id, bias] of Object.entries(o.logitBias)) {
      check(/^\d+$/.test(id), `logitBias: '${id}' is not a token id`);
      check(typeof bias === 'number' && !Number.isNaN(bias) && bias !== Infinity, `logitBias[${id}] must be a number or -Infinity (got ${String(bias)})`);
    }
  }
}

/** Index of the largest value; the lowest index wins a tie. */
export function argmax(values: ArrayLike<number>): number {
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

/** log-softmax of logits, in float64. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - lse;
  return out;
}

/** Applies logit bias and the penalties in place. */
export function applyPenalties(logits: Float32Array, recent: ArrayLike<number>, o: SamplerOptions): void {
  if (o.logitBias) for (const [id, bias] of Object.entries(o.logitBias)) if (Number(id) < logits.length) logits[Number(id)]! += bias;
  const rep = o.repetitionPenalty ?? 1;
  const presence = o.presencePenalty ?? 0;
  const frequency = o.frequencyPenalty ?? 0;
  if (recent.length === 0 || (rep === 1 && presence === 0 && frequency === 0)) return;
  const counts = new Map<number, number>();
  for (let i = 0; i < recent.length; i++) counts.set(recent[i]!, (counts.get(recent[i]!) ?? 0) + 1);
  for (const [id, count] of counts) {
    if (id < 0 || id >= logits.length) continue;
    let l = logits[id]!;
    if (rep !== 1) l = l > 0 ? l / rep : l * rep;
    logits[id] = l - presence - frequency * count;
  }
}

/** The tokens that may be drawn and their probabilities (summing to 1), after
 * temperature and the top-k, typical-p, top-p and min-p filters. temperature > 0. */
export function candidates(logits: ArrayLike<number>, o: SamplerOptions): { ids: Int32Array; probs: Float64Array } {
  const n = logits.length;
  const t = o.temperature ?? 1;
  // softmax(logits / t)
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]!);
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += p[i] = Math.exp((logits[i]! - max) / t);
  let ids = Int32Array.from({ length: n }, (_, i) => i).filter((i) => p[i]! > 0);
  for (const i of ids) p[i]! /= sum;
  // Most likely first, lowest id first among equals.
  ids.sort((a, b) => p[b]! - p[a]! || a - b);

  const renormalize = () => {
    let s = 0;
    for (const i of ids) s += p[i]!;
    for (const i of ids) p[i]! /= s;
  };
  const k = o.topK ?? 0;
  if (k > 0 && k < ids.length) {
    ids = ids.slice(0, k);
    renormalize();
  }
  const typical = o.typicalP ?? 1;
  if (typical < 1) {
    let entropy = 0;
    for (const i of ids) entropy -= p[i]! * Math.log(p[i]!);
    const byTypicality = Int32Array.from(ids).sort((a, b) => Math.abs(-Math.log(p[a]!) - entropy) - Math.abs(-Math.log(p[b]!) - entropy) || a - b);
    let mass = 0;
    let keep = 0;
    while (keep < byTypicality.length && mass < typical) mass += p[byTypicality[keep++]!]!;
    const kept = new Set(byTypicality.slice(0, Math.max(1, keep)));
    ids = ids.filter((i) => kept.has(i));
    renormalize();
  }
  const top = o.topP ?? 1;
  if (top < 1) {
    let mass = 0;
    let keep = 0;
    while (keep < ids.length && mass < top) mass += p[ids[keep++]!]!;
    ids = ids.slice(0, Math.max(1, keep));
    renormalize();
  }
  const minP = o.minP ?? 0;
  if (minP > 0) {
    const floor = p[ids[0]!]! * minP;
    ids = ids.filter((i) => p[i]! >= floor);
    renormalize();
  }
  return { ids, probs: Float64Array.from(ids, (i) => p[i]!) };
}

/** The most logits a step hands back per row for top-k decoding (the engine's limit). */
const MAX_TOP = 64;

export class Sampler {
  readonly #options: SamplerOptions;
  readonly #random: Random;
  readonly #window: number;
  readonly #recent: number[] = [];

  constructor(options: SamplerOptions = {}) {
    checkSamplerOptions(options);
    this.#options = options;
    this.#window = options.penaltyWindow ?? 64;
    this.#random = new Random(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  }

  /** How many of the largest logits decide every choice (1 when greedy; topK when drawing
   * from the top k), or 0 when the whole row is needed (penalties, bias, no top-k). The
   * engine can then find them where the logits are and hand back only those. */
  get top(): number {
    const o = this.#options;
    if ((o.repetitionPenalty ?? 1) !== 1 || (o.presencePenalty ?? 0) !== 0 || (o.frequencyPenalty ?? 0) !== 0 || Object.keys(o.logitBias ?? {}).length > 0) return 0;
    if ((o.temperature ?? 0) === 0) return 1;
    const k = o.topK ?? 0;
    return k > 0 && k <= MAX_TOP ? k : 0;
  }

  /** Picks the next token from the `top` largest logits (values, largest first) and their ids. */
  sampleTop(values: Float32Array, ids: Int32Array): number {
    const token = (this.#options.temperature ?? 0) === 0 ? ids[0]! : ids[this.#draw(values, true)]!;
    this.observe([token]);
    return token;
  }

  /** Records tokens the penalties should count (the prompt, then each choice). */
  observe(tokens: ArrayLike<number>): void {
    for (let i = 0; i < tokens.length; i++) this.#recent.push(tokens[i]!);
    if (this.#recent.length > this.#window) this.#recent.splice(0, this.#recent.length - this.#window);
  }

  /** Picks the next token; `logits` is modified (bias and penalties). */
  sample(logits: Float32Array): number {
    applyPenalties(logits, this.#window > 0 ? this.#recent : [], this.#options);
    const token = (this.#options.temperature ?? 0) === 0 ? argmax(logits) : this.#draw(logits, false);
    // Every token banned (logitBias -Infinity, or a constraint): nothing can be chosen.
    if (token === undefined || !(logits[token]! > -Infinity)) throw new RangeError('every token is banned (logitBias of -Infinity or a constraint): there is no token to choose');
    this.observe([token]);
    return token;
  }

  /** A draw from the candidates of `logits` (with `top`, the top k logits alone: the filter
   * of top k is already applied). */
  #draw(logits: Float32Array, top: boolean): number {
    const { ids, probs } = candidates(logits, top ? { ...this.#options, topK: 0 } : this.#options);
    let u = this.#random.next();
    for (let j = 0; j < ids.length; j++) {
      u -= probs[j]!;
      if (u < 0) return ids[j]!;
    }
    return ids[ids.length - 1]!;
  }
}
