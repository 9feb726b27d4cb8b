// EXL2 layers and inputs for the kernel tests (test/exl2.test.ts, and test/arm64.test.ts,
// which runs the same cases on the arm64 binary): random layers, the weights as the kernels
// define them, and a case whose every float step is exact.
import { expect } from 'vitest';

import { layoutGroups, packExl2, type Exl2Codes, type Exl2Group, type Exl2Tensors } from '../../lib/index.js';
import { fp16 } from './exl2-reference.js';

export function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

/** Random codes, scales and permutation for a layout. */
export function randomLayer(n: number, k: number, groups: Exl2Group[], seed: number): Exl2Codes {
  const r = rng(seed);
  const perm = Int32Array.from({ length: k }, (_, i) => i);
  for (let i = k - 1; i > 0; i--) {
    const j = r(i + 1);
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  const codes = new Uint8Array(k * n);
  let row = 0;
  for (const g of groups) {
    for (let j = 0; j < g.rows * n; j++) codes[row * n + j] = r(2 ** g.bits);
    row += g.rows;
  }
  // maxima from 0.001 to 0.05, some giving subnormal m = max / 256
  const scaleMax = Float64Array.from(groups, () => fp16(0.001 + r(1000) * 0.000049));
  return { inFeatures: k, outFeatures: n, groups, perm, codes, scaleCodes: Uint8Array.from({ length: groups.length * n }, () => r(16)), scaleMax };
}

/** The arrays of a packed layer as the addon's exl2Matmul takes them. */
export const layerArrays = (t: Exl2Tensors, n: number, k: number) => ({ qWeight: new Int32Array(t.q_weight.data.buffer), qInvperm: t.q_invperm.data, qScale: new Int32Array(t.q_scale.data.buffer), qScaleMax: t.q_scale_max.data, qGroups: t.q_groups.data, n, k });

/** w[c][j]: column c, stored row j, as the kernels define it: (q - z) * fp16((s + 1)^2 * m). */
export function kernelWeights(layer: Exl2Codes): number[][] {
  const n = layer.outFeatures;
  const w: number[][] = [];
  for (let c = 0; c < n; c++) {
    w.push([]);
    let row = 0;
    layer.groups.forEach((g, gi) => {
      const m = fp16(layer.scaleMax[gi]! / 256), z = 2 ** (g.bits - 1);
      const scale = fp16((layer.scaleCodes[gi * n + c]! + 1) ** 2 * m);
      for (let j = row; j < row + g.rows; j++) w[c]!.push((layer.codes[j * n + c]! - z) * scale);
      row += g.rows;
    });
  }
  return w;
}

// Inputs whose every float step is exact, so that each kernel's output is its integer sums
// to the last bit: segment scales 2^e (each segment's largest input is 127 * 2^e, the others
// integers and halves times 2^e: the halves are ties, rounded to even), group maxima 1
// (m = 2^-8) and scale codes 0 or 1, and every partial sum a multiple of 2^-9 below 2^15
// in magnitude (checked), where float32 is exact. 200 columns, 1088 rows, widths 8, 6, 4, 2.
export function exactCase(rows: number) {
  const n = 200, k = 1088;
  const segments = k / 32;
  const r = rng(4242);
  const layer = randomLayer(n, k, layoutGroups(k, [[0.25, 8], [0.25, 6], [0.25, 4], [0.25, 2]], 64), 4243);
  layer.scaleMax.fill(1);
  layer.scaleCodes.forEach((_, i) => (layer.scaleCodes[i] = r(2)));
  const x = new Float32Array(rows * k);
  const xq = new Int8Array(rows * k); // stored-row order
  const scales = new Float32Array(rows * segments);
  const evenRound = (v: number) => (Math.abs(v % 1) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v));
  for (let row = 0; row < rows; row++)
    for (let s = 0; s < segments; s++) {
      const e = r(2) - 1, top = 32 * s + r(32);
      scales[row * segments + s] = row === 1 ? 0 : 2 ** e; // row 1: all zeros
      for (let j = 32 * s; j < 32 * s + 32; j++) {
        const v = row === 1 ? 0 : j === top ? (r(2) ? 127 : -127) : (r(61) - 30) / 2;
        x[row * k + layer.perm[j]!] = v * 2 ** e;
        xq[row * k + j] = evenRound(v);
      }
    }
  const w = kernelWeights(layer);
  const want = new Float64Array(rows * n);
  for (let row = 0; row < rows; row++)
    for (let c = 0; c < n; c++) {
      let total = 0, size = 0;
      for (let j = 0; j < k; j++) {
        const term = w[c]![j]! * xq[row * k + j]! * scales[row * segments + Math.floor(j / 32)]!;
        total += term;
        size += Math.abs(term);
      }
      expect(size, 'partial sums exact in float32').toBeLessThan(2 ** 15);
      want[row * n + c] = total;
    }
  return { layer: layerArrays(packExl2(layer), n, k), x, rows, xq, scales, want };
}
