// Seeded randomness and the mutations that the fuzz targets share.

/** A seeded generator (SplitMix32-style): the same seed gives the same attempt. */
export class Rng {
  #state;
  constructor(seed) {
    this.#state = (seed >>> 0) ^ 0x9e3779b9;
  }
  /** A float in [0, 1). */
  next() {
    let z = (this.#state = (this.#state + 0x9e3779b9) >>> 0);
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo, hi) {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p) {
    return this.next() < p;
  }
  pick(list) {
    return list[Math.floor(this.next() * list.length)];
  }
}

/** Values that break code which assumes sane input. */
export const INTERESTING = [
  0, -1, 1, 2, 3, 7, 8, 16, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 31), 1e9, 1e300, -1e300, 0.5, -0.5, 1e-30,
  '', 'a', '0', '-1', 'NaN', 'Infinity', '__proto__', 'constructor', 'toString', '</s>[INST]', 'x'.repeat(5000), null, true, false, [], {}, [1, 2, 3], [[0, 1]],
  { a: 1 }, { __proto__: null, constructor: 1 },
];

/** A random interesting value, or a small variation of `old`. */
export function mutateValue(rng, old) {
  if (typeof old === 'number' && rng.chance(0.4)) {
    return rng.pick([old + 1, old - 1, old * 2, -old, old * 1000, Math.floor(old / 2), old + 0.5]);
  }
  if (typeof old === 'string' && rng.chance(0.4)) {
    return rng.pick([old + old, old.slice(1), old.toUpperCase(), `${old}\u0000`, old.split('').reverse().join('')]);
  }
  return structuredClone(rng.pick(INTERESTING));
}

/** Paths to every value in a JSON tree, up to `limit` of them (sampled evenly in big trees). */
function paths(value, limit = 4000) {
  const out = [];
  const walk = (v, path) => {
    out.push(path);
    if (out.length > limit * 4) return;
    if (v && typeof v === 'object') for (const k of Object.keys(v)) walk(v[k], [...path, k]);
  };
  walk(value, []);
  if (out.length <= limit) return out;
  const step = out.length / limit;
  return Array.from({ length: limit }, (_, i) => out[Math.floor(i * step)]);
}

/** One structural mutation of a JSON tree, in place (or a replacement root); returns the root and what was done. */
export function mutateJson(rng, root) {
  const all = paths(root).filter((p) => p.length > 0);
  if (all.length === 0) return { root: mutateValue(rng, root), what: 'root replaced' };
  const path = rng.pick(all);
  const parent = path.slice(0, -1).reduce((v, k) => v[k], root);
  const key = path[path.length - 1];
  const where = path.join('.').slice(0, 80);
  const action = rng.int(0, 5);
  if (action === 0) {
    if (Array.isArray(parent)) parent.splice(Number(key), 1);
    else delete parent[key];
    return { root, what: `deleted ${where}` };
  }
  if (action === 1 && Array.isArray(parent)) {
    parent.push(structuredClone(parent[Number(key)]));
    return { root, what: `duplicated ${where}` };
  }
  if (action === 2 && !Array.isArray(parent)) {
    parent[`${key}${rng.pick(['', '_', 'x'])}${rng.int(0, 9)}`] = structuredClone(parent[key]);
    return { root, what: `copied ${where}` };
  }
  parent[key] = mutateValue(rng, parent[key]);
  return { root, what: `set ${where} = ${JSON.stringify(parent[key])?.slice(0, 40)}` };
}

/** Text-level damage: truncation, inserted junk, flipped characters. */
export function mutateText(rng, text) {
  const at = rng.int(0, text.length);
  switch (rng.int(0, 3)) {
    case 0:
      return { text: text.slice(0, at), what: `truncated at ${at}` };
    case 1:
      return { text: text.slice(0, at) + rng.pick(['{', '}', '"', '\\', '\u0000', ',', '[', 'null', '\ud800', '9'.repeat(400)]) + text.slice(at), what: `junk inserted at ${at}` };
    case 2:
      return { text: text.slice(0, at) + text.slice(at + rng.int(1, 50)), what: `cut at ${at}` };
    default: {
      const chars = [...text];
      for (let i = 0; i < 8; i++) chars[rng.int(0, chars.length - 1)] = String.fromCharCode(rng.int(0, 127));
      return { text: chars.join(''), what: 'characters flipped' };
    }
  }
}
