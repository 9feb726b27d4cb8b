// Sampling settings against plain references written here: which tokens each filter
// keeps, the penalty formulas, seeded determinism, and a chi-square test that
// temperature-1 sampling follows softmax.
import { describe, expect, it } from 'vitest';

import { applyPenalties, candidates, checkSamplerOptions, Sampler } from '../lib/generate/sampler.js';

function randomLogits(n: number, seed: number): Float32Array {
  let x = seed;
  const r = () => ((x = (x * 1103515245 + 12345) % 2 ** 31), x / 2 ** 31);
  return Float32Array.from({ length: n }, () => (r() - 0.5) * 8);
}

/** softmax in float64 */
function softmax(logits: ArrayLike<number>, t = 1): number[] {
  const m = Math.max(...Array.from(logits));
  const e = Array.from(logits, (l) => Math.exp((l - m) / t));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

const order = (p: number[]) => p.map((_, i) => i).sort((a, b) => p[b]! - p[a]! || a - b);

describe('filters', () => {
  const logits = randomLogits(200, 7);
  const p = softmax(logits);

  it('top-k keeps exactly the k most likely', () => {
    for (const k of [1, 5, 17, 199]) {
      const { ids, probs } = candidates(logits, { temperature: 1, topK: k });
      expect(ids.length).toBe(k);
      expect([...ids].sort((a, b) => a - b)).toEqual(order(p).slice(0, k).sort((a, b) => a - b));
      expect(probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    }
  });

  it('top-p keeps the smallest set of most likely tokens with mass >= p', () => {
    for (const topP of [0.1, 0.5, 0.9, 0.99]) {
      const { ids } = candidates(logits, { temperature: 1, topP });
      const kept = new Set(ids);
      const mass = [...kept].reduce((a, i) => a + p[i]!, 0);
      expect(mass).toBeGreaterThanOrEqual(topP - 1e-9);
      // dropping the least likely kept token would fall below p: it is the smallest set
      const least = Math.min(...[...kept].map((i) => p[i]!));
      expect(mass - least).toBeLessThan(topP);
      // and it holds the most likely tokens
      expect([...kept].sort((a, b) => a - b)).toEqual(order(p).slice(0, kept.size).sort((a, b) => a - b));
    }
  });

  it('min-p drops tokens below min-p times the best', () => {
    const minP = 0.2;
    const { ids } = candidates(logits, { temperature: 1, minP });
    const best = Math.max(...p);
    expect([...ids].sort((a, b) => a - b)).toEqual(p.map((_, i) => i).filter((i) => p[i]! >= best * minP));
  });

  it('typical-p keeps the tokens whose surprise is closest to the entropy, up to the mass', () => {
    const typicalP = 0.5;
    const { ids } = candidates(logits, { temperature: 1, typicalP });
    const h = -p.reduce((a, q) => a + q * Math.log(q), 0);
    const byTypical = p.map((_, i) => i).sort((a, b) => Math.abs(-Math.log(p[a]!) - h) - Math.abs(-Math.log(p[b]!) - h) || a - b);
    let mass = 0;
    const want: number[] = [];
    for (const i of byTypical) {
      if (mass >= typicalP) break;
      want.push(i);
      mass += p[i]!;
    }
    expect([...ids].sort((a, b) => a - b)).toEqual(want.sort((a, b) => a - b));
  });

  it('temperature rescales the distribution', () => {
    const { ids, probs } = candidates(logits, { temperature: 0.5 });
    const want = softmax(logits, 0.5);
    ids.forEach((id, j) => expect(probs[j]).toBeCloseTo(want[id]!, 12));
  });
});

describe('penalties', () => {
  it('repetition, presence and frequency follow their formulas over the window', () => {
    const logits = Float32Array.from([2, -1, 0.5, 3, -2]);
    const recent = [0, 1, 1, 4];
    const out = Float32Array.from(logits);
    applyPenalties(out, recent, { repetitionPenalty: 1.5, presencePenalty: 0.25, frequencyPenalty: 0.1, logitBias: { 2: 1, 3: -Infinity } });
    const want = [2 / 1.5 - 0.25 - 0.1, -1 * 1.5 - 0.25 - 0.2, 0.5 + 1, -Infinity, -2 * 1.5 - 0.25 - 0.1];
    want.forEach((w, i) => expect(out[i]).toBeCloseTo(w, 6));
  });

  it('the sampler counts only the last penaltyWindow tokens', () => {
    const s = new Sampler({ repetitionPenalty: 100, penaltyWindow: 2 });
    s.observe([0, 1, 2]); // 0 falls out of the window
    // token 0 is best and not penalized; tokens 1 and 2 are penalized
    expect(s.sample(Float32Array.from([1, 1.5, 1.5]))).toBe(0);
    const t = new Sampler({ repetitionPenalty: 100, penaltyWindow: 3 });
    t.observe([0, 1, 2]);
    expect(t.sample(Float32Array.from([1, 1.5, 1.5]))).toBe(1);
  });
});

describe('sampling', () => {
  it('is deterministic for a seed', () => {
    const logits = randomLogits(500, 3);
    const draw = (seed: number) => {
      const s = new Sampler({ temperature: 1, seed });
      return Array.from({ length: 50 }, () => s.sample(Float32Array.from(logits)));
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
  });

  it('follows softmax at temperature 1 (chi-square)', () => {
    const logits = Float32Array.from([1.5, 1, 0.5, 0, -0.5, -1, -1.5, -2]);
    const p = softmax(logits);
    const n = 40_000;
    const counts = new Array<number>(p.length).fill(0);
    const s = new Sampler({ temperature: 1, seed: 1234 });
    for (let i = 0; i < n; i++) counts[s.sample(Float32Array.from(logits))]!++;
    const chi2 = counts.reduce((a, c, i) => a + (c - n * p[i]!) ** 2 / (n * p[i]!), 0);
    // 7 degrees of freedom: P(chi2 > 24.32) = 0.001
    expect(chi2).toBeLessThan(24.32);
  });

  it('is greedy at temperature 0, lowest id on ties', () => {
    expect(new Sampler({}).sample(Float32Array.from([0, 3, 3, 1]))).toBe(1);
  });
});

describe('validation', () => {
  it.each([
    [{ temperature: -1 }, /temperature/],
    [{ temperature: NaN }, /temperature/],
    [{ topP: 0 }, /topP/],
    [{ topP: 1.5 }, /topP/],
    [{ topK: -1 }, /topK/],
    [{ minP: 2 }, /minP/],
    [{ typicalP: 0 }, /typicalP/],
    [{ repetitionPenalty: 0 }, /repetitionPenalty/],
    [{ presencePenalty: Infinity }, /presencePenalty/],
    [{ penaltyWindow: 1.5 }, /penaltyWindow/],
    [{ seed: 0.5 }, /seed/],
    [{ logitBias: { x: 1 } }, /logitBias/],
    [{ logitBias: { 3: NaN } }, /logitBias/],
  ])('%o is rejected', (options, pattern) => {
    expect(() => checkSamplerOptions(options as never)).toThrow(pattern);
  });
});
