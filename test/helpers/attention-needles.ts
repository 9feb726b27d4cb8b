// Test helper: a tiny F32 checkpoint whose first layer's attention is dominated by a few
// "needle" keys at positions the test picks (for instance the last position of each block
// that a split-KV or tiled attention kernel takes), so that a kernel that skips one of them
// is wrong by a wide margin instead of by a fraction of its tolerance. Independent of lib/
// and native/, like ./checkpoint.ts (the float64 reference reads it as it reads any other).
//
// Layer 0, with rotate-half RoPE over head_dim 32 and rope_theta 1e6: rotary pair 15 (dims
// 15 and 31) turns by under 3e-6 radians per position, so a score along dim 15 is the same
// at any distance. Every other token has hidden dim 0 at zero and dim 1 at 4; needle n (token
// 3 + n) has 8 on dims 0 and 2 + n and zero elsewhere (the input norm is 1 on these dims).
// q_proj's dim 15 reads hidden dim 1 (every query), k_proj's dim 15 reads hidden dim 0 (only
// the needles' keys), so a query scores a needle about 20 above any other key (e^20: the
// needles hold all but about 1e-6 of the weight). v_proj gives needle n a value of its own
// (hidden dim 2 + n times a pattern shifted by n), so that losing any one needle moves the
// output, not just losing them all.
import { join } from 'node:path';

import { encode, writeSafetensors, writeTinyCheckpoint, type TinyCheckpoint } from './checkpoint.js';

/** The token of needle n. */
export const needleToken = (n: number) => 3 + n;
const MAX_NEEDLES = 8;

/**
 * The checkpoint, and a prompt of `length` tokens with needle n exactly at `needles[n]`;
 * `filler(i)` is the (never a needle) token the prompt has at other positions i.
 */
export async function writeNeedleCheckpoint(dir: string, length: number, needles: number[]): Promise<{ ckpt: TinyCheckpoint; prompt: number[]; filler: (i: number) => number }> {
  if (needles.length > MAX_NEEDLES) throw new Error(`at most ${MAX_NEEDLES} needles`);
  const hidden = 64, headDim = 32, heads = 2, vocab = 300;
  const ckpt = await writeTinyCheckpoint(dir, { hidden, intermediate: 128, layers: 2, heads, kvHeads: 1, headDim, vocab, dtype: 'F32', seed: 41, ropeTheta: 1e6, maxPositions: 2048 });
  const t = (name: string) => ckpt.tensors.get(name)!.values;
  const embed = t('model.embed_tokens.weight');
  for (let token = 0; token < vocab; token++) {
    const row = embed.subarray(token * hidden, (token + 1) * hidden);
    const n = token - needleToken(0);
    if (n >= 0 && n < MAX_NEEDLES) {
      row.fill(0);
      row[0] = row[2 + n] = 8;
    } else {
      row[0] = 0;
      row[1] = 4;
    }
  }
  const p = 'model.layers.0.';
  t(`${p}input_layernorm.weight`).fill(1, 0, 2 + MAX_NEEDLES);
  const q = t(`${p}self_attn.q_proj.weight`), k = t(`${p}self_attn.k_proj.weight`), v = t(`${p}self_attn.v_proj.weight`);
  const row = (m: Float64Array, r: number) => m.subarray(r * hidden, (r + 1) * hidden);
  for (let h = 0; h < heads; h++) {
    row(q, h * headDim + 15).fill(0)[1] = 3;
    row(q, h * headDim + 31).fill(0);
  }
  row(k, 15).fill(0)[0] = 2;
  row(k, 31).fill(0);
  for (let d = 0; d < headDim; d++) for (let n = 0; n < MAX_NEEDLES; n++) row(v, d)[2 + n] = (d + n) % 3 === 0 ? 2 : -1;
  writeSafetensors(
    join(dir, 'model.safetensors'),
    [...ckpt.tensors].map(([name, x]) => ({ name, dtype: 'F32', shape: x.shape, data: encode(x.values, 'F32') })),
  );
  const filler = (i: number) => needleToken(MAX_NEEDLES) + ((i * 37 + 11) % (vocab - needleToken(MAX_NEEDLES)));
  const prompt = Array.from({ length }, (_, i) => (needles.includes(i) ? needleToken(needles.indexOf(i)) : filler(i)));
  return { ckpt, prompt, filler };
}
