// EXL2 recipes: what fraction of a layer's input rows gets which width in which group size,
// the candidate combinations the measurement pass scores per block (ExLlamaV2's option
// table), the fixed recipes of the head, and the bits accounting that the budget uses.
import { EXL2_WIDTHS, type Exl2Group, type Exl2Width } from '../formats/exl2.js';

/** A fraction of the rows at one width, in groups of `groupSize` rows. */
export interface RecipePart {
  fraction: number;
  bits: Exl2Width;
  groupSize: number;
}

/** Parts in stored order (widest first). */
export type Recipe = RecipePart[];

/** "0.1:4/128 + 0.9:3/128" → parts. */
export function parseRecipe(text: string): Recipe {
  return text.split('+').map((part) => {
    const m = /^\s*([\d.]+):(\d)\/(\d+)\s*$/.exec(part);
    if (!m) throw new RangeError(`recipe part '${part}' is not fraction:bits/groupSize`);
    return { fraction: Number(m[1]), bits: Number(m[2]) as Exl2Width, groupSize: Number(m[3]) };
  });
}

export function recipeText(r: Recipe): string {
  return r.map((p) => `${p.fraction}:${p.bits}/${p.groupSize}`).join(' + ');
}

/** Checks that a recipe can be laid out: known widths in stored order, group sizes of whole 32-row units. */
export function checkRecipe(r: Recipe, where: string): void {
  if (!Array.isArray(r) || r.length === 0) throw new RangeError(`${where}: a recipe needs at least one part`);
  let rank = 0;
  for (const p of r) {
    const i = EXL2_WIDTHS.indexOf(p.bits);
    if (i < 0) throw new RangeError(`${where}: width ${String(p.bits)} is not one of ${EXL2_WIDTHS.join(', ')}`);
    if (i < rank) throw new RangeError(`${where}: widths must come in the order ${EXL2_WIDTHS.join(', ')}`);
    rank = i;
    if (!Number.isSafeInteger(p.groupSize) || p.groupSize <= 0 || p.groupSize % 32 !== 0) throw new RangeError(`${where}: group size ${String(p.groupSize)} is not a positive multiple of 32`);
    if (!(typeof p.fraction === 'number' && p.fraction >= 0 && p.fraction <= 1)) throw new RangeError(`${where}: fraction ${String(p.fraction)} is not in [0, 1]`);
  }
}

/**
 * The groups of a recipe over K rows, as ExLlamaV2 splits them: in list order, each width
 * takes ceil(min(K·p, rows left) / groupSize) groups; the last width takes every row still
 * uncovered. A group is at most groupSize rows and never more than the rows left.
 */
export function recipeGroups(r: Recipe, inFeatures: number): Exl2Group[] {
  if (inFeatures % 32 !== 0) throw new RangeError(`in_features ${inFeatures} is not a multiple of 32, which EXL2 needs`);
  const groups: Exl2Group[] = [];
  let left = inFeatures;
  r.forEach((p, i) => {
    const last = i === r.length - 1;
    let rows = last ? left : Math.min(left, Math.ceil(Math.min(inFeatures * p.fraction, left) / p.groupSize) * p.groupSize);
    while (rows > 0) {
      const g = Math.min(p.groupSize, rows);
      groups.push({ bits: p.bits, rows: g });
      rows -= g;
      left -= g;
    }
  });
  return groups;
}

/** Bits a layer takes as stored (§6.5): codes, group maxima, group table, scale codes, permutation, bias. */
export function recipeBits(r: Recipe, inFeatures: number, outFeatures: number, bias = false): number {
  const groups = recipeGroups(r, inFeatures);
  const codes = groups.reduce((a, g) => a + g.rows * g.bits, 0) * outFeatures;
  const G = groups.length;
  return codes + 16 * G + 32 * G + 4 * G * outFeatures + 32 * inFeatures + (bias ? 16 * outFeatures : 0);
}

const table = (rows: string[][]): Recipe[][] => rows.map((row) => row.map(parseRecipe));

// The candidates are ExLlamaV2's option table (in its order), plus two rows at the low end
// (all linears at 2 bits in groups of 128, and with a tenth at 3 bits): on narrow models
// the permutation and scales cost more per weight (32 bits per input row is 0.5 bpw at 64
// outputs), and without them 2.5 bpw is out of reach.

/** Attention candidates (q, k, v, o). */
export const ATTENTION_CANDIDATES: Recipe[][] = table([
  ['.05:3/64 + .95:2/64', '.05:3/64 + .95:2/64', '.05:3/64 + .95:2/64', '.05:3/64 + .95:2/64'],
  ['.1:3/64 + .9:2/64', '.1:3/64 + .9:2/64', '.25:3/64 + .75:2/64', '.1:3/64 + .9:2/64'],
  ['.1:3/64 + .9:2/64', '.1:3/64 + .9:2/64', '.1:4/128 + .9:3/128', '.1:3/64 + .9:2/64'],
  ['.1:3/64 + .9:2/64', '.1:3/64 + .9:2/64', '.1:4/128 + .9:3/128', '.1:4/128 + .9:3/128'],
  ['.1:4/128 + .9:3/128', '.1:4/128 + .9:3/128', '.1:4/128 + .9:3/128', '.1:4/128 + .9:3/128'],
  ['.1:4/128 + .9:3/128', '.1:4/128 + .9:3/128', '.1:4/64 + .9:3/64', '.1:4/128 + .9:3/128'],
  ['1:4/128', '1:4/128', '1:4/128', '1:4/128'],
  ['1:4/128', '1:4/128', '1:4/64', '1:4/128'],
  ['1:4/64', '1:4/64', '1:4/32', '1:4/64'],
  ['1:4/32', '1:4/32', '1:4/32', '1:4/32'],
  ['.1:5/128 + .9:4/128', '.1:5/128 + .9:4/128', '.1:5/64 + .9:4/64', '.1:5/128 + .9:4/128'],
  ['.1:5/64 + .9:4/64', '.1:5/64 + .9:4/64', '.1:5/32 + .9:4/32', '.1:5/64 + .9:4/64'],
  ['.1:5/64 + .9:4/64', '.1:5/64 + .9:4/64', '1:5/64', '.1:5/64 + .9:4/64'],
  ['.1:5/32 + .9:4/32', '.1:5/32 + .9:4/32', '1:5/32', '.1:5/32 + .9:4/32'],
  ['.1:6/128 + .9:5/128', '.1:6/128 + .9:5/128', '1:6/128', '.1:6/128 + .9:5/128'],
  ['.1:6/32 + .9:5/32', '.1:6/32 + .9:5/32', '1:6/32', '.1:6/32 + .9:5/32'],
  ['1:6/128', '1:6/128', '1:6/128', '1:6/128'],
  ['1:6/32', '1:6/32', '1:8/32', '1:6/32'],
  ['1:8/128', '1:8/128', '1:8/128', '1:8/128'],
  ['1:2/128', '1:2/128', '1:2/128', '1:2/128'],
  ['.1:3/128 + .9:2/128', '.1:3/128 + .9:2/128', '.1:3/128 + .9:2/128', '.1:3/128 + .9:2/128'],
]);

/** MLP candidates (gate, up, down). */
export const MLP_CANDIDATES: Recipe[][] = table([
  ['.05:3/64 + .95:2/64', '.05:3/64 + .95:2/64', '.05:6/32 + .2:3/64 + .75:2/64'],
  ['.1:3/64 + .9:2/64', '.25:3/64 + .75:2/64', '.05:6/32 + .2:3/64 + .75:2/64'],
  ['.1:3/64 + .9:2/64', '.3:3/64 + .7:2/64', '.05:5/32 + .95:3/32'],
  ['.1:3/64 + .9:2/64', '.3:3/64 + .7:2/64', '.05:5/32 + .95:4/32'],
  ['.1:4/128 + .9:3/128', '.25:4/128 + .75:3/128', '.05:8/32 + .1:4/128 + .85:3/128'],
  ['.1:4/32 + .9:3/32', '.25:4/32 + .75:3/32', '.05:8/32 + .1:4/32 + .85:3/32'],
  ['.1:4/32 + .9:3/32', '.25:4/32 + .75:3/32', '.05:8/32 + .95:4/128'],
  ['1:4/128', '1:4/32', '.05:8/32 + .95:4/128'],
  ['1:4/32', '1:4/32', '.05:8/32 + .95:4/32'],
  ['.1:5/128 + .9:4/128', '.25:5/128 + .75:4/128', '.05:8/32 + .1:5/128 + .85:4/128'],
  ['.1:5/32 + .9:4/32', '.25:5/32 + .75:4/32', '.05:8/32 + .1:5/32 + .85:4/32'],
  ['.1:6/128 + .9:5/128', '.25:6/128 + .75:5/128', '.05:8/32 + .1:6/128 + .85:5/128'],
  ['.1:6/32 + .9:5/32', '.25:6/32 + .75:5/32', '.05:8/32 + .1:6/32 + .85:5/32'],
  ['1:6/128', '1:6/128', '.05:8/32 + .95:6/128'],
  ['.1:8/128 + .9:6/128', '.1:8/128 + .9:6/128', '.15:8/128 + .85:6/128'],
  ['.1:8/128 + .9:6/128', '.1:8/128 + .9:6/128', '1:8/128'],
  ['1:8/128', '1:8/128', '1:8/128'],
  ['1:2/128', '1:2/128', '1:2/128'],
  ['.1:3/128 + .9:2/128', '.1:3/128 + .9:2/128', '.1:3/128 + .9:2/128'],
]);

/** The head's fixed recipe per --head-bits. */
export const HEAD_RECIPES: Readonly<Record<number, Recipe>> = {
  2: parseRecipe('0.3:4/32 + 0.7:2/32'),
  3: parseRecipe('0.15:4/32 + 0.85:3/32'),
  4: parseRecipe('0.15:6/32 + 0.85:4/32'),
  5: parseRecipe('0.15:6/128 + 0.85:5/128'),
  6: parseRecipe('0.15:8/128 + 0.85:6/128'),
  8: parseRecipe('1:8/128'),
};

/** The names of each block's linears, as stored (`model.layers.N.<block>.<name>`). */
export const BLOCKS = {
  attention: { key: 'self_attn', linears: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] },
  mlp: { key: 'mlp', linears: ['gate_proj', 'up_proj', 'down_proj'] },
} as const;
export type BlockName = keyof typeof BLOCKS;

/** A layout as the addon takes it: (bits, rows) pairs. */
export function layoutArray(groups: Exl2Group[]): Int32Array {
  return Int32Array.from(groups.flatMap((g) => [g.bits, g.rows]));
}
