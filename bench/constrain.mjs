#!/usr/bin/env node
// Constrained decoding cost per token: the time to compute the mask of allowed tokens
// (XGrammar) and to apply it to a row of logits, on the 32768-token Mistral v0.3
// vocabulary, for a nested JSON schema, a regex and a GBNF grammar. Random walks: each
// step takes a random allowed token (end-of-sequence once allowed, half the time).
//   node bench/constrain.mjs [--tokenizer DIR] [--walks 20] [--steps 200]
import { parseArgs } from 'node:util';
import { join } from 'node:path';

import { Tokenizer } from 'laminate';
import { Constraint } from '../dist/constrain/constraint.js';

const { values } = parseArgs({
  options: {
    tokenizer: { type: 'string', default: join(import.meta.dirname, '..', '..', 'shared', 'fixtures', 'mistral-7b-instruct-v0.3') },
    walks: { type: 'string', default: '20' },
    steps: { type: 'string', default: '200' },
  },
});
const tokenizer = await Tokenizer.load(values.tokenizer);
const vocab = tokenizer.vocabSize;
const eos = tokenizer.eosTokenIds;
const schema = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 40 },
    age: { type: 'integer', minimum: 0, maximum: 150 },
    email: { type: 'string', pattern: '^[a-z0-9.]+@[a-z]+\\.[a-z]{2,3}$' },
    address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' }, zip: { type: 'string', pattern: '^[0-9]{5}$' } }, required: ['street', 'city', 'zip'], additionalProperties: false },
    tags: { type: 'array', items: { type: 'string', maxLength: 12 }, maxItems: 5 },
    orders: { type: 'array', items: { type: 'object', properties: { id: { type: 'integer' }, items: { type: 'array', items: { enum: ['book', 'pen', 'lamp'] } }, paid: { type: 'boolean' } }, required: ['id', 'items', 'paid'], additionalProperties: false }, maxItems: 3 },
  },
  required: ['name', 'age', 'address', 'orders'],
  additionalProperties: false,
};
const cases = [
  ['nested JSON schema', { jsonSchema: schema }],
  ['any JSON object', { json: true }],
  ['regex', { regex: '[A-Z][a-z]+ [0-9]{1,4}( [a-z]+)*\\.' }],
  ['GBNF', { grammar: 'root ::= sentence (" " sentence)*\nsentence ::= word (" " word)* "."\nword ::= [a-z]+' }],
];
let seed = 1;
const random = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];
const logits = new Float32Array(vocab);
const t0 = performance.now();
await Constraint.create(tokenizer, vocab, eos, { json: true }).then((c) => c.dispose());
console.log(JSON.stringify({ vocab, first_compile_ms: +(performance.now() - t0).toFixed(1), note: 'vocabulary preprocessing, once per tokenizer' }));
for (const [name, options] of cases) {
  const compile = [];
  const mask = [];
  const apply = [];
  let tokens = 0;
  for (let w = 0; w < Number(values.walks); w++) {
    let t = performance.now();
    const c = await Constraint.create(tokenizer, vocab, eos, options);
    compile.push(performance.now() - t);
    for (let s = 0; s < Number(values.steps); s++) {
      t = performance.now();
      await c.prepare();
      mask.push((performance.now() - t) * 1000);
      logits.fill(0);
      t = performance.now();
      c.apply(logits);
      apply.push((performance.now() - t) * 1000);
      const allowed = [];
      for (let id = 0; id < vocab; id++) if (logits[id] === 0) allowed.push(id);
      const ends = allowed.filter((id) => eos.includes(id));
      const id = ends.length && random() < 0.5 ? ends[0] : allowed[Math.floor(random() * allowed.length)];
      c.accept(id);
      tokens++;
      if (eos.includes(id)) break;
    }
    c.dispose();
  }
  console.log(JSON.stringify({
    constraint: name,
    tokens,
    compile_ms_median: +quantile(compile, 0.5).toFixed(2),
    mask_us_median: +quantile(mask, 0.5).toFixed(1),
    mask_us_p90: +quantile(mask, 0.9).toFixed(1),
    mask_us_p99: +quantile(mask, 0.99).toFixed(1),
    mask_us_mean: +(mask.reduce((a, b) => a + b, 0) / mask.length).toFixed(1),
    apply_us_median: +quantile(apply, 0.5).toFixed(1),
  }));
}
