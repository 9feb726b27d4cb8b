// The fuzz targets. Each takes { rng, cache, work, log, start, untimed } (start: its inputs
// are made, the event-loop clock starts; untimed(fn): fn is the harness's own work) and either returns (success),
// throws the library's error (classified clean or unclean by the caller) or throws Wrong
// when the library answered but the answer breaks a promise of the README.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { INTERESTING, mutateJson, mutateText, mutateValue } from './random.mjs';

/** A result that breaks a promise: wrong numbers, lost data, leaked memory. */
export class Wrong extends Error {}

/** An error that came from the JavaScript engine rather than a check of laminate's. */
export class Unclean extends Error {}

const INTERNAL =
  /Cannot read propert|Cannot set propert|Cannot destructure|Cannot create property|(?<!that )is not a function|is not iterable|is not a constructor|Maximum call stack|Invalid array length|Invalid typed array length|Array buffer allocation failed|Cannot convert|Cannot mix BigInt|Reduce of empty array|out of memory/;

/** 'error' for an error a caller can act on, 'unclean' for one that leaks an internal failure. */
export function classify(e) {
  if (e instanceof Unclean) return { outcome: 'unclean', detail: e.message.slice(0, 300) };
  if (!(e instanceof Error)) return { outcome: 'unclean', detail: `a non-Error was thrown: ${String(e).slice(0, 200)}` };
  const text = `${e.name}: ${e.message}`;
  return { outcome: INTERNAL.test(e.message) ? 'unclean' : 'error', detail: text.slice(0, 300) };
}

/** Runs `fn`; a clean error is returned (and logged), an unclean one thrown. */
async function attempt(log, what, fn) {
  try {
    return { value: await fn() };
  } catch (e) {
    const c = classify(e);
    if (c.outcome === 'unclean') throw new Unclean(`${what}: ${c.detail}`);
    log(`${what}: ${c.detail}`);
    return { error: e };
  }
}

let library;
const lib = async () => (library ??= await import('../dist/index.js'));

function copyModel(from, to, linkWeights = true) {
  mkdirSync(to, { recursive: true });
  for (const f of readdirSync(from)) {
    if (linkWeights && f.endsWith('.safetensors')) symlinkSync(join(from, f), join(to, f));
    else copyFileSync(join(from, f), join(to, f));
  }
}

function readSafetensors(path) {
  const blob = readFileSync(path);
  const n = Number(blob.readBigUInt64LE(0));
  return { header: JSON.parse(blob.subarray(8, 8 + n).toString('utf8')), data: blob.subarray(8 + n) };
}

function writeSafetensors(path, header, data, lengthOverride) {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(text.length));
  writeFileSync(path, Buffer.concat([len, text, data]));
}

function rewriteJson(rng, file) {
  const text = readFileSync(file, 'utf8');
  if (rng.chance(0.2)) {
    const m = mutateText(rng, text);
    writeFileSync(file, m.text);
    return m.what;
  }
  let root = JSON.parse(text);
  const whats = [];
  for (let i = rng.int(1, 3); i > 0; i--) {
    const m = mutateJson(rng, root);
    root = m.root;
    whats.push(m.what);
  }
  writeFileSync(file, JSON.stringify(root));
  return whats.join('; ');
}

/** Mutates a safetensors file: its header JSON, its length field or its size. */
function rewriteSafetensors(rng, file, focus) {
  const { header, data } = readSafetensors(file);
  const kind = rng.int(0, 9);
  if (kind === 0) {
    const bad = rng.pick([0n, 1n, 7n, BigInt(JSON.stringify(header).length + 1), 2n ** 63n, 2n ** 64n - 1n, 100000000n]);
    writeSafetensors(file, header, data, bad);
    return `header length field = ${bad}`;
  }
  if (kind === 1) {
    const keep = rng.int(0, data.length);
    writeSafetensors(file, header, data.subarray(0, keep));
    return `data cut to ${keep} bytes`;
  }
  if (kind === 2) {
    writeSafetensors(file, mutateText(rng, JSON.stringify(header)).text, data);
    return 'header text damaged';
  }
  const names = Object.keys(header).filter((k) => k !== '__metadata__' && (!focus || focus.test(k)));
  const name = rng.pick(names.length ? names : Object.keys(header));
  const entry = header[name];
  let what;
  switch (rng.int(0, 4)) {
    case 0:
      entry.dtype = rng.pick(['F32', 'F16', 'BF16', 'I8', 'U8', 'I16', 'I32', 'I64', 'F64', 'BOOL', 'F8_E4M3', 'X', 7]);
      what = `dtype of ${name} = ${entry.dtype}`;
      break;
    case 1:
      entry.shape = rng.chance(0.5) ? entry.shape.map((d) => (rng.chance(0.5) ? mutateValue(rng, d) : d)) : rng.pick([[], [0], [1], [2 ** 31, 2 ** 31], [...entry.shape, 1], entry.shape.slice(1)]);
      what = `shape of ${name} = ${JSON.stringify(entry.shape)}`;
      break;
    case 2:
      entry.data_offsets = entry.data_offsets.map((o) => (rng.chance(0.5) ? mutateValue(rng, o) : o));
      what = `offsets of ${name} = ${JSON.stringify(entry.data_offsets)}`;
      break;
    case 3:
      delete header[name];
      what = `${name} removed`;
      break;
    default: {
      const m = mutateJson(rng, header);
      what = m.what;
    }
  }
  writeSafetensors(file, header, data);
  return what;
}

// Chat templates that a hostile or broken model directory might carry.
const TEMPLATES = [
  '',
  '{{ bos_token }}',
  '{% for i in range(100000000) %}{{ i }}{% endfor %}',
  '{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}',
  "{{ 'x' * 100000000 }}",
  "{% set s = namespace(t='ab') %}{% for i in range(40) %}{% set s.t = s.t ~ s.t %}{% endfor %}{{ s.t }}",
  '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(1) }}',
  "{{ raise_exception('refused') }}",
  "{{ messages[0]['content'] * 100000 }}",
  '{% for m in messages %}{{ m.content.missing.deeper }}{% endfor %}',
  '{{ undefined_name(1) }}',
  '{% for m in messages %}',
  '{{ messages | tojson }}',
  "{% for m in messages %}{{ '[INST]' + m['content'] + '[/INST]' }}{% endfor %}",
];

/** Mutated copies of the demo model directory: load, generate, chat. */
export async function modelDir({ rng, cache, work, log, start }) {
  const { loadModel } = await lib();
  const dir = join(work, 'model');
  copyModel(cache.demo, dir);
  const files = readdirSync(dir);
  for (let i = rng.int(1, 2); i > 0; i--) {
    const file = rng.pick([...files, 'tokenizer_config.json#template', 'tokenizer_config.json#template', 'config.json', 'model.safetensors']);
    const path = join(dir, file.split('#')[0]);
    if (!existsSync(path)) continue;
    if (file.endsWith('#template')) {
      const config = JSON.parse(readFileSync(path, 'utf8'));
      config.chat_template = rng.chance(0.3) ? mutateText(rng, config.chat_template ?? '').text : rng.pick(TEMPLATES);
      writeFileSync(path, JSON.stringify(config));
      log(`template: ${String(config.chat_template).slice(0, 80)}`);
    } else if (rng.chance(0.05)) {
      // (a linked file is unlinked first: the demo model itself is never written)
      rmSync(path);
      writeFileSync(path, '');
      log(`${file} emptied`);
    } else if (file.endsWith('.safetensors')) {
      // the link is replaced by a mutated copy
      rmSync(path);
      copyFileSync(join(cache.demo, file), path);
      log(`${file}: ${rewriteSafetensors(rng, path)}`);
    } else if (file.endsWith('.json')) {
      log(`${file}: ${rewriteJson(rng, path)}`);
    }
  }
  start();
  const model = await loadModel(dir, { contextSize: 256, threads: 1 }).catch((e) => {
    // a loader error must say which file it is about
    if (classify(e).outcome === 'error' && e.name !== 'ChatTemplateError' && !files.some((f) => e.message.includes(f)) && !e.message.includes(dir)) {
      throw new Unclean(`a load error that names no file: ${e.message.slice(0, 200)}`);
    }
    throw e;
  });
  try {
    const vocab = model.config.vocabSize;
    const g = await attempt(log, 'generate', () => model.generate('The function', { maxTokens: 4 }));
    if (g.value) {
      if (g.value.tokens.length > 4 || g.value.tokens.some((t) => !Number.isInteger(t) || t < 0 || t >= vocab)) throw new Wrong(`generate returned ${JSON.stringify(g.value.tokens)}`);
    }
    const c = await attempt(log, 'chat', () => model.chat([{ role: 'user', content: 'hi' }], { maxTokens: 4 }));
    if (c.value && typeof c.value.text !== 'string') throw new Wrong('chat returned no text');
    return `loaded; generate ${g.error ? 'refused' : 'ran'}; chat ${c.error ? 'refused' : 'ran'}`;
  } finally {
    model.dispose();
  }
}

function fp16Bits(x) {
  const view = new DataView(new ArrayBuffer(4));
  view.setFloat32(0, x);
  const f = view.getUint32(0);
  const sign = (f >>> 16) & 0x8000;
  if (Number.isNaN(x)) return 0x7e00;
  if (!Number.isFinite(x) || Math.abs(x) >= 65520) return sign | 0x7c00;
  const exp = ((f >>> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign;
  return sign | (exp << 10) | ((f >>> 13) & 0x3ff);
}

/** Mutated EXL2 tensors of a quantized copy of the demo model: load, then forward. */
export async function exl2({ rng, cache, work, log, start }) {
  const { loadModel } = await lib();
  const dir = join(work, 'model');
  copyModel(cache.exl2, dir, false);
  const shards = readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  const file = join(dir, rng.pick(shards));
  let finiteExpected = true;
  if (rng.chance(0.3)) {
    log(rewriteSafetensors(rng, file, /\.q_/));
    finiteExpected = false;
  } else if (rng.chance(0.15)) {
    log(`config.json: ${rewriteJson(rng, join(dir, 'config.json'))}`);
    finiteExpected = false;
  } else {
    // values inside one tensor: codes, scales, groups, permutations
    const { header, data } = readSafetensors(file);
    const names = Object.keys(header).filter((k) => /\.q_/.test(k));
    const name = rng.pick(names);
    const { dtype, data_offsets: [start, end] } = header[name];
    const bytes = Buffer.from(data.subarray(start, end));
    const width = dtype === 'F16' || dtype === 'I16' ? 2 : dtype === 'I32' || dtype === 'F32' ? 4 : 1;
    const count = bytes.length / width;
    const changes = rng.int(1, 4);
    for (let i = 0; i < changes; i++) {
      const at = rng.int(0, count - 1) * width;
      if (name.endsWith('q_scale_max')) {
        const v = rng.pick([NaN, Infinity, -Infinity, 0, -1, 1e-8, 0.01, 1, 2]);
        bytes.writeUInt16LE(fp16Bits(v), at);
        log(`${name}[${at / 2}] = ${v}`);
      } else if (width === 4) {
        const v = rng.pick([...INTERESTING.filter((x) => typeof x === 'number' && Number.isInteger(x) && Math.abs(x) < 2 ** 31), rng.int(0, 4096)]);
        bytes.writeInt32LE(v | 0, at);
        log(`${name}[${at / 4}] = ${v | 0}`);
      } else {
        bytes[at] = rng.int(0, 255);
        log(`${name} byte ${at} changed`);
      }
    }
    // random codes and scales still make finite weights; tables and permutations may not load
    finiteExpected = /\.q_(weight|scale)$/.test(name);
    data.set(bytes, start);
    writeSafetensors(file, header, data);
  }
  start();
  const model = await loadModel(dir, { contextSize: 128, threads: 1 });
  try {
    const logits = await model.forward([1, 366, 474, 259]);
    if (logits.length !== model.config.vocabSize) throw new Wrong(`forward gave ${logits.length} logits`);
    const bad = logits.findIndex((x) => !Number.isFinite(x));
    if (finiteExpected && bad >= 0) throw new Wrong(`logit ${bad} is ${logits[bad]} after a change that keeps every weight finite`);
    return bad >= 0 ? 'loaded; non-finite logits' : 'loaded; finite logits';
  } finally {
    model.dispose();
  }
}

const JUNK_METHODS = ['constructor', '__proto__', 'toString', 'hasOwnProperty', '', 'LINEAR', 7, null, 'della'];
// What each method takes: per-model parameters, global ones, and whether it needs a base model.
const METHODS = {
  passthrough: { perModel: [], global: [], base: false },
  linear: { perModel: ['weight'], global: ['normalize'], base: false },
  slerp: { perModel: [], global: ['t'], base: true, two: true },
  task_arithmetic: { perModel: ['weight'], global: ['normalize'], base: true },
  ties: { perModel: ['weight', 'density'], global: ['normalize', 'int8_mask'], base: true },
  dare_ties: { perModel: ['weight', 'density'], global: ['normalize', 'int8_mask'], base: true },
  dare_linear: { perModel: ['weight', 'density'], global: ['normalize'], base: true },
  breadcrumbs: { perModel: ['weight', 'density', 'gamma'], global: ['normalize'], base: true },
  breadcrumbs_ties: { perModel: ['weight', 'density', 'gamma'], global: ['normalize', 'int8_mask'], base: true },
  model_stock: { perModel: [], global: ['filter_wise'], base: true },
};

function paramValue(rng, name) {
  if (name === 'normalize' || name === 'int8_mask' || name === 'filter_wise') return rng.chance(0.5);
  if (rng.chance(0.15)) return Array.from({ length: rng.int(2, 5) }, () => rng.pick([0, 0.25, 0.5, 1]));
  if (rng.chance(0.1)) return [{ filter: rng.pick(['self_attn', 'mlp']), value: rng.pick([0, 0.5, 1]) }, { value: rng.pick([0.3, 1]) }];
  return name === 'gamma' ? rng.pick([0, 0.01, 0.1]) : rng.pick([0, 0.1, 0.3, 0.5, 0.7, 1, 1.5, -0.5]);
}

function params(rng, names) {
  const out = {};
  for (const n of names) if (rng.chance(0.7)) out[n] = paramValue(rng, n);
  return Object.keys(out).length ? out : undefined;
}

/** A configuration that follows each method's rules, over models a, b and c. */
function validMergeConfig(rng, method, [a, b, c]) {
  const rule = METHODS[method];
  const config = { merge_method: method, dtype: rng.pick(['bfloat16', 'float16', 'float32']) };
  if (rng.chance(0.3)) config.out_dtype = rng.pick(['bfloat16', 'float16', 'float32']);
  if (rule.base) config.base_model = a;
  const global = params(rng, rule.global);
  if (global) config.parameters = global;
  const others = rule.two ? [b] : [b, c].slice(0, rng.int(1, 2));
  if (method === 'passthrough') {
    config.slices = Array.from({ length: rng.int(1, 3) }, () => {
      const start = rng.int(0, 7);
      return { sources: [{ model: rng.pick([a, b, c]), layer_range: [start, rng.int(start + 1, 8)] }] };
    });
  } else if (rng.chance(0.5)) {
    config.models = [...(rule.base && rng.chance(0.5) ? [a] : []), ...others].map((model) => ({ model, parameters: params(rng, rule.perModel) }));
  } else {
    config.slices = Array.from({ length: rng.int(1, 2) }, () => {
      const start = rng.int(0, 7);
      const layer_range = [start, rng.int(start + 1, 8)];
      return { sources: [...(rule.base ? [a] : []), ...others].map((model) => ({ model, layer_range, parameters: params(rng, rule.perModel) })) };
    });
  }
  return JSON.parse(JSON.stringify(config));
}

/** Usually a valid configuration, often with one or two mutations; sometimes a method that does not exist. */
function randomMergeConfig(rng, models) {
  const method = rng.chance(0.93) ? rng.pick(Object.keys(METHODS)) : rng.pick(JUNK_METHODS);
  const known = Object.hasOwn(METHODS, method);
  let config = validMergeConfig(rng, known ? method : 'linear', models);
  if (!known) config.merge_method = method;
  else if (rng.chance(0.5)) {
    for (let i = rng.int(1, 2); i > 0; i--) config = mutateJson(rng, config).root;
  }
  return config;
}

const digest = (dir) =>
  readdirSync(dir)
    .sort()
    .map((f) => {
      const s = statSync(join(dir, f));
      return `${f}:${s.size}:${s.isFile() ? createHash('sha1').update(readFileSync(join(dir, f))).digest('hex') : 'dir'}`;
    })
    .join('\n');

/** Random mergekit configurations and output paths over three copies of the demo model. */
export async function mergeConfigs({ rng, cache, work, log, start, untimed }) {
  const { merge, loadModel } = await lib();
  const inputs = [cache.demo, cache.mergeB, cache.mergeC];
  const before = inputs.map(digest);
  const config = randomMergeConfig(rng, inputs);
  log(JSON.stringify(config));
  // the output: usually new; sometimes a file, a full directory, an input or a place that cannot be written
  let out = join(work, 'out');
  let guarded; // something that must survive a refused merge
  const overwrite = rng.chance(0.3);
  switch (rng.int(0, 14)) {
    case 0:
      writeFileSync(out, 'precious');
      guarded = () => readFileSync(out, 'utf8') === 'precious';
      break;
    case 1:
      mkdirSync(out);
      writeFileSync(join(out, 'notes.txt'), 'precious');
      if (!overwrite) guarded = () => existsSync(join(out, 'notes.txt'));
      break;
    case 2:
      out = rng.pick(['/proc/self/laminate-out', '/dev/null', '/', '', inputs[0], join(inputs[0], '..'), join(work, 'a/b/../../out')]);
      break;
    default:
  }
  log(`output ${out}${overwrite ? ' (overwrite)' : ''}`);
  start();
  const merged = await attempt(log, 'merge', () => merge(config, out, { overwrite, seed: rng.int(0, 9), outShardSize: rng.pick([5e9, 1e6, 1]) }));
  const after = untimed(() => inputs.map((d) => (existsSync(d) ? digest(d) : 'missing')));
  for (let i = 0; i < inputs.length; i++) if (after[i] !== before[i]) throw new Wrong(`input model ${inputs[i]} changed`);
  if (merged.error) {
    if (guarded && !untimed(guarded)) throw new Wrong(`a refused merge damaged what was at ${out}`);
    throw merged.error;
  }
  const loaded = await attempt(log, 'load the merged model', () => loadModel(out, { contextSize: 64, threads: 1 }));
  if (loaded.error) throw new Wrong(`the merged model does not load: ${loaded.error.message.slice(0, 200)}`);
  try {
    const logits = await loaded.value.forward([1, 366]);
    if (logits.length !== loaded.value.config.vocabSize) throw new Wrong('the merged model gives the wrong number of logits');
  } finally {
    loaded.value.dispose();
  }
  return `merged ${config.merge_method}`;
}

const PROMPTS = ['The function', '', ' ', 'x'.repeat(3000), '</s>[INST] hi [/INST]', '\u0000\ud800', 'Hello world. '.repeat(30), '日本語のテキスト 😀'];

function randomSampler(rng) {
  const o = {};
  const fields = {
    maxTokens: () => rng.pick([1, 2, 5, 12, 0, -1, 1e9, 2.5]),
    temperature: () => rng.pick([0, 0.7, 1, 2, -1, NaN]),
    topK: () => rng.pick([0, 1, 5, 40, -3, 1e9]),
    topP: () => rng.pick([0.1, 0.9, 1, 0, 1.5]),
    minP: () => rng.pick([0, 0.05, 1, -0.1]),
    seed: () => rng.pick([0, 1, 42, -1, 2 ** 40]),
    repetitionPenalty: () => rng.pick([1, 1.2, 0, -1]),
    stop: () => rng.pick([['.'], [''], ['\n', 'the'], 'x', [7]]),
    logitBias: () => rng.pick([{ 2: -100 }, { 99999: 5 }, { '-1': 1 }, { 366: 100 }, { a: 1 }]),
    stopAtEos: () => rng.chance(0.5),
    jsonSchema: () => rng.pick([{ type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] }, { type: 'nonsense' }, { enum: [] }]),
    regex: () => rng.pick(['[a-z]{3}', '(', 'a*b', '']),
    grammar: () => rng.pick(['root ::= "yes" | "no"', 'root ::= ', 'root ::= [a-', 'root ::= x\nx ::= root']),
  };
  for (const [k, f] of Object.entries(fields)) if (rng.chance(k === 'maxTokens' ? 0.9 : 0.15)) o[k] = f();
  if (!('maxTokens' in o) || !(o.maxTokens > 0 && o.maxTokens < 16)) o.maxTokens = rng.chance(0.9) ? rng.int(1, 12) : o.maxTokens;
  return o;
}

/** Random sequences of API calls on one model, at random concurrency, with a greedy reference among them. */
export async function apiCalls({ rng, cache, log, start }) {
  const { loadModel } = await lib();
  start();
  const model = await loadModel(cache.demo, { contextSize: 512, kvCacheTokens: rng.pick([512, 1024, 4096]), threads: 1, maxQueue: rng.pick([0, 4, 64]), prefixCache: rng.chance(0.8) });
  const reference = (await model.generate('The function', { maxTokens: 10, stopAtEos: false })).tokens;
  const running = new Set();
  const sequences = [];
  let disposed = false;
  const launch = (what, fn) => {
    const p = attempt(log, what, fn).finally(() => running.delete(p));
    running.add(p);
  };
  const ops = [
    () =>
      launch('generate', async () => {
        const controller = new AbortController();
        const prompt = rng.chance(0.2) ? Array.from({ length: rng.int(0, 20) }, () => rng.pick([1, 366, 474, 2047, 2048, -1, 0.5])) : rng.pick(PROMPTS);
        const g = model.generate(prompt, { ...randomSampler(rng), signal: controller.signal });
        const how = rng.int(0, 3);
        if (how === 0) return g;
        let n = 0;
        const stopAt = rng.int(0, 4);
        for await (const _ of g) {
          if (++n >= stopAt) {
            if (how === 1) break;
            if (how === 2) controller.abort();
          }
        }
        return g;
      }),
    () =>
      launch('greedy reference', async () => {
        const { tokens } = await model.generate('The function', { maxTokens: 10, stopAtEos: false });
        if (tokens.join() !== reference.join()) throw new Wrong(`greedy generation amid others gave ${tokens} instead of ${reference}`);
      }),
    () =>
      launch('chat', () =>
        model.chat(
          rng.pick([
            [{ role: 'user', content: 'hi' }],
            [],
            [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'x' }],
            [{ role: 'assistant', content: 'a' }],
            [{ role: 'user', content: 7 }],
            [{ role: 'nobody', content: 'x' }],
            [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }, { role: 'user', content: 'q2' }],
          ]),
          randomSampler(rng),
        ),
      ),
    () =>
      launch('chat session', async () => {
        const chat = model.createChat({ system: rng.chance(0.5) ? 'sys' : undefined });
        const turn = chat.send('hello', randomSampler(rng));
        if (rng.chance(0.4)) chat.dispose();
        try {
          await turn;
          if (rng.chance(0.5)) await chat.send('again', { maxTokens: 3 });
        } finally {
          chat.dispose();
        }
      }),
    () =>
      launch('sequence', async () => {
        const s = model.createSequence();
        sequences.push(s);
        const tokens = Array.from({ length: rng.int(0, 40) }, () => rng.pick([1, 366, 474, 5, 2047, rng.chance(0.05) ? 4096 : 7]));
        await model.step([{ sequence: s, tokens, logits: rng.pick(['none', 'last', 'all']) }]);
        if (rng.chance(0.3)) s.truncate(rng.int(-1, 50));
        if (rng.chance(0.5)) s.dispose();
      }),
    () => launch('forward', () => model.forward(Array.from({ length: rng.int(0, 10) }, () => rng.int(0, 2100)))),
    () => launch('tokenize', async () => model.detokenize(model.tokenize(rng.pick(PROMPTS)).concat(rng.chance(0.2) ? [99999] : []))),
    () => launch('dispose a sequence', async () => sequences.length && rng.pick(sequences).dispose()),
  ];
  const count = rng.int(5, 30);
  for (let i = 0; i < count; i++) {
    if (rng.chance(0.02)) {
      model.dispose();
      disposed = true;
      log('model disposed');
    }
    rng.pick(ops)();
    if (rng.chance(0.3)) await Promise.race([...running, new Promise((r) => setImmediate(r))]);
  }
  while (running.size) await Promise.all([...running]);
  if (disposed) return 'model disposed mid-way';
  for (const s of sequences) s.dispose();
  // once every request has ended, only the prefix cache may hold pages
  const stats = model.cacheStats();
  model.dispose();
  if (stats.pagesInUse > stats.cachedPages) throw new Wrong(`pages leaked: ${JSON.stringify(stats)}`);
  return `${count} calls`;
}

export const targets = { model: modelDir, exl2, merge: mergeConfigs, api: apiCalls };
