// Evaluating parameter settings for one tensor: scalars, gradients over the layers of a
// slice, and filter lists; and the lookup order across source, slice and global levels.
import type { ParameterValue, Parameters } from './config.js';

/** A gradient at layer position t in [0, 1], interpolated as mergekit does. */
export function gradientAt(list: number[], t: number): number {
  const n = list.length;
  const scaled = t * (n - 1);
  const i0 = Math.trunc(scaled);
  const i1 = Math.min(n - 1, i0 + 1);
  const frac = scaled - i0;
  return (1 - frac) * list[i0]! + frac * list[i1]!;
}

/** The value for `tensorName` at layer position t, or undefined if no filter matches. */
export function evaluate(value: ParameterValue, tensorName: string, t: number): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value === 'boolean') return value ? 1 : 0;
  if (value.length > 0 && typeof value[0] === 'number') return gradientAt(value as number[], t);
  for (const c of value as { filter?: string; value: number | boolean | number[] }[]) {
    if (c.filter === undefined || c.filter === '*' || tensorName.includes(c.filter)) return evaluate(c.value, tensorName, t);
  }
  return undefined;
}

/** First defined value of `name` over the levels, most specific first. */
export function lookup(levels: (Parameters | undefined)[], name: string, tensorName: string, t: number): number | undefined {
  for (const level of levels) {
    const v = level && Object.hasOwn(level, name) ? level[name] : undefined;
    if (v === undefined) continue;
    const x = evaluate(v, tensorName, t);
    if (x !== undefined) return x;
  }
  return undefined;
}
