// The trained tiny Mistral models of ../shared/fixtures/models against the greedy
// generations and first-step logits that an independent numpy forward pass produced.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { loadModel } from '../lib/index.js';
import { fixturesDir, fixturesSkipReason, haveFixtures } from './helpers/fixtures.js';

interface Generation {
  prompt: string;
  prompt_ids: number[];
  greedy_ids: number[];
  first_step_top10: { id: number; logit: number }[];
  step_top1_top2_margins: number[];
}

// The reference ran in float32 from the BF16 weights with a float32 KV cache, so a BF16
// model must match its first-step logits closely: the engine's half-float keys and values
// put them up to 7e-4 away (6e-6 with a float32 cache). The F16/F32 variants hold other
// weights: the fixture's README gives their logits up to 0.02 away from BF16's.
const BF16_LOGIT_TOLERANCE = 2e-3;
const OTHER_LOGIT_TOLERANCE = 0.03;

const variants = [
  ['tiny-mistral-bf16', BF16_LOGIT_TOLERANCE],
  ['tiny-mistral-bf16-sharded', BF16_LOGIT_TOLERANCE],
  ['tiny-mistral-f16', OTHER_LOGIT_TOLERANCE],
  ['tiny-mistral-f32', OTHER_LOGIT_TOLERANCE],
] as const;

describe.skipIf(!haveFixtures)('trained fixture models', () => {
  if (!haveFixtures) it.skip(fixturesSkipReason, () => {});
  const generations: Generation[] = haveFixtures
    ? (JSON.parse(readFileSync(join(fixturesDir, 'models/reference_generations.json'), 'utf8')) as { generations: Generation[] }).generations
    : [];

  it.each(variants)('%s reproduces the reference greedy generations', async (variant, tolerance) => {
    await using model = await loadModel(join(fixturesDir, 'models', variant));
    expect(model.config.architecture).toBe('MistralForCausalLM');
    expect(model.config.numHiddenLayers).toBe(8);
    for (const g of generations) {
      const logits = await model.forward(g.prompt_ids);
      for (const { id, logit } of g.first_step_top10) expect(Math.abs(logits[id]! - logit), `${g.prompt}: logit of ${id}`).toBeLessThan(tolerance);
      const { tokens } = await model.generate({ tokens: g.prompt_ids, maxTokens: g.greedy_ids.length, stopAtEos: false });
      // BF16: compare up to the first step whose top-1/top-2 margin is within twice the
      // tolerance. The README records that the other variants give the same greedy ids.
      const close = tolerance === BF16_LOGIT_TOLERANCE ? g.step_top1_top2_margins.findIndex((m) => m < 2 * tolerance) : -1;
      const comparable = close >= 0 ? close + 1 : g.greedy_ids.length;
      expect(tokens.slice(0, comparable), g.prompt).toEqual(g.greedy_ids.slice(0, comparable));
    }
  });
});
