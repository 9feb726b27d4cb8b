// A small seeded generator for test inputs (xorshift32): the same seed, the same values.

/** Numbers in [0, 1) from `seed`. */
export function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}
