// Test helper: a plain, slow, independent reference decoder for EXL2 (ExLlamaV2)
// quantized linear layers, written from the format specification
// (/work/shared/specs/exl2.md, sections 3 and 4). It deliberately imports nothing
// from lib/ or native/, so tests can compare the library against it.
//
// Conventions used throughout:
//   K  = in_features  (stored rows of the quantized matrix)
//   N  = out_features (columns), stored padded to Np = roundup(N, 32)
//   QR = number of qrows (rows of 32-bit words) in q_weight
//   G  = number of groups

// ---------------------------------------------------------------------------
// fp16 rounding
// ---------------------------------------------------------------------------

const FP16_MAX = 65504; // largest finite binary16 value
const FP16_MIN_NORMAL_EXP = -14; // exponent of the smallest normal binary16 value (2^-14)
const FP16_MANT_BITS = 10;

// Scratch view used to read the exponent field of a float64 exactly.
const f64Scratch = new DataView(new ArrayBuffer(8));

/** Exact floor(log2(a)) for a finite a > 0 (read from the float64 exponent field). */
function exponentOf(a: number): number {
  f64Scratch.setFloat64(0, a);
  const biased = (f64Scratch.getUint32(0) >>> 20) & 0x7ff;
  // float64 subnormals (biased == 0) are far below the fp16 range; any value
  // below 2^-14 is treated with the fixed subnormal quantum anyway.
  return biased === 0 ? -1023 : biased - 1023;
}

/** Round a non-negative float64 to the nearest integer, ties to even. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f; // exact: v and f are close float64 values
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** IEEE binary16 round-to-nearest-even of a float64 value (subnormals kept), returned as float64. */
export function fp16(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x === 0 || !Number.isFinite(x)) return x; // keeps -0 and ±Infinity
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);

  // The spacing (quantum) of binary16 values around a: 2^(e-10) for normal
  // numbers with exponent e, and the fixed 2^-24 for subnormals (e < -14).
  const e = Math.max(exponentOf(a), FP16_MIN_NORMAL_EXP);
  const quantum = Math.pow(2, e - FP16_MANT_BITS);

  // a / quantum and the multiplication back are exact (powers of two, no
  // float64 underflow or overflow in this range); only the integer rounding
  // changes the value. Rounding up may carry into the next binade, which is
  // still exactly representable.
  const rounded = roundHalfEven(a / quantum) * quantum;

  // Anything that rounds above the largest finite value overflows to infinity
  // (i.e. |x| >= 65520).
  if (rounded > FP16_MAX) return sign * Infinity;
  return sign * rounded; // sign * 0 gives -0 for tiny negative inputs, as in IEEE
}

// ---------------------------------------------------------------------------
// Bit-stream decoding (section 4.1)
// ---------------------------------------------------------------------------

const VALID_BITS = [2, 3, 4, 5, 6, 8];

function checkBits(bits: number, where: string): void {
  if (!VALID_BITS.includes(bits)) {
    throw new Error(`${where}: bit width ${bits} is not one of ${VALID_BITS.join(', ')}`);
  }
}

/**
 * The b-bit code of stored row r (within its group's bit stream) for one column:
 * a plain bit-stream decoder per section 4.1.
 *
 * `words` are the column's words of the group, qrow by qrow (words[k] = q_weight[qrow_start + k, n]);
 * word k supplies stream bits 32k..32k+31 and the code of row r occupies stream bits
 * [bits*r, bits*r + bits), least significant bit first. Codes may straddle two words.
 */
export function unpackCode(words: ArrayLike<number>, bits: number, r: number): number {
  checkBits(bits, 'unpackCode');
  if (!Number.isInteger(r) || r < 0) {
    throw new Error(`unpackCode: row index ${r} is not a non-negative integer`);
  }
  const firstBit = bits * r;
  const lastBit = firstBit + bits - 1;
  if (lastBit >= 32 * words.length) {
    throw new Error(
      `unpackCode: row ${r} at ${bits} bits needs stream bit ${lastBit}, but only ${words.length} word(s) given`,
    );
  }

  // Word holding the first bit of the code, and the bit offset inside it.
  const k = firstBit >>> 5;
  const offset = firstBit & 31;

  // Low part: the bits of word k from `offset` upwards.
  let value = (words[k]! >>> 0) >>> offset;

  // High part: if the code runs past bit 31 of word k, the rest comes from the
  // low bits of word k + 1, placed above the bits already taken.
  if (offset + bits > 32) {
    value |= (words[k + 1]! >>> 0) << (32 - offset);
  }

  const mask = (1 << bits) - 1;
  return (value & mask) >>> 0;
}

// ---------------------------------------------------------------------------
// Dequantization (sections 3.3 - 3.6, Appendix B)
// ---------------------------------------------------------------------------

export interface Exl2Tensors {
  qWeight: Uint32Array; // [QR, Np] row-major
  qInvperm: Int32Array; // [K]
  qScale: Uint32Array; // [G, Np/8] row-major
  qScaleMax: Float64Array; // [G] values (already fp16-exact numbers)
  qGroups: Int16Array; // [2G] pairs (bits, qrow_start)
  K: number; // in_features
  N: number; // out_features (unpadded)
}

interface GroupInfo {
  bits: number;
  qrowStart: number;
  qrowEnd: number; // exclusive
  rowStart: number; // first stored row of the group
  rows: number;
}

/**
 * Dequantizes as the spec's section 3.5 says (prescale 1): returns W as Float64Array [N, K] row-major
 * (HF orientation: W[n, k]), only the first N (unpadded) output columns. Throws Error with a clear message
 * on inconsistent input (group rows not summing to K, widths not in {2,3,4,5,6,8}, q_invperm not a permutation,...).
 */
export function referenceDequantize(t: Exl2Tensors): Float64Array {
  const { qWeight, qInvperm, qScale, qScaleMax, qGroups, K, N } = t;

  // Step 1: basic shapes. Np is N padded to a multiple of 32; q_weight is [QR, Np].
  if (!Number.isInteger(K) || K <= 0) throw new Error(`EXL2: K (in_features) must be a positive integer, got ${K}`);
  if (!Number.isInteger(N) || N <= 0) throw new Error(`EXL2: N (out_features) must be a positive integer, got ${N}`);
  const Np = Math.ceil(N / 32) * 32;
  if (qWeight.length % Np !== 0) {
    throw new Error(`EXL2: q_weight has ${qWeight.length} elements, not a multiple of the padded width Np = ${Np}`);
  }
  const QR = qWeight.length / Np;
  if (QR === 0) throw new Error('EXL2: q_weight is empty');
  if (qGroups.length === 0 || qGroups.length % 2 !== 0) {
    throw new Error(`EXL2: q_groups must hold (bits, qrow_start) pairs, got length ${qGroups.length}`);
  }
  const G = qGroups.length / 2;
  if (qScaleMax.length !== G) {
    throw new Error(`EXL2: q_scale_max has ${qScaleMax.length} entries but q_groups describes ${G} groups`);
  }
  const scaleWords = Np / 8; // words per q_scale row
  if (qScale.length !== G * scaleWords) {
    throw new Error(`EXL2: q_scale has ${qScale.length} elements, expected [G, Np/8] = [${G}, ${scaleWords}]`);
  }
  if (qInvperm.length !== K) {
    throw new Error(`EXL2: q_invperm has ${qInvperm.length} entries, expected K = ${K}`);
  }

  // Step 2: the group table (3.3). Group g spans qrows [q_groups[2g+1], next start or QR)
  // and holds rows_g = (qrow_end - qrow_start) * 32 / bits stored rows, consecutively.
  const groups: GroupInfo[] = [];
  let rowStart = 0;
  for (let g = 0; g < G; g++) {
    const bits = qGroups[2 * g]!;
    checkBits(bits, `EXL2: group ${g}`);
    const qrowStart = qGroups[2 * g + 1]!;
    const qrowEnd = g + 1 < G ? qGroups[2 * (g + 1) + 1]! : QR;
    if (g === 0 && qrowStart !== 0) {
      throw new Error(`EXL2: group 0 must start at qrow 0, got ${qrowStart}`);
    }
    if (qrowEnd <= qrowStart || qrowEnd > QR) {
      throw new Error(
        `EXL2: group ${g} has invalid qrow range [${qrowStart}, ${qrowEnd}) (QR = ${QR}); starts must increase`,
      );
    }
    const streamBits = (qrowEnd - qrowStart) * 32;
    if (streamBits % bits !== 0) {
      throw new Error(
        `EXL2: group ${g} spans ${qrowEnd - qrowStart} qrows = ${streamBits} bits, not a whole number of ${bits}-bit rows`,
      );
    }
    const rows = streamBits / bits;
    groups.push({ bits, qrowStart, qrowEnd, rowStart, rows });
    rowStart += rows;
  }
  if (rowStart !== K) {
    throw new Error(`EXL2: group rows sum to ${rowStart}, expected K = ${K}`);
  }

  // Step 3: perm = inverse of q_invperm (perm[q_invperm[i]] = i); stored row j holds input channel perm[j].
  const perm = new Int32Array(K).fill(-1);
  for (let i = 0; i < K; i++) {
    const j = qInvperm[i]!;
    if (j < 0 || j >= K) {
      throw new Error(`EXL2: q_invperm[${i}] = ${j} is out of range 0..${K - 1}`);
    }
    if (perm[j] !== -1) {
      throw new Error(`EXL2: q_invperm is not a permutation (stored row ${j} appears twice)`);
    }
    perm[j] = i;
  }

  // Step 4: decode every group, column by column.
  const W = new Float64Array(N * K);
  for (let g = 0; g < G; g++) {
    const { bits, qrowStart, qrowEnd, rowStart: firstRow, rows } = groups[g]!;
    const zeroPoint = 2 ** (bits - 1);

    // 4a: m = fp16(q_scale_max / 256), one rounding (often subnormal).
    const scaleMax = qScaleMax[g]!;
    if (!Number.isFinite(scaleMax) || fp16(scaleMax) !== scaleMax) {
      throw new Error(`EXL2: q_scale_max[${g}] = ${scaleMax} is not a finite fp16 value`);
    }
    const m = fp16(scaleMax / 256);

    for (let n = 0; n < N; n++) {
      // 4b: 4-bit scale code s of column n: nibble (n mod 8) of word q_scale[g, n / 8].
      const scaleWord = qScale[g * scaleWords + Math.floor(n / 8)]! >>> 0;
      const s = (scaleWord >>> (4 * (n % 8))) & 15;

      // 4c: sc = fp16((s + 1)^2 * m).
      const sc = fp16((s + 1) * (s + 1) * m);

      // 4d: the column's bit stream for this group: words q_weight[qrow, n] for its qrows.
      const words: number[] = [];
      for (let qrow = qrowStart; qrow < qrowEnd; qrow++) {
        words.push(qWeight[qrow * Np + n]!);
      }

      // 4e: each stored row j of the group: w = fp16((q - 2^(b-1)) * sc), W[n, perm[j]] = w.
      for (let r = 0; r < rows; r++) {
        const q = unpackCode(words, bits, r);
        const w = fp16((q - zeroPoint) * sc);
        const j = firstRow + r;
        W[n * K + perm[j]!] = w;
      }
    }
  }
  return W;
}

// ---------------------------------------------------------------------------
// Worked examples from the spec
// ---------------------------------------------------------------------------

/** The codes of one chunk of `wordCount` words at `bits` bits per code: (wordCount * 32 / bits) rows. */
function chunkCodes(bits: number, wordCount: number, code: (r: number) => number): number[] {
  const rows = (wordCount * 32) / bits;
  const codes: number[] = [];
  for (let r = 0; r < rows; r++) codes.push(code(r));
  return codes;
}

function exampleTable(
  code: (bits: number, r: number) => number,
  wordsByBits: [number, number[]][],
): { bits: number; codes: number[]; words: number[] }[] {
  return wordsByBits.map(([bits, words]) => ({
    bits,
    codes: chunkCodes(bits, words.length, (r) => code(bits, r)),
    words,
  }));
}

/**
 * The worked examples of section 4.2 as data: for each bits in {2,3,4,5,6,8}: { bits, codes, words } for both
 * tables ("codes equal to row index mod 2^b" and "(7r+3) mod 2^b"). One chunk, one column; words[0] is qrow 0.
 */
export const PACKING_EXAMPLES: { bits: number; codes: number[]; words: number[] }[] = [
  // Table 1: codes equal to the row index modulo 2^b.
  ...exampleTable(
    (bits, r) => r % 2 ** bits,
    [
      [2, [0xe4e4e4e4]],
      [3, [0x88fac688, 0xc688fac6, 0xfac688fa]],
      [4, [0x76543210]],
      [5, [0x8a418820, 0xc5a92839, 0xca307b9a, 0x38bdab49, 0xffbbcdeb]],
      [6, [0x440c2040, 0xa2481c61, 0x3ce34c2c]],
      [8, [0x03020100]],
    ],
  ),
  // Table 2: codes (7r + 3) mod 2^b.
  ...exampleTable(
    (bits, r) => (7 * r + 3) % 2 ** bits,
    [
      [2, [0x1b1b1b1b]],
      [3, [0x53977053, 0x70539770, 0x97705397]],
      [4, [0x4d6f81a3]],
      [5, [0x4dfc4543, 0x78245ba3, 0x0753617d, 0x4b276cf4, 0xe55c7066]],
      [6, [0x9f611283, 0x90bbd2d9, 0xb2579740]],
      [8, [0x18110a03]],
    ],
  ),
];

/** The worked example of section 3.5 (b = 4, q = 11, s = 5, q_scale_max = fp16(0.0123)). */
export const DEQUANT_EXAMPLE: {
  bits: number;
  q: number;
  s: number;
  scaleMax: number;
  m: number;
  sc: number;
  w: number;
} = {
  bits: 4,
  q: 11,
  s: 5,
  scaleMax: fp16(0.0123), // = 0.012298583984375
  m: 4.8041343688964844e-5, // fp16(scaleMax / 256), subnormal
  sc: 0.0017299652099609375, // fp16(36 * m)
  w: 0.00518798828125, // fp16((11 - 8) * sc)
};
