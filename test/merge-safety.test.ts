// Where a merge writes: paths it refuses, one merge per output at a time, and what a merge
// killed at any moment leaves behind (and the next merge into that output cleans up).
// Killed merges run in child processes that load lib/ from its TypeScript sources.
// (exportModel and quantize write through the same code: test/output-safety.test.ts.)
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

import { merge, type MergeConfig } from '../lib/index.js';
import { checkNotProtected } from '../lib/formats/output.js';
import { scratchDirs, writeTinyCheckpoint, type TinyCheckpoint } from './helpers/checkpoint.js';
import { childRunner, kill, type ChildRunner } from './helpers/killable.js';

const fresh = scratchDirs('laminate-merge-safety-');

let a: TinyCheckpoint;
let b: TinyCheckpoint;
const copyOf = (m: TinyCheckpoint): MergeConfig => ({ merge_method: 'passthrough', models: [{ model: m.dir }] });
// The weights file of a merge's output, and of each model's copy made in beforeAll.
const weights = (out: string) => readFileSync(join(out, 'model.safetensors'));
const copies = new Map<TinyCheckpoint, Buffer>();
const isCopyOf = (out: string, m: TinyCheckpoint) => weights(out).equals(copies.get(m)!);
const spec = { hidden: 32, intermediate: 48, layers: 2, heads: 4, kvHeads: 2, vocab: 64, dtype: 'BF16' } as const;

let runner: ChildRunner;

beforeAll(async () => {
  a = await writeTinyCheckpoint(fresh(), { ...spec, seed: 1 });
  b = await writeTinyCheckpoint(fresh(), { ...spec, seed: 2 });
  for (const m of [a, b]) {
    const out = join(fresh(), 'copy');
    await merge(copyOf(m), out);
    copies.set(m, weights(out));
  }
  runner = childRunner(fresh());
});

/** Starts a merge (with overwrite) in a child process and resolves once it has stopped at
 * `event`: 'writing' (its first progress report) or 'moved-aside' (the old output renamed away). */
const mergeInChild = (config: MergeConfig, out: string, event: 'writing' | 'moved-aside') =>
  runner.stopAt({ module: 'lib/merge/merge.ts', fn: 'merge', input: config, options: { overwrite: true, outShardSize: 1000 } }, out, event);

describe('where a merge writes', () => {
  it.skipIf(!existsSync('/proc/self'))('fails at once, saying why, where the filesystem takes no new entries (/proc)', async () => {
    await expect(merge(copyOf(a), '/proc/self/laminate-out')).rejects.toThrow(/cannot create \/proc\/self\/\.laminate-out\.lock: ENOENT/);
    await expect(merge(copyOf(a), '/proc/self/laminate/out')).rejects.toThrow(/cannot create \/proc\/self\/laminate: ENOENT/);
  }, 30_000);

  it('refuses a file at the output path, with or without overwrite, and keeps it', async () => {
    const out = join(fresh(), 'out');
    writeFileSync(out, 'not a model');
    for (const overwrite of [false, true]) await expect(merge(copyOf(a), out, { overwrite })).rejects.toThrow(/out is a file, not a directory/);
    expect(readFileSync(out, 'utf8')).toBe('not a model');
    expect(readdirSync(dirname(out))).toEqual(['out']);
  });

  it('never replaces the filesystem root, the home or working directory, or a directory that holds one', async () => {
    const none = { models: [] };
    await expect(checkNotProtected('/', none)).rejects.toThrow(/^\/ is the root of the filesystem/);
    await expect(checkNotProtected(homedir(), none)).rejects.toThrow(/is the home directory/);
    await expect(checkNotProtected(process.cwd(), none)).rejects.toThrow(/is the working directory/);
    await expect(checkNotProtected(dirname(process.cwd()), none)).rejects.toThrow(/holds the working directory/);
    // (a model two levels below a fresh directory: the temporary directory itself may hold
    // the working directory, as when the checkout is under /tmp)
    const model = join(fresh(), 'models', 'input');
    mkdirSync(model, { recursive: true });
    writeFileSync(join(model, 'config.json'), '{}');
    await expect(checkNotProtected(dirname(model), { models: [model] })).rejects.toThrow(/holds the input model/);
    await expect(checkNotProtected(join(model, 'merged'), { models: [model] })).resolves.toBeUndefined();
    await expect(checkNotProtected(model, { models: [], files: [join(model, 'config.json')] })).rejects.toThrow(/holds the input file .*config\.json/);
  });

  it('with overwrite, refuses (and keeps) an empty path, the home and working directories, an input model and a directory that holds one', async () => {
    const home = fresh();
    const work = fresh();
    mkdirSync(join(work, 'sub'));
    writeFileSync(join(home, 'keep'), '');
    writeFileSync(join(work, 'keep'), '');
    const models = fresh();
    const input = await writeTinyCheckpoint(join(models, 'input'), { ...spec, seed: 3 });
    const saved = { home: process.env['HOME'], cwd: process.cwd() };
    process.env['HOME'] = home;
    try {
      const refused = async (out: string, cwd: string, pattern: RegExp) => {
        process.chdir(cwd);
        await expect(merge(copyOf(input), out, { overwrite: true })).rejects.toThrow(pattern);
      };
      await refused('', work, /the output directory is an empty path/);
      await refused(home, work, /is the home directory/);
      await refused(work, work, /is the working directory/);
      await refused(work, join(work, 'sub'), /holds the working directory/);
      await refused(input.dir, work, /is the input model/);
      await refused(models, work, /holds the input model/);
      // the configuration file, given as a path
      const configDir = fresh();
      writeFileSync(join(configDir, 'merge.yml'), `merge_method: passthrough\nmodels:\n- model: ${input.dir}\n`);
      await expect(merge(join(configDir, 'merge.yml'), configDir, { overwrite: true })).rejects.toThrow(/holds the input file .*merge\.yml/);
      expect(readdirSync(configDir)).toEqual(['merge.yml']);
    } finally {
      process.chdir(saved.cwd);
      if (saved.home === undefined) delete process.env['HOME'];
      else process.env['HOME'] = saved.home;
    }
    expect(readdirSync(home)).toEqual(['keep']);
    expect(readdirSync(work).sort()).toEqual(['keep', 'sub']);
    expect(readdirSync(input.dir)).toContain('model.safetensors');
  });
});

describe('one merge per output at a time', () => {
  it('of two merges started together into one new directory, one writes it and the other fails', async () => {
    const out = join(fresh(), 'out');
    const results = await Promise.allSettled([merge(copyOf(a), out), merge(copyOf(b), out)]);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(failed).toHaveLength(1);
    expect(String(failed[0]!.reason)).toMatch(/out is being written by another merge|out already exists/);
    const winner = results[0]!.status === 'fulfilled' ? a : b;
    expect(isCopyOf(out, winner)).toBe(true);
    expect(readdirSync(dirname(out))).toEqual(['out']);
  });

  it('a merge running in another process holds its output; killed, it leaves a work directory that the next merge removes', async () => {
    const out = join(fresh(), 'out');
    const child = await mergeInChild(copyOf(a), out, 'writing');
    try {
      expect(readdirSync(dirname(out)).filter((e) => e.startsWith('.out.partial-')).length).toBe(1);
      await expect(merge(copyOf(b), out, { overwrite: true })).rejects.toThrow(new RegExp(`out is being written by another merge \\(process ${child.pid} `));
    } finally {
      await kill(child);
    }
    expect(existsSync(out)).toBe(false);
    await merge(copyOf(b), out);
    expect(isCopyOf(out, b)).toBe(true);
    expect(readdirSync(dirname(out))).toEqual(['out']);
  });
});

describe('overwrite, killed at any moment', () => {
  it('killed while writing: the old output stays whole', async () => {
    const out = join(fresh(), 'out');
    await merge(copyOf(a), out);
    await kill(await mergeInChild(copyOf(b), out, 'writing'));
    expect(isCopyOf(out, a)).toBe(true);
    await merge(copyOf(b), out, { overwrite: true });
    expect(isCopyOf(out, b)).toBe(true);
    expect(readdirSync(dirname(out))).toEqual(['out']);
  });

  it('killed between moving the old output aside and the new one in: the next merge puts the old one back first', async () => {
    const out = join(fresh(), 'out');
    await merge(copyOf(a), out);
    await kill(await mergeInChild(copyOf(b), out, 'moved-aside'));
    expect(existsSync(out)).toBe(false);
    // without overwrite: the old output is back, and stays
    await expect(merge(copyOf(b), out)).rejects.toThrow(/out already exists and is not empty/);
    expect(isCopyOf(out, a)).toBe(true);
    expect(readdirSync(dirname(out))).toEqual(['out']);
    await merge(copyOf(b), out, { overwrite: true });
    expect(isCopyOf(out, b)).toBe(true);
    expect(readdirSync(dirname(out))).toEqual(['out']);
  });
});
