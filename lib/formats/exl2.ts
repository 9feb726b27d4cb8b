// EXL2 (ExLlamaV2) layers: the writer that packs codes, scales, group table and
// permutation into the stored tensors, and round-to-nearest quantization to make them.
// Reading is done by the engine (native/exl2/loader.cc) from the mapped files.
import { roundFloat16, toFloat16Bits } from './float16.js';

/** Allowed widths, in the order groups must come along the stored rows. */
export const EXL2_WIDTHS = [8, 6, 5, 4, 3, 2] as const;
export type Exl2Width = (typeof EXL2_WIDTHS)[number];

/** One group: consecutive stored rows of one width. */
export interface Exl2Group {
  bits: Exl2Width;
  rows: number;
}

/** A quantized layer before packing. Stored row j holds input channel perm[j]. */
export interface Exl2Codes {
  inFeatures: number;
  outFeatures: number;
  groups: Exl2Group[];
  perm: Int32Array;
  /** codes[j * outFeatures + n]: the code of stored row j, output column n (0 .. 2^bits - 1). */
  codes: Uint8Array;
  /** scaleCodes[g * outFeatures + n]: 0..15. */
  scaleCodes: Uint8Array;
  /** Per group maximum scale (an fp16 value). */
  scaleMax: Float64Array;
}

/** The stored tensors of one layer (names: `<key>.q_weight` etc.). */
export interface Exl2Tensors {
  q_weight: { shape: [number, number]; data: Uint32Array };
  q_invperm: { shape: [number]; data: Int32Array };
  q_scale: { shape: [number, number]; data: Uint32Array };
  q_scale_max: { shape: [number]; data: Uint16Array };
  q_groups: { shape: [number]; data: Int16Array };
}

/** The dtypes each stored tensor of a layer may have, as ExLlamaV2's loader takes them
 * (it casts q_invperm to int16, so I16 loads as well as the I32 the converter writes). */
export const EXL2_TENSOR_DTYPES: Readonly<Record<keyof Exl2Tensors, readonly string[]>> = {
  q_weight: ['I32'],
  q_invperm: ['I32', 'I16'],
  q_scale: ['I32'],
  q_scale_max: ['F16'],
  q_groups: ['I16'],
};

/** Why a stored tensor `<key>.<part>` of dtype `dtype` cannot be an EXL2 layer's, or null. */
export function exl2DtypeProblem(part: keyof Exl2Tensors, dtype: string): string | null {
  const allowed = EXL2_TENSOR_DTYPES[part];
  return allowed.includes(dtype) ? null : `has dtype ${dtype}; an EXL2 ${part} must be ${allowed.join(' or ')}`;
}

function chunkRows(bits: number): number {
  return bits === 8 ? 4 : bits === 4 ? 8 : bits === 2 || bits === 6 ? 16 : 32;
}

/** Checks a group layout: widths in the stored order, whole chunks, rows adding up to K. */
export function checkGroups(groups: Exl2Group[], inFeatures: number): void {
  let rank = 0;
  let rows = 0;
  for (const [i, g] of groups.entries()) {
    const r = EXL2_WIDTHS.indexOf(g.bits);
    if (r < 0) throw new RangeError(`group ${i}: width ${g.bits} is not one of ${EXL2_WIDTHS.join(', ')}`);
    if (r < rank) throw new RangeError(`group ${i}: widths must come in the order ${EXL2_WIDTHS.join(', ')}`);
    rank = r;
    if (!Number.isSafeInteger(g.rows) || g.rows <= 0 || g.rows % 32 !== 0) throw new RangeError(`group ${i}: rows must be a positive multiple of 32 (got ${g.rows})`);
    rows += g.rows;
  }
  if (rows !== inFeatures) throw new RangeError(`groups cover ${rows} rows, in_features is ${inFeatures}`);
}

/** Packs a quantized layer into the tensors ExLlamaV2 stores. */
export function packExl2(c: Exl2Codes): Exl2Tensors {
  const { inFeatures: K, outFeatures: N, groups } = c;
  checkGroups(groups, K);
  const np = Math.ceil(N / 32) * 32;
  const qrows = groups.reduce((a, g) => a + (g.rows * g.bits) / 32, 0);
  const qWeight = new Uint32Array(qrows * np);
  const qScale = new Uint32Array(groups.length * (np / 8));
  const qGroups = new Int16Array(groups.length * 2);
  let row = 0;
  let qrow = 0;
  groups.forEach((g, gi) => {
    qGroups[2 * gi] = g.bits;
    qGroups[2 * gi + 1] = qrow;
    const zero = 1 << (g.bits - 1);
    for (let n = 0; n < np; n++) {
      // Each column of a group is one little-endian bit stream over its qrows; padded
      // columns hold the zero point, so they dequantize to exact zeros.
      for (let r = 0; r < g.rows; r++) {
        const code = n < N ? c.codes[(row + r) * N + n]! : zero;
        const bit = r * g.bits;
        const word = qrow + Math.floor(bit / 32);
        const shift = bit % 32;
        qWeight[word * np + n]! |= (code << shift) >>> 0;
        if (shift + g.bits > 32) qWeight[(word + 1) * np + n]! |= code >>> (32 - shift);
      }
      const s = n < N ? c.scaleCodes[gi * N + n]! : 0;
      qScale[gi * (np / 8) + (n >> 3)]! |= (s << (4 * (n & 7))) >>> 0;
    }
    row += g.rows;
    qrow += (g.rows * g.bits) / 32;
  });
  const invperm = new Int32Array(K);
  c.perm.forEach((channel, j) => (invperm[channel] = j));
  return {
    q_weight: { shape: [qrows, np], data: qWeight },
    q_invperm: { shape: [K], data: invperm },
    q_scale: { shape: [groups.length, np / 8], data: qScale },
    q_scale_max: { shape: [groups.length], data: Uint16Array.from(c.scaleMax, toFloat16Bits) },
    q_groups: { shape: [groups.length * 2], data: qGroups },
  };
}

/**
 * Round-to-nearest quantization of W ([outFeatures, inFeatures], row-major) with the given
 * group layout and permutation (default: identity). For each group and column the scale
 * code is the smallest whose scale covers the column's largest magnitude.
 */
export function quantizeRtn(w: ArrayLike<number>, outFeatures: number, inFeatures: number, groups: Exl2Group[], perm?: Int32Array): Exl2Codes {
  checkGroups(groups, inFeatures);
  const N = outFeatures, K = inFeatures;
  const order = perm ?? Int32Array.from({ length: K }, (_, i) => i);
  const codes = new Uint8Array(K * N);
  const scaleCodes = new Uint8Array(groups.length * N);
  const scaleMax = new Float64Array(groups.length);
  let row = 0;
  groups.forEach((g, gi) => {
    const half = 2 ** (g.bits - 1);
    const wanted = new Float64Array(N);
    for (let n = 0; n < N; n++) {
      let amax = 0;
      for (let r = 0; r < g.rows; r++) amax = Math.max(amax, Math.abs(w[n * K + order[row + r]!]!));
      wanted[n] = amax / half;
    }
    let max = roundFloat16(Math.max(...wanted));
    if (!(max > 0)) max = roundFloat16(2 ** -14);
    const m = roundFloat16(max / 256);
    scaleMax[gi] = max;
    for (let n = 0; n < N; n++) {
      let s = 0;
      while (s < 15 && roundFloat16((s + 1) * (s + 1) * m) < wanted[n]!) s++;
      scaleCodes[gi * N + n] = s;
      const scale = roundFloat16((s + 1) * (s + 1) * m);
      for (let r = 0; r < g.rows; r++) {
        const q = Math.round(w[n * K + order[row + r]!]! / scale) + half;
        codes[(row + r) * N + n] = Math.min(2 * half - 1, Math.max(0, q));
      }
    }
    row += g.rows;
  });
  return { inFeatures: K, outFeatures: N, groups, perm: order, codes, scaleCodes, scaleMax };
}

/** A layout of `fractions` (e.g. [[0.25, 4], [0.75, 3]]) over K rows in groups of `groupSize`. */
export function layoutGroups(inFeatures: number, parts: [fraction: number, bits: Exl2Width][], groupSize = 32): Exl2Group[] {
  const total = inFeatures / groupSize;
  if (!Number.isInteger(total)) throw new RangeError(`in_features ${inFeatures} is not a multiple of the group size ${groupSize}`);
  const groups: Exl2Group[] = [];
  let used = 0;
  parts.forEach(([fraction, bits], i) => {
    const count = i === parts.length - 1 ? total - used : Math.round(fraction * total);
    for (let j = 0; j < count; j++) groups.push({ bits, rows: groupSize });
    used += count;
  });
  return groups;
}

/** Bits per weight of a layer as stored (codes, scales, maxima, group table, permutation). */
export function bitsPerWeight(t: Exl2Tensors, outFeatures: number, inFeatures: number): number {
  const bits = t.q_weight.data.length * 32 + t.q_scale.data.length * 32 + t.q_scale_max.data.length * 16 + t.q_groups.data.length * 16 + t.q_invperm.data.length * 32;
  return bits / (outFeatures * inFeatures);
}
