// Constrained decoding: every output the model finishes parses and validates (checked by
// Ajv, an independent JSON Schema validator) over random schemas, seeds and temperatures;
// the engine's masks agree with a brute-force check on small grammars; regexes, GBNF and
// errors for what cannot be enforced.
import { Ajv2020 } from 'ajv/dist/2020.js';
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
  const kinds = depth >= 2 ? ['string', 'integer', 'boolean', 'enum', 'const', 'null', 'number'] : ['string', 'integer', 'boolean', 'enum', 'const', 'object', 'array', 'anyOf', 'null', 'number', 'tuple'];
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
      return r() < 0.5
        ? { anyOf: [{ type: 'integer', minimum: 0, maximum: 9 }, { type: 'string', maxLength: 4 }, { type: 'null' }] }
        : { oneOf: [{ type: 'object', properties: { kind: { const: 'a' }, x: { type: 'integer', minimum: 0, maximum: 5 } }, required: ['kind', 'x'], additionalProperties: false }, { type: 'object', properties: { kind: { const: 'b' } }, required: ['kind'], additionalProperties: false }] };
    case 'number':
      return { type: 'number', minimum: -3, maximum: 40 };
    case 'tuple':
      return { type: 'array', prefixItems: [{ type: 'boolean' }, { enum: ['x', 'y'] }], items: false };
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
    const ajv = new Ajv2020({ strict: false });
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

describe('refused schemas', () => {
  it('keywords that cannot be enforced are an error that names them, never ignored', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ type: 'string', format: 'email' }, /#: the keyword 'format'/],
      [{ type: 'object', properties: { a: { not: { type: 'null' } } } }, /#\/properties\/a: the keyword 'not'/],
      [{ type: 'array', items: { type: 'integer' }, uniqueItems: true }, /'uniqueItems'/],
      [{ type: 'number', multipleOf: 3 }, /'multipleOf'/],
      [{ type: 'number', minimum: 1.5 }, /whole-number bounds/],
      [{ oneOf: [{ type: 'integer' }, { type: 'integer', minimum: 5 }] }, /oneOf: its alternatives may overlap/],
      [{ $ref: 'https://example.com/schema.json' }, /only local references/],
      [{ type: 'text' }, /'text' is not a JSON Schema type/],
    ];
    for (const [schema, message] of cases) await expect(model.generate('x', { jsonSchema: schema })).rejects.toThrow(message);
  });

  it('only one constraint at a time', async () => {
    await expect(model.generate('x', { jsonSchema: { type: 'integer' }, regex: '\\d+' })).rejects.toThrow(/only one of/);
  });
});

describe('regular expressions and GBNF', () => {
  it('outputs match the whole regular expression', async () => {
    const patterns = ['\\d{3}-\\d{4}', '[A-Z][a-z]{2,5} (is|was) [a-z]{1,6}', '(yes|no|maybe)', '[^0-9\\n]{4}', 'x.y', '\\w{1,8}@(example|test)\\.(com|org)', '[+-]?\\d{1,3}(\\.\\d{1,2})?', 'caf\u00e9|na\u00efve'];
    for (const [k, p] of patterns.entries()) {
      const runs = await Promise.all([0, 0.9, 1.4].map((temperature, j) => model.generate('The function', { regex: p, temperature, seed: k * 3 + j, maxTokens: 40 })));
      for (const r of runs) {
        expect(r.finishReason).toBe('eos');
        expect(r.text).toMatch(new RegExp(`^(?:${p})$`));
      }
    }
    const re = await model.generate('x', { regex: /[a-c]{3}/, temperature: 1, seed: 1 });
    expect(re.text).toMatch(/^[a-c]{3}$/);
  });

  it('outputs belong to the GBNF grammar', async () => {
    const list = await model.generate('Items:', { grammar: 'root ::= item ("," " "? item){2}\nitem ::= "apple" | "pear" | [0-9]{1,3} # a fruit or a number\n', temperature: 1.2, seed: 3, maxTokens: 40 });
    expect(list.finishReason).toBe("eos");
    expect(list.text).toMatch(/^(apple|pear|[0-9]{1,3})(, ?(apple|pear|[0-9]{1,3})){2}$/);
    const yesNo = await model.generate('Is it?', { grammar: 'root ::= "yes" | "no"' });
    expect(['yes', 'no']).toContain(yesNo.text);
    const wide = await model.generate('x', { grammar: 'root ::= [\u0100-\u0102]{3} [^a-z]', temperature: 1, seed: 2 });
    expect(wide.text).toMatch(/^[\u0100-\u0102]{3}[^a-z]$/u);
  });

  it('grammar mistakes are errors with their place; a grammar nothing can satisfy is an error, not a hang', async () => {
    await expect(model.generate('x', { grammar: 'root ::= "a' })).rejects.toThrow(/line 1, column \d+: unterminated string/);
    await expect(model.generate('x', { grammar: 'root ::= "a"\nitem ::= [a-' })).rejects.toThrow(/line 2/);
    await expect(model.generate('x', { grammar: 'root ::= item' })).rejects.toThrow(/'item' is used but not defined/);
    await expect(model.generate('x', { grammar: 'start ::= "a"' })).rejects.toThrow(/no rule named root/);
    await expect(model.generate('x', { grammar: 'root ::= "a" )' })).rejects.toThrow(/unexpected '\)'/);
    await expect(model.generate('x', { regex: '(a' })).rejects.toThrow(/missing \)/);
    await expect(model.generate('x', { regex: '(a)\\1' })).rejects.toThrow(/back-references/);
    await expect(model.generate('x', { grammar: 'root ::= root' })).rejects.toThrow(/cannot be satisfied/);
    // the model still works after all of that
    expect((await model.generate('Is it?', { grammar: 'root ::= "yes" | "no"' })).finishReason).toBe('eos');
  });
});

describe('token masks', () => {
  // What each token spells, worked out here from the tokenizer's stored strings.
  function tokenBytes(id: number): Buffer | null {
    const tok = model.tokenizer!;
    if (tok.isSpecial(id)) return null;
    const text = tok.tokenText(id) ?? '';
    const byte = /^<0x([0-9A-F]{2})>$/.exec(text);
    return byte ? Buffer.from([parseInt(byte[1]!, 16)]) : Buffer.from(text.replaceAll('\u2581', ' '), 'utf8');
  }

  it('allow exactly the tokens that keep the output a prefix of the language (brute force)', async () => {
    const vocab = model.config.vocabSize;
    const eos = 2;
    const languages: [string, string[]][] = [
      ['root ::= "yes" | "no" | "maybe so" | "yesterday"', ['yes', 'no', 'maybe so', 'yesterday']],
      ['root ::= "a"{1,3} "b"', ['ab', 'aab', 'aaab']],
      ['root ::= ("the" | "an") " " ("cat" | "owl")', ['the cat', 'the owl', 'an cat', 'an owl']],
    ];
    const r = rng(7);
    for (const [grammar, words] of languages) {
      const language = words.map((w) => Buffer.from(w));
      for (let walk = 0; walk < 4; walk++) {
        const c = await Constraint.create(model.tokenizer!, vocab, [eos], { grammar });
        let prefix = Buffer.alloc(0);
        for (let step = 0; step < 12; step++) {
          await c.prepare();
          const mask = c.mask!;
          const allowed: number[] = [];
          const expected: number[] = [];
          for (let id = 0; id < vocab; id++) {
            if ((mask[id >> 5]! >>> (id & 31)) & 1) allowed.push(id);
            const bytes = tokenBytes(id);
            if (id === eos) {
              if (language.some((w) => w.equals(prefix))) expected.push(id);
            } else if (bytes && bytes.length > 0) {
              const next = Buffer.concat([prefix, bytes]);
              if (language.some((w) => w.length >= next.length && w.subarray(0, next.length).equals(next))) expected.push(id);
            }
          }
          expect(allowed).toEqual(expected);
          const choice = expected[Math.floor(r() * expected.length)]!;
          c.accept(choice);
          if (choice === eos) break;
          prefix = Buffer.concat([prefix, tokenBytes(choice)!]);
        }
        c.dispose();
      }
    }
  });
});

describe('with every sampler setting', () => {
  it('the output obeys the constraint whatever the sampler does', async () => {
    const settings = [{ temperature: 0.9, topK: 5 }, { temperature: 1.2, topP: 0.8 }, { temperature: 1, minP: 0.2 }, { temperature: 1, typicalP: 0.7 }, { temperature: 0.8, repetitionPenalty: 1.3, presencePenalty: 0.5, frequencyPenalty: 0.5 }, { temperature: 0 }, { temperature: 1, logitBias: { 100: -Infinity, 200: 5 } }, { temperature: 1, logprobs: 3 }];
    for (const [i, s] of settings.entries()) {
      const r = await model.generate('x', { ...s, regex: '[a-z]{2,6}-\\d{2}', seed: i, maxTokens: 20 });
      expect(r.finishReason).toBe('eos');
      expect(r.text).toMatch(/^[a-z]{2,6}-\d{2}$/);
    }
  });
});

describe('with batching', () => {
  it('each sequence keeps its own constraint, and unconstrained neighbours their text', async () => {
    const plain = ['The function', 'Python is', 'A list'];
    const alone = [];
    for (const p of plain) alone.push((await model.generate(p, { maxTokens: 24 })).text);
    const schema = { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['n'], additionalProperties: false };
    const mixed = await Promise.all([
      ...plain.map((p) => model.generate(p, { maxTokens: 24 })),
      model.generate('x', { jsonSchema: schema, temperature: 1, seed: 1 }),
      model.generate('x', { regex: '\\d{2}-[a-z]{2}', temperature: 1, seed: 2 }),
      model.generate('x', { grammar: 'root ::= "left" | "right"', temperature: 1, seed: 3 }),
      model.generate('x', { json: true, temperature: 0.7, seed: 4, maxTokens: 120 }),
    ]);
    expect(mixed.slice(0, 3).map((r) => r.text)).toEqual(alone);
    expect(JSON.parse(mixed[3]!.text)).toMatchObject({ n: expect.any(Number) });
    expect(mixed[4]!.text).toMatch(/^\d{2}-[a-z]{2}$/);
    expect(['left', 'right']).toContain(mixed[5]!.text);
    if (mixed[6]!.finishReason === 'eos') expect(typeof JSON.parse(mixed[6]!.text)).toBe('object');
  });
});
