// Untrusted files: every way a checkpoint can lie gives a thrown Error that names the file
// (and the tensor where there is one), never a crash, a hang or a read past the end.
import { copyFileSync, cpSync, readFileSync, rmSync, truncateSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { demoModelDir, loadModel } from '../lib/index.js';
import { native } from '../lib/native.js';
import { tmpDir, writeTinyCheckpoint } from './helpers/checkpoint.js';
import { fixturesDir, haveFixtures } from './helpers/fixtures.js';

type Header = Record<string, { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | Record<string, string>>;

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A checkpoint directory whose weight file we can rewrite: real (the trained fixture's,
 * written by the safetensors library) when present, else one from the test helper. */
let source: string;
let original: Buffer;
let headerLength: number;
let header: Header;

beforeAll(async () => {
  if (haveFixtures) {
    source = join(fixturesDir, 'models/tiny-mistral-bf16');
  } else {
    source = tmpDir();
    dirs.push(source);
    await writeTinyCheckpoint(source, { hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 100, dtype: 'BF16', seed: 3 });
  }
  original = readFileSync(join(source, 'model.safetensors'));
  headerLength = Number(original.readBigUInt64LE(0));
  header = JSON.parse(original.subarray(8, 8 + headerLength).toString('utf8')) as Header;
});

function workDir(): string {
  const dir = tmpDir();
  dirs.push(dir);
  for (const f of ['config.json', 'generation_config.json']) copyFileSync(join(source, f), join(dir, f));
  return dir;
}

/** Writes model.safetensors with the given header bytes (or JSON) and the original data. */
function withHeader(h: Header | string | Buffer, lengthField?: bigint): string {
  const dir = workDir();
  const bytes = Buffer.isBuffer(h) ? h : Buffer.from(typeof h === 'string' ? h : JSON.stringify(h));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthField ?? BigInt(bytes.length));
  writeFileSync(join(dir, 'model.safetensors'), Buffer.concat([len, bytes, original.subarray(8 + headerLength)]));
  return dir;
}

function withFile(mutate: (b: Buffer) => Buffer): string {
  const dir = workDir();
  writeFileSync(join(dir, 'model.safetensors'), mutate(Buffer.from(original)));
  return dir;
}

async function expectLoadError(dir: string, pattern: RegExp, names = 'model.safetensors'): Promise<void> {
  const err = await loadModel(dir, { threads: 1 }).then(
    (m) => {
      m.dispose();
      return null;
    },
    (e: unknown) => e as Error,
  );
  expect(err, 'load should fail').toBeInstanceOf(Error);
  expect(err!.message).toMatch(pattern);
  expect(err!.message).toContain(join(dir, names));
}

const tensorNames = (): string[] => Object.keys(header).filter((k) => k !== '__metadata__');
const edit = (name: string, change: (e: Record<string, unknown>) => void): Header => {
  const h = structuredClone(header);
  change(h[name] as Record<string, unknown>);
  return h;
};

describe('header mutations', () => {
  it('length field: zero, too small, past the end, huge, one off', async () => {
    const data = original.length - 8 - headerLength;
    const raw = original.subarray(8, 8 + headerLength);
    for (const field of [0n, 1n, BigInt(original.length), BigInt(original.length - 7), 2n ** 63n, 2n ** 64n - 1n])
      await expectLoadError(withHeader(raw, field), /header length|too small/);
    // one byte more or less: the JSON or the data layout no longer adds up
    await expectLoadError(withFile((b) => (b.writeBigUInt64LE(BigInt(headerLength + 1)), b)), /JSON|UTF-8|cover|gap|past/);
    await expectLoadError(withFile((b) => (b.writeBigUInt64LE(BigInt(headerLength - 1)), b)), /JSON|UTF-8|cover|gap|past/);
    expect(data).toBeGreaterThan(0);
  });

  it('header that is not a JSON object', async () => {
    await expectLoadError(withHeader('[1, 2]'), /not a JSON object/);
    await expectLoadError(withHeader('"text"'), /not a JSON object/);
    await expectLoadError(withHeader('{"a": '), /not valid JSON/);
    await expectLoadError(withHeader(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), /UTF-8/);
    await expectLoadError(withHeader({ ...header, __metadata__: 'x' } as unknown as Header), /__metadata__/);
  });

  it('every tensor: bad dtype, shape or offsets', async () => {
    const names = tensorNames();
    // a few tensors of each kind, the first, last and some between
    const picked = [...new Set([0, 1, 2, 5, names.length - 2, names.length - 1].map((i) => names[Math.max(0, Math.min(names.length - 1, i))]!))];
    for (const name of picked) {
      const e = header[name] as { dtype: string; shape: number[]; data_offsets: [number, number] };
      const [b, end] = e.data_offsets;
      const cases: [Header, RegExp][] = [
        [edit(name, (t) => (t['dtype'] = 'F64')), /needs|shape/],
        [edit(name, (t) => (t['dtype'] = 'I8')), /needs|dtype I8/],
        [edit(name, (t) => (t['dtype'] = 'Q9')), /unknown dtype/],
        [edit(name, (t) => (t['dtype'] = 7)), /unknown dtype/],
        [edit(name, (t) => (t['shape'] = [...e.shape.slice(0, -1), e.shape.at(-1)! * 2])), /needs/],
        [edit(name, (t) => (t['shape'] = [...e.shape, 1])), /does not match config/],
        [edit(name, (t) => (t['shape'] = [-1, ...e.shape.slice(1)])), /non-negative integers/],
        [edit(name, (t) => (t['shape'] = [1.5])), /non-negative integers/],
        [edit(name, (t) => (t['shape'] = [2 ** 52, 2 ** 20])), /needs/],
        [edit(name, (t) => (t['shape'] = 'big')), /non-negative integers/],
        [edit(name, (t) => (t['data_offsets'] = [b + 2, end + 2])), /gap|overlap|past|cover/],
        [edit(name, (t) => (t['data_offsets'] = [b, end + 2])), /needs|past the end/],
        [edit(name, (t) => (t['data_offsets'] = [b, original.length * 2])), /past the end/],
        [edit(name, (t) => (t['data_offsets'] = [end, b])), /end before/],
        [edit(name, (t) => (t['data_offsets'] = [-2, end])), /pair of non-negative/],
        [edit(name, (t) => (t['data_offsets'] = [b])), /pair of non-negative/],
        [edit(name, (t) => delete t['data_offsets']), /pair of non-negative/],
      ];
      for (const [h, pattern] of cases) await expectLoadError(withHeader(h), pattern);
    }
  });

  it('overlapping tensors, a missing tensor, a renamed tensor', async () => {
    const [a, b] = tensorNames() as [string, string];
    const h = structuredClone(header);
    (h[b] as Record<string, unknown>)['data_offsets'] = (h[a] as Record<string, unknown>)['data_offsets'];
    (h[b] as Record<string, unknown>)['shape'] = (h[a] as Record<string, unknown>)['shape'];
    (h[b] as Record<string, unknown>)['dtype'] = (h[a] as Record<string, unknown>)['dtype'];
    await expectLoadError(withHeader(h), /overlap|gap|cover/);
    const missing = structuredClone(header);
    delete missing['model.norm.weight'];
    await expectLoadError(withHeader(missing), /cover|gap/);
    const renamed = structuredClone(header);
    renamed['model.norm.weigth'] = renamed['model.norm.weight']!;
    delete renamed['model.norm.weight'];
    await expectLoadError(withHeader(renamed), /missing tensor 'model\.norm\.weight'/);
  });

  it('truncated and extended files', async () => {
    for (const size of [0, 3, 8, 12, 8 + headerLength - 1, 8 + headerLength, 8 + headerLength + 1, Math.floor(original.length / 2), original.length - 1]) {
      const dir = withFile((b) => b.subarray(0, size));
      await expectLoadError(dir, /too short|header length|past the end|cover|file ended/);
    }
    const dir = withFile((b) => b);
    appendFileSync(join(dir, 'model.safetensors'), Buffer.from([0]));
    await expectLoadError(dir, /cover/);
  });

  it('random byte flips in the header: an Error naming the file, or a model that runs', async () => {
    let x = 12345;
    const rand = (n: number) => ((x = (x * 1103515245 + 12345) % 2 ** 31), x % n);
    let failures = 0;
    for (let i = 0; i < 60; i++) {
      const dir = withFile((b) => {
        for (let j = 0; j < 1 + rand(3); j++) b[8 + rand(headerLength)]! ^= 1 << rand(8);
        return b;
      });
      try {
        const model = await loadModel(dir, { threads: 1 });
        const logits = await model.forward([1, 2, 3]);
        expect(logits.length).toBe(model.config.vocabSize);
        model.dispose();
      } catch (e) {
        failures++;
        expect(e).toBeInstanceOf(Error);
        expect((e as Error).message).toContain(dir);
      }
    }
    expect(failures).toBeGreaterThan(40);
  });
});

describe('config.json mutations', () => {
  const config = () => JSON.parse(readFileSync(join(source, 'config.json'), 'utf8')) as Record<string, unknown>;
  const cases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
    ['hidden_size 0', (c) => (c['hidden_size'] = 0), /hidden_size must be a positive integer/],
    ['hidden_size text', (c) => (c['hidden_size'] = '256'), /hidden_size must be a positive integer/],
    ['no num_hidden_layers', (c) => delete c['num_hidden_layers'], /num_hidden_layers is required/],
    ['unknown architecture', (c) => (c['architectures'] = ['GPT2LMHeadModel']), /not supported/],
    ['kv heads do not divide heads', (c) => (c['num_key_value_heads'] = 3), /multiple of num_key_value_heads/],
    ['odd head_dim', (c) => (c['head_dim'] = 33), /head_dim must be even/],
    ['one layer too many', (c) => (c['num_hidden_layers'] = (c['num_hidden_layers'] as number) + 1), /missing tensor 'model\.layers\.\d+\./],
    // not a silently shorter model: the first stored layer past the count is named
    ['one layer too few', (c) => (c['num_hidden_layers'] = (c['num_hidden_layers'] as number) - 1), /config\.json: num_hidden_layers is (\d+), but \S+model\.safetensors stores layer \1 \(tensor 'model\.layers\.\1\.[\w.]+'\)/],
    ['vocab that contradicts the embedding', (c) => (c['vocab_size'] = (c['vocab_size'] as number) + 1), /does not match config/],
    ['intermediate that contradicts the MLP', (c) => (c['intermediate_size'] = (c['intermediate_size'] as number) * 2), /does not match config/],
    ['unsupported rope scaling', (c) => (c['rope_scaling'] = { rope_type: 'yarn', factor: 4 }), /rope_scaling type "yarn"/],
    ['gelu activation', (c) => (c['hidden_act'] = 'gelu'), /hidden_act/],
    ['tie_word_embeddings that is not a boolean', (c) => (c['tie_word_embeddings'] = 'yes'), /tie_word_embeddings must be true or false/],
    // bounds: refused at once, before any per-layer work
    ['2^31 - 1 layers', (c) => (c['num_hidden_layers'] = 2147483647), /num_hidden_layers must be at most 4096/],
    ['a vocabulary of 2^30', (c) => (c['vocab_size'] = 2 ** 30), /vocab_size must be at most/],
    ['hidden_size 2^30', (c) => (c['hidden_size'] = 2 ** 30), /hidden_size must be at most/],
    ['intermediate_size 2^40', (c) => (c['intermediate_size'] = 2 ** 40), /intermediate_size must be at most/],
    ['max_position_embeddings 2^40', (c) => (c['max_position_embeddings'] = 2 ** 40), /max_position_embeddings must be at most/],
  ];
  it.each(cases)('%s', async (_name, change, pattern) => {
    const dir = workDir();
    copyFileSync(join(source, 'model.safetensors'), join(dir, 'model.safetensors'));
    const c = config();
    change(c);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(c));
    const err = await loadModel(dir).then(() => null, (e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toMatch(pattern);
    expect(err!.message).toContain(dir);
  });

  it('a tokenizer.json with a token id past any vocabulary is refused at once', async () => {
    const dir = workDir();
    copyFileSync(join(source, 'model.safetensors'), join(dir, 'model.safetensors'));
    copyFileSync(join(source, 'config.json'), join(dir, 'config.json'));
    const tokenizer = JSON.parse(readFileSync(join(demoModelDir, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
    tokenizer.model.vocab['huge'] = 2 ** 31;
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
    await expect(loadModel(dir)).rejects.toThrow(/tokenizer\.json: token id 2147483648 is outside \[0, 4194304\)/);
  });

  it('a config.json that is not JSON, and a directory with no weights', async () => {
    const dir = workDir();
    writeFileSync(join(dir, 'config.json'), '{ "hidden_size": ');
    await expect(loadModel(dir)).rejects.toThrow(/config\.json: is not valid JSON/);
    const empty = workDir();
    await expect(loadModel(empty)).rejects.toThrow(/has no model\.safetensors/);
    await expect(loadModel(join(empty, 'nope'))).rejects.toThrow(/config\.json: cannot read/);
  });
});

describe('sharded index mutations', () => {
  let sharded: string;
  beforeAll(async () => {
    sharded = tmpDir();
    dirs.push(sharded);
    await writeTinyCheckpoint(sharded, { hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 100, dtype: 'F16', shards: 2, seed: 9 });
  });
  const indexOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
  const copy = () => {
    const dir = tmpDir();
    dirs.push(dir);
    cpSync(sharded, dir, { recursive: true });
    return dir;
  };

  it('loads as written', async () => {
    await using model = await loadModel(sharded);
    expect((await model.forward([1, 2])).length).toBe(100);
  });

  it('a weight_map entry that leaves the directory', async () => {
    const dir = copy();
    const index = indexOf(dir);
    index.weight_map['model.norm.weight'] = '../model-00001-of-00002.safetensors';
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    await expect(loadModel(dir)).rejects.toThrow(/model\.safetensors\.index\.json: tensor 'model\.norm\.weight': weight_map gives .* not a file name/);
  });

  it('a missing shard, and a tensor the index places in the wrong shard', async () => {
    const dir = copy();
    rmSync(join(dir, 'model-00002-of-00002.safetensors'));
    await expect(loadModel(dir)).rejects.toThrow(/model-00002-of-00002\.safetensors: cannot open/);
    const dir2 = copy();
    const index = indexOf(dir2);
    const [name, file] = Object.entries(index.weight_map).find(([, f]) => f.startsWith('model-00002'))!;
    index.weight_map[name] = 'model-00001-of-00002.safetensors';
    writeFileSync(join(dir2, 'model.safetensors.index.json'), JSON.stringify(index));
    await expect(loadModel(dir2)).rejects.toThrow(new RegExp(`model-00001-of-00002\\.safetensors: tensor '${name.replace(/\./g, '\\.')}': is listed`));
    expect(file).toBeDefined();
  });

  it('a shard truncated after its header was read is caught by the native checks', async () => {
    const dir = copy();
    const path = join(dir, 'model-00001-of-00002.safetensors');
    const addon = native();
    const size = readFileSync(path).length;
    truncateSync(path, size - 10);
    const spec = {
      files: [path],
      tensors: [{ name: 'x', file: 0, offset: size - 100, bytes: 100, dtype: 'F32' as const, shape: [25] }],
      shape: { hiddenSize: 25, intermediateSize: 1, numAttentionHeads: 1, numKeyValueHeads: 1, headDim: 2, vocabSize: 1, rmsNormEps: 1e-5, slidingWindow: 0, contextSize: 8, ropeInvFreq: [1] },
      embedding: 0, finalNorm: 0, lmHead: 0, layers: [], isa: 'auto', threads: 1, kvPageSize: 16, kvCacheTokens: 16,
    };
    expect(() => new addon.Engine(spec)).toThrow(/lies past the end of the file/);
    expect(() => new addon.Engine({ ...spec, tensors: [{ ...spec.tensors[0]!, offset: -1 }] })).toThrow(/offset must be an integer/);
    expect(() => new addon.Engine({ ...spec, embedding: 5 })).toThrow(/embedding must be an integer/);
    expect(() => new addon.Engine({ ...spec, isa: 'avx9000' })).toThrow();
    expect(() => new addon.Engine(null as never)).toThrow(/model spec must be an object/);
  });
});

describe('options', () => {
  it('rejects unknown options, bad values and unavailable instruction sets', async () => {
    await expect(loadModel(source, { thread: 2 } as never)).rejects.toThrow(/unknown option 'thread'/);
    await expect(loadModel(source, { threads: 0 })).rejects.toThrow(/threads must be a positive integer/);
    await expect(loadModel(source, { device: 'gpu' as never })).rejects.toThrow(/device must be 'cpu', 'cuda', 'cuda:N' or 'auto'/);
    await expect(loadModel(source, { isa: 'sse9' as never })).rejects.toThrow(/unknown instruction set 'sse9'/);
    const controller = new AbortController();
    controller.abort();
    await expect(loadModel(source, { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });
  });
});
