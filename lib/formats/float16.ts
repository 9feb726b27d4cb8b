// IEEE binary16 conversions (round to nearest even, subnormals kept).
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The fp16 bit pattern nearest to x (via float32, as numeric code does). */
export function toFloat16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00;
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs < 0x38800000) {
    if (abs < 0x33000000) return sign;
    const exp = abs >>> 23;
    const man = (abs & 0x7fffff) | 0x800000;
    const shift = 126 - exp;
    const whole = man >>> shift;
    const rem = man & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    return sign | (whole + (rem > half || (rem === half && whole & 1) ? 1 : 0));
  }
  let h = (abs >>> 13) - (112 << 10);
  const rem = abs & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

export function fromFloat16Bits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0x1f) return man ? NaN : sign * Infinity;
  if (exp === 0) return sign * man * 2 ** -24;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

/** x rounded to the nearest fp16 value. */
export const roundFloat16 = (x: number): number => fromFloat16Bits(toFloat16Bits(x));
