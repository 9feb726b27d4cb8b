// The quantizer's math: GPTQ (native) against a plain float64 implementation written here
// from the spec (§6.7), the dequantized weights it propagates against the format's own
// decoding of what it writes, the recipe layouts and bit accounting against the spec's
// worked examples, and the budget optimizer against exhaustive search.
import { describe, expect, it } from 'vitest';

import { ATTENTION_CANDIDATES, HEAD_RECIPES, MLP_CANDIDATES, optimize, packExl2, parseRecipe, recipeBits, recipeGroups, type Exl2Width } from '../lib/index.js';
import { fromFloat16Bits } from '../lib/formats/float16.js';
import { native } from '../lib/native.js';
import { fp16, referenceDequantize } from './helpers/exl2-reference.js';
import { xorshift as rng } from './helpers/random.js';


/** A weight with outliers, and a Hessian X^T X from correlated inputs with uneven scales. */
function problem(n: number, k: number, seed: number) {
  const r = rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  const w = new Float32Array(n * k).map(() => 0.02 * gauss() * (r() < 0.01 ? 8 : 1));
  const rows = 4 * k;
  const scale = Float64Array.from({ length: k }, () => 0.2 + 2 * r());
  const x = new Float64Array(rows * k);
  for (let t = 0; t < rows; t++) {
    const common = gauss();
    for (let i = 0; i < k; i++) x[t * k + i] = scale[i]! * (gauss() + 0.5 * common);
  }
  const h = new Float64Array(k * k);
  for (let t = 0; t < rows; t++)
    for (let i = 0; i < k; i++) {
      const xi = x[t * k + i]!;
      for (let j = 0; j < k; j++) h[i * k + j] = h[i * k + j]! + xi * x[t * k + j]!;
    }
  return { w, h };
}

// ---- the float64 reference of §6.7 ----

function cholesky(a: Float64Array, k: number): Float64Array {
  const l = new Float64Array(k * k);
  for (let j = 0; j < k; j++) {
    let d = a[j * k + j]!;
    for (let p = 0; p < j; p++) d -= l[j * k + p]! ** 2;
    l[j * k + j] = Math.sqrt(d);
    for (let i = j + 1; i < k; i++) {
      let s = a[i * k + j]!;
      for (let p = 0; p < j; p++) s -= l[i * k + p]! * l[j * k + p]!;
      l[i * k + j] = s / l[j * k + j]!;
    }
  }
  return l;
}

/** H^-1 from its Cholesky factor: solve L Y = I, then L^T X = Y. */
function inverse(a: Float64Array, k: number): Float64Array {
  const l = cholesky(a, k);
  const inv = new Float64Array(k * k);
  for (let c = 0; c < k; c++) {
    const y = new Float64Array(k);
    for (let i = 0; i < k; i++) {
      let s = i === c ? 1 : 0;
      for (let p = 0; p < i; p++) s -= l[i * k + p]! * y[p]!;
      y[i] = s / l[i * k + i]!;
    }
    for (let i = k - 1; i >= 0; i--) {
      let s = y[i]!;
      for (let p = i + 1; p < k; p++) s -= l[p * k + i]! * inv[p * k + c]!;
      inv[i * k + c] = s / l[i * k + i]!;
    }
  }
  return inv;
}

/** Round half to even. */
const rint = (v: number) => {
  const f = Math.floor(v), d = v - f;
  return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
};

function referenceGptq(w: Float32Array, n: number, k: number, h: Float64Array, groups: { bits: number; rows: number }[]) {
  const perm = Array.from({ length: k }, (_, i) => i).sort((a, b) => h[b * k + b]! - h[a * k + a]! || a - b);
  let mean = 0;
  for (let i = 0; i < k; i++) mean += h[i * k + i]! / k;
  const damp = Math.max(0.12 * mean, 1e-5);
  const hp = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) hp[i * k + j] = h[perm[i]! * k + perm[j]!]! + (i === j ? damp : 0);
  // U: the upper Cholesky factor of H^-1, i.e. the transpose of the lower factor.
  const l2 = cholesky(inverse(hp, k), k);
  const u = (i: number, j: number) => l2[j * k + i]!;
  const wt = Array.from({ length: k }, (_, j) => Float64Array.from({ length: n }, (_, c) => w[c * k + perm[j]!]!));
  const codes = new Uint8Array(k * n), deq = new Float64Array(n * k);
  const scaleMax: number[] = [];
  let a = 0;
  for (const g of groups) {
    const b = a + g.rows, maxq = 2 ** g.bits - 1, z = 2 ** (g.bits - 1);
    const base = Array.from({ length: n }, (_, c) => {
      let m = 0;
      for (let r = a; r < b; r++) m = Math.max(m, Math.abs(wt[r]![c]!));
      return (m + 1e-12) / (maxq / 2);
    });
    const top = Math.max(...base);
    const code = base.map((v) => Math.min(16, Math.max(1, rint(16 * Math.sqrt(v / top)))));
    const scalesFor = (max: number) => code.map((c) => fp16(c * c * fp16(max / 256)));
    let best = -1, bestErr = Infinity, bestMax = 0;
    for (let s = 0; s < 97; s++) {
      const p = Math.fround(Math.fround(0.7) + Math.fround(s * Math.fround(0.5 / 96)));
      const max = Math.min(fp16(Math.fround(Math.fround(top) * p)), 65504);
      const sc = scalesFor(max);
      let err = 0;
      for (let r = a; r < b; r++)
        for (let c = 0; c < n; c++) {
          const q = sc[c]! > 0 ? Math.min(maxq - z, Math.max(-z, rint(wt[r]![c]! / sc[c]!))) : 0;
          err += Math.abs(q * sc[c]! - wt[r]![c]!) ** 3.5;
        }
      if (err < bestErr) (best = s), (bestErr = err), (bestMax = max);
    }
    void best;
    scaleMax.push(bestMax);
    const sc = scalesFor(bestMax);
    const e = Array.from({ length: b - a }, () => new Float64Array(n));
    for (let r = a; r < b; r++) {
      for (let c = 0; c < n; c++) {
        const q = Math.min(maxq, Math.max(0, rint(wt[r]![c]! / sc[c]!) + z));
        codes[r * n + c] = q;
        const d = fp16((q - z) * sc[c]!);
        deq[c * k + perm[r]!] = d;
        e[r - a]![c] = (wt[r]![c]! - d) / u(r, r);
      }
      for (let r2 = r + 1; r2 < k; r2++) for (let c = 0; c < n; c++) wt[r2]![c]! -= u(r, r2) * e[r - a]![c]!;
    }
    a = b;
  }
  return { perm, u, codes, deq, scaleMax };
}

/** tr((W - Q) H (W - Q)^T): the layer's output error over the calibration inputs. */
function outputError(w: ArrayLike<number>, q: ArrayLike<number>, n: number, k: number, h: Float64Array): number {
  let total = 0;
  const d = new Float64Array(k);
  for (let c = 0; c < n; c++) {
    for (let i = 0; i < k; i++) d[i] = w[c * k + i]! - q[c * k + i]!;
    for (let i = 0; i < k; i++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += h[i * k + j]! * d[j]!;
      total += d[i]! * s;
    }
  }
  return total;
}

const layoutOf = (groups: { bits: number; rows: number }[]) => Int32Array.from(groups.flatMap((g) => [g.bits, g.rows]));

describe('GPTQ against a float64 implementation of the spec', () => {
  const n = 48, k = 128;
  const { w, h } = problem(n, k, 7);
  const groups = recipeGroups(parseRecipe('0.25:5/32 + 0.75:3/32'), k);
  const q = native().gptqQuantize(w, n, k, h, layoutOf(groups), true, 2);
  const ref = referenceGptq(w, n, k, h, groups);

  it('orders inputs by the Hessian diagonal and factors the damped inverse', () => {
    expect(Array.from(q.perm)).toEqual(ref.perm);
    let worst = 0, largest = 0;
    for (let i = 0; i < k; i++)
      for (let j = i; j < k; j++) {
        worst = Math.max(worst, Math.abs(q.u[i * k + j]! - ref.u(i, j)));
        largest = Math.max(largest, Math.abs(ref.u(i, j)));
      }
    expect(worst / largest).toBeLessThan(1e-5);
  });

  it('picks the same scales and codes, and keeps the same output error', () => {
    expect(Array.from(q.scaleMax, fromFloat16Bits)).toEqual(ref.scaleMax);
    let same = 0;
    for (let i = 0; i < q.codes.length; i++) same += q.codes[i] === ref.codes[i] ? 1 : 0;
    // float32 against float64 error feedback: a code on a rounding boundary may differ
    expect(same / q.codes.length).toBeGreaterThan(0.995);
    const ours = outputError(w, Array.from(q.weight, fromFloat16Bits), n, k, h);
    const theirs = outputError(w, ref.deq, n, k, h);
    expect(Math.abs(ours / theirs - 1)).toBeLessThan(0.01);
  });

  it('does better than rounding to nearest with the same scales', () => {
    const rtn = native().gptqQuantize(w, n, k, h, layoutOf(groups), false, 2);
    expect(Array.from(rtn.scaleMax.subarray(0, 1))).toEqual(Array.from(q.scaleMax.subarray(0, 1)));  // the first group sees the same weights
    const gptq = outputError(w, Array.from(q.weight, fromFloat16Bits), n, k, h);
    const plain = outputError(w, Array.from(rtn.weight, fromFloat16Bits), n, k, h);
    expect(gptq).toBeLessThan(0.8 * plain);
  });

  it('propagates exactly the weights that its files decode to', () => {
    const packed = packExl2({ inFeatures: k, outFeatures: n, groups: groups.map((g) => ({ bits: g.bits as Exl2Width, rows: g.rows })), perm: q.perm, codes: q.codes, scaleCodes: q.scaleCodes, scaleMax: Float64Array.from(q.scaleMax, fromFloat16Bits) });
    const decoded = referenceDequantize({ qWeight: packed.q_weight.data, qInvperm: packed.q_invperm.data, qScale: packed.q_scale.data, qScaleMax: Float64Array.from(packed.q_scale_max.data, fromFloat16Bits), qGroups: packed.q_groups.data, K: k, N: n });
    expect(Array.from(q.weight, fromFloat16Bits)).toEqual(Array.from(decoded));
  });

  it('gives the same result on any number of threads', () => {
    const one = native().gptqQuantize(w, n, k, h, layoutOf(groups), true, 1);
    expect(Buffer.from(one.codes).equals(Buffer.from(q.codes))).toBe(true);
    expect(Buffer.from(one.weight.buffer).equals(Buffer.from(q.weight.buffer))).toBe(true);
  });

  it('rejects layouts the format cannot store', () => {
    const bad = (layout: number[]) => () => native().gptqQuantize(w, n, k, h, Int32Array.from(layout), true, 1);
    expect(bad([4, 64, 5, 64])).toThrow(/order 8, 6, 5, 4, 3, 2/);
    expect(bad([4, 100, 3, 28])).toThrow(/multiple of 32/);
    expect(bad([4, 64])).toThrow(/cover 64 rows/);
    expect(bad([7, 128])).toThrow(/width 7/);
  });

  it('handles dead inputs and an all-zero weight', () => {
    const hz = h.slice();
    for (let j = 0; j < k; j++) (hz[5 * k + j] = 0), (hz[j * k + 5] = 0);
    const zero = native().gptqQuantize(new Float32Array(n * k), n, k, hz, layoutOf(groups), true, 2);
    expect(zero.weight.every((b) => fromFloat16Bits(b) === 0)).toBe(true);
    const nan = w.slice();
    nan[3] = NaN;
    expect(() => native().gptqQuantize(nan, n, k, h, layoutOf(groups), true, 1)).toThrow(/not finite/);
  });
});

describe('recipes', () => {
  it('splits rows as the spec works them out', () => {
    // §3.3: K = 4096, 0.1:4b + 0.9:3b in groups of 32: 13 four-bit groups, then 115 three-bit groups
    const g = recipeGroups(parseRecipe('0.1:4/32 + 0.9:3/32'), 4096);
    expect(g.filter((x) => x.bits === 4).length * 32).toBe(416);
    expect(g.filter((x) => x.bits === 3).reduce((a, x) => a + x.rows, 0)).toBe(3680);
    // Appendix A: K = 11008 with .05:8/32 + .1:4/128 + .85:3/128
    const d = recipeGroups(parseRecipe('.05:8/32 + .1:4/128 + .85:3/128'), 11008);
    expect(d.filter((x) => x.bits === 8).length).toBe(18);
    expect(d.filter((x) => x.bits === 4).length).toBe(9);
    const three = d.filter((x) => x.bits === 3);
    expect(three.length).toBe(73);
    expect(three.at(-1)!.rows).toBe(64);
  });

  it('counts bits as §6.5 does', () => {
    // uniform 4-bit, 4096 x 4096: 4.039 bpw in groups of 128, 4.133 in groups of 32
    expect(recipeBits(parseRecipe('1:4/128'), 4096, 4096) / 4096 ** 2).toBeCloseTo(4.039, 3);
    expect(recipeBits(parseRecipe('1:4/32'), 4096, 4096) / 4096 ** 2).toBeCloseTo(4.133, 3);
    // §5.2: the head recipes for K = 4096
    const head = (b: number) => recipeBits(HEAD_RECIPES[b]!, 4096, 32000) / (4096 * 32000);
    expect(head(6)).toBeCloseTo(6.34, 2);
    expect(head(8)).toBeCloseTo(8.03, 2);
  });

  it('every candidate lays out on the shapes of the bundled model and of Mistral 7B', () => {
    for (const k of [256, 768, 4096, 14336])
      for (const row of [...ATTENTION_CANDIDATES, ...MLP_CANDIDATES])
        for (const r of row) expect(recipeGroups(r, k).reduce((a, g) => a + g.rows, 0)).toBe(k);
  });
});

describe('budget optimizer', () => {
  const objective = (slots: { bits: number; error: number }[][], pick: number[]) => pick.reduce((a, o, s) => a + slots[s]![o]!.error ** 2, 0);
  const bitsOf = (slots: { bits: number; error: number }[][], pick: number[]) => pick.reduce((a, o, s) => a + slots[s]![o]!.bits, 0);
  function randomSlots(seed: number, count: number, options: number) {
    const r = rng(seed);
    return Array.from({ length: count }, () => {
      let bits = 1000 + Math.floor(r() * 500), error = 0.2 + r() * 0.2;
      return Array.from({ length: options }, () => {
        bits += 100 + Math.floor(r() * 900);
        error *= 0.4 + r() * 0.5;
        return { bits, error };
      });
    });
  }
  function bruteForce(slots: { bits: number; error: number }[][], budget: number): number {
    let best = Infinity;
    const pick = slots.map(() => 0);
    const walk = (s: number, bits: number, obj: number) => {
      if (bits > budget) return;
      if (s === slots.length) return void (best = Math.min(best, obj));
      slots[s]!.forEach((o, i) => {
        pick[s] = i;
        walk(s + 1, bits + o.bits, obj + o.error ** 2);
      });
    };
    walk(0, 0, 0);
    return best;
  }

  it('never exceeds the budget and finds the optimum of exhaustive search', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const slots = randomSlots(seed, 6, 5);
      const least = slots.reduce((a, s) => a + s[0]!.bits, 0), most = slots.reduce((a, s) => a + s.at(-1)!.bits, 0);
      const budget = Math.floor(least + (most - least) * rng(seed * 7)());
      const pick = optimize(slots, budget);
      expect(bitsOf(slots, pick)).toBeLessThanOrEqual(budget);
      // exact up to the discretisation of the budget (1e-5 of it per slot)
      expect(objective(slots, pick)).toBeLessThanOrEqual(bruteForce(slots, budget * (1 - 6e-5)) + 1e-12);
      expect(objective(slots, pick)).toBeGreaterThanOrEqual(bruteForce(slots, budget) - 1e-12);
    }
  });

  it('lands near the budget on a model-sized problem and refuses an impossible one', () => {
    const slots = randomSlots(99, 96, 19);
    const least = slots.reduce((a, s) => a + s[0]!.bits, 0), most = slots.reduce((a, s) => a + s.at(-1)!.bits, 0);
    const budget = Math.floor((least + most) / 2);
    const used = bitsOf(slots, optimize(slots, budget));
    expect(used).toBeLessThanOrEqual(budget);
    expect(used / budget).toBeGreaterThan(0.995);
    expect(() => optimize(slots, least - 1)).toThrow(/smallest option/);
  });
});
