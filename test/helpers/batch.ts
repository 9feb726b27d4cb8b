// Batch invariance, checked bit for bit: each entry of a batch (a sequence with a history,
// then a prompt chunk or a decode token) gets the same Float32 logits in the batch as in a
// step of its own. Used by test/batch.test.ts (CPU, every ISA) and test/gpu-batch.test.ts.
import { expect } from 'vitest';

import type { LogitsWanted, Model } from '../../lib/index.js';

export interface BatchEntry {
  /** Tokens already in the sequence's cache before the step (fed alone, in one step). */
  history: number[];
  /** The step's tokens: one (decode) or more (a prompt chunk). */
  tokens: number[];
  logits: LogitsWanted;
}

/** How many of the logits differ in any bit, and the largest difference over the largest
 * |logit| (0 and 0 when identical). */
export function bitDifference(got: Float32Array, want: Float32Array): { differing: number; relative: number } {
  expect(got.length).toBe(want.length);
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let differing = 0, diff = 0, size = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) differing++;
    diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
    size = Math.max(size, Math.abs(want[i]!));
  }
  return { differing, relative: size > 0 ? diff / size : diff };
}

/** Expects got to be want bit for bit; the message names what and how far apart they are. */
export function expectSameBits(got: Float32Array, want: Float32Array, what: string): void {
  expect({ what, ...bitDifference(got, want) }).toEqual({ what, differing: 0, relative: 0 });
}

/** Tokens of a deterministic pseudo-random stream. */
export function tokenRun(length: number, seed: number, vocab: number): number[] {
  return Array.from({ length }, (_, j) => (seed * 131 + j * 37 + ((j * j) % 11)) % vocab);
}

/**
 * A batch of `size` entries: every `decodeEvery`-th one a decode token, the others prompt
 * chunks whose lengths cycle through `chunks`; histories of varied length (some empty); the
 * logits asked for cycle through 'all', 'last' and (rarely) 'none'.
 */
export function mixedBatch(size: number, seed: number, vocab: number, chunks: number[], longHistory = 0): BatchEntry[] {
  const modes: LogitsWanted[] = ['all', 'last', 'all', 'last', 'none'];
  return Array.from({ length: size }, (_, i) => {
    const decode = i % 3 !== 1;
    const historyLength = i === 1 && longHistory > 0 ? longHistory : (i * 7 + seed) % 23 + (decode ? 1 : 0);
    const length = decode ? 1 : chunks[(i + seed) % chunks.length]!;
    return {
      history: tokenRun(historyLength, seed * 100 + i, vocab),
      tokens: tokenRun(length, seed * 100 + i + 50, vocab),
      logits: size === 1 ? 'all' : modes[(i + seed) % modes.length]!,
    };
  });
}

/** A batch of decode tokens only (one per sequence), histories of varied length. */
export function decodeBatch(size: number, seed: number, vocab: number): BatchEntry[] {
  return Array.from({ length: size }, (_, i) => ({
    history: tokenRun(1 + ((i * 5 + seed) % 19), seed * 100 + i, vocab),
    tokens: tokenRun(1, seed * 100 + i + 50, vocab),
    logits: 'last' as const,
  }));
}

/**
 * Runs each entry in a step of its own, then all of them in one step (after truncating
 * the sequences back to their histories), and expects every row of logits asked for to be
 * the same bit for bit. Returns the number of rows compared.
 */
export async function expectBatchInvariant(model: Model, entries: BatchEntry[], label: string): Promise<number> {
  const seqs = entries.map(() => model.createSequence());
  try {
    for (let i = 0; i < entries.length; i++)
      if (entries[i]!.history.length > 0) await model.step([{ sequence: seqs[i]!, tokens: entries[i]!.history, logits: 'none' }]);
    const alone: Float32Array[] = [];
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const [l] = await model.step([{ sequence: seqs[i]!, tokens: e.tokens, logits: e.logits }]);
      alone.push(l!.slice());
      seqs[i]!.truncate(e.history.length);
    }
    const together = await model.step(entries.map((e, i) => ({ sequence: seqs[i]!, tokens: e.tokens, logits: e.logits })));
    const shape = entries.map((e) => `${e.tokens.length}${e.logits === 'all' ? 'a' : e.logits === 'last' ? 'l' : 'n'}@${e.history.length}`).join(' ');
    let rows = 0;
    for (let i = 0; i < entries.length; i++) {
      expectSameBits(together[i]!, alone[i]!, `${label}, entry ${i} of [${shape}]`);
      rows += together[i]!.length > 0 ? 1 : 0;
    }
    return rows;
  } finally {
    for (const s of seqs) s.dispose();
  }
}

/**
 * Feeds the same prompt in one step, in the given chunks, and returns the logits of every
 * position (each chunk's 'all'), concatenated.
 */
export async function chunkedLogits(model: Model, prompt: number[], chunks: number[]): Promise<Float32Array> {
  const vocab = model.config.vocabSize;
  const out = new Float32Array(prompt.length * vocab);
  const seq = model.createSequence();
  try {
    let at = 0;
    for (const c of chunks) {
      const [l] = await model.step([{ sequence: seq, tokens: prompt.slice(at, at + c), logits: 'all' }]);
      out.set(l!, at * vocab);
      at += c;
    }
    expect(at).toBe(prompt.length);
  } finally {
    seq.dispose();
  }
  return out;
}
