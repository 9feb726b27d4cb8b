// exportModel() and quantize() write their model directory as merge() does (one
// implementation: lib/formats/output.ts): the same paths refused, one writer per output at
// a time, an overwrite that a kill at any moment cannot lose, and nothing left behind that
// the next run does not clean up. Killed runs are child processes (test/helpers/killable.ts).
// (The merge side, and checkNotProtected itself: test/merge-safety.test.ts.)
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

import { ATTENTION_CANDIDATES, MLP_CANDIDATES, demoModelDir, exportModel, measure, measurementJson, quantize, type Measurement } from '../lib/index.js';
import { scratchDirs, writeTinyCheckpoint, type TinyCheckpoint } from './helpers/checkpoint.js';
import { childRunner, kill, type ChildCommand, type ChildRunner } from './helpers/killable.js';

const fresh = scratchDirs('laminate-output-safety-');

const spec = { hidden: 32, intermediate: 48, layers: 2, heads: 4, kvHeads: 2, vocab: 64, dtype: 'BF16' } as const;
const small = { rows: 3, length: 48, measurementRows: 2, threads: 2 };
const proc = existsSync('/proc/self');

/** A progress report: export's { written, total }, or quantize's, with its stage. */
type Progress = { stage?: string; written?: number };

/** A writer under test: its two inputs (two outputs that differ), how to run it in this
 * process, and how a child process runs it. */
interface Writer {
  name: 'export' | 'quantize';
  /** Two sources, each with the weights file of its output (made in beforeAll). */
  sources: [string, string];
  run(source: string, out: string, options?: { overwrite?: boolean; signal?: AbortSignal; onProgress?: (p: Progress) => void }): Promise<unknown>;
  child(source: string): ChildCommand;
  /** The weights file of an output. */
  weights: string;
  /** What stays beside the output after an abort (quantize keeps its job to resume). */
  keptOnAbort: string[];
}

let runner: ChildRunner;
let tiny: [TinyCheckpoint, TinyCheckpoint];
let demo: string; // a copy of the bundled model: nothing here may ever write into the real one
let measurementFile: string;
const outputs = new Map<string, Buffer>(); // source -> its output's weights

/** A made-up measurement: one option per block (the tests are about files, not quality). */
function craftedMeasurement(layers: number): Measurement {
  const modules: Measurement['modules'] = {};
  for (let l = 0; l < layers; l++) {
    modules[`model.layers.${l}.self_attn`] = [{ accuracy: 0.99, totalBits: 0, recipes: ATTENTION_CANDIDATES[6 + (l % 2)]! }];
    modules[`model.layers.${l}.mlp`] = [{ accuracy: 0.99, totalBits: 0, recipes: MLP_CANDIDATES[7 + (l % 2)]! }];
  }
  return { modules };
}

const quantizeOptions = () => ({ bitsPerWeight: 8, measurement: measurementFile, ...small });

const writers: Writer[] = [
  {
    name: 'export',
    get sources(): [string, string] {
      return [tiny[0].dir, tiny[1].dir];
    },
    run: (source, out, options = {}) => exportModel(source, out, options),
    child: (source) => ({ module: 'lib/model/export.ts', fn: 'exportModel', input: source, options: { overwrite: true, outShardSize: 1000 } }),
    weights: 'model.safetensors',
    keptOnAbort: [],
  },
  {
    name: 'quantize',
    // the same model at two head widths
    get sources(): [string, string] {
      return [demo, `${demo}#4`];
    },
    run: (source, out, options = {}) => {
      const [dir, head] = source.split('#');
      return quantize(dir!, out, { ...quantizeOptions(), ...(head ? { headBits: Number(head) as 4 } : {}), ...options });
    },
    child: (source) => {
      const [dir, head] = source.split('#');
      return { module: 'lib/quantize/quantize.ts', fn: 'quantize', input: dir, options: { ...quantizeOptions(), ...(head ? { headBits: Number(head) } : {}), overwrite: true } };
    },
    weights: 'output.safetensors',
    keptOnAbort: ['.out.quantize'],
  },
];

beforeAll(async () => {
  tiny = [await writeTinyCheckpoint(fresh(), { ...spec, seed: 1 }), await writeTinyCheckpoint(fresh(), { ...spec, seed: 2 })];
  demo = join(fresh(), 'demo');
  cpSync(demoModelDir, demo, { recursive: true });
  measurementFile = join(fresh(), 'm.json');
  writeFileSync(measurementFile, measurementJson(craftedMeasurement(8), 8));
  for (const w of writers)
    for (const source of w.sources) {
      const out = join(fresh(), 'out');
      await w.run(source, out);
      outputs.set(source, readFileSync(join(out, w.weights)));
    }
  expect(outputs.get(writers[0]!.sources[0])!.equals(outputs.get(writers[0]!.sources[1])!)).toBe(false);
  expect(outputs.get(writers[1]!.sources[0])!.equals(outputs.get(writers[1]!.sources[1])!)).toBe(false);
  runner = childRunner(fresh());
}, 240_000);

describe.each(writers.map((w) => [w.name, w] as const))('%s', (_, w) => {
  const isOutputOf = (out: string, source: string) => readFileSync(join(out, w.weights)).equals(outputs.get(source)!);
  const beside = (out: string) => readdirSync(dirname(out)).sort();

  it.skipIf(!proc)('fails at once, saying why, where the filesystem takes no new entries (/proc)', async () => {
    const t0 = performance.now();
    await expect(w.run(w.sources[0], '/proc/self/laminate-out')).rejects.toThrow(/cannot create \/proc\/self\/\.laminate-out\.lock: ENOENT/);
    await expect(w.run(w.sources[0], '/proc/self/laminate/out')).rejects.toThrow(/cannot create \/proc\/self\/laminate: ENOENT/);
    expect(performance.now() - t0).toBeLessThan(10_000);
  }, 20_000);

  it('refuses a file at the output path, with or without overwrite, and keeps it', async () => {
    const out = join(fresh(), 'out');
    writeFileSync(out, 'not a model');
    for (const overwrite of [false, true]) await expect(w.run(w.sources[0], out, { overwrite })).rejects.toThrow(/out is a file, not a directory/);
    expect(readFileSync(out, 'utf8')).toBe('not a model');
    expect(beside(out)).toEqual(['out']);
  });

  it('with overwrite, refuses (and keeps) the home and working directories, its inputs and a directory that holds one', async () => {
    const home = fresh();
    const work = fresh();
    mkdirSync(join(work, 'sub'));
    writeFileSync(join(home, 'keep'), '');
    writeFileSync(join(work, 'keep'), '');
    // a copy of the source, in a directory of its own, for the cases that name it
    const models = fresh();
    const [from, suffix = ''] = w.sources[0].split(/(?=#)/);
    cpSync(from!, join(models, 'input'), { recursive: true });
    const input = join(models, 'input');
    const inputFiles = () => readdirSync(input).sort();
    const before = inputFiles();
    const saved = { home: process.env['HOME'], cwd: process.cwd() };
    process.env['HOME'] = home;
    try {
      const refused = async (out: string, cwd: string, pattern: RegExp, source = input + suffix) => {
        process.chdir(cwd);
        await expect(w.run(source, out, { overwrite: true })).rejects.toThrow(pattern);
      };
      await refused('', work, /the output directory is an empty path/);
      await refused(home, work, /is the home directory/);
      await refused(work, work, /is the working directory/);
      await refused(work, join(work, 'sub'), /holds the working directory/);
      await refused(input, work, /is the input model/);
      await refused(models, work, /holds the input model/);
      if (w.name === 'quantize') {
        // the measurement file it reads, and calibration text
        await refused(dirname(measurementFile), work, /holds the input file .*m\.json/);
        const calibration = join(fresh(), 'text.txt');
        writeFileSync(calibration, 'Some calibration text.\n\nAnd more of it.\n');
        process.chdir(work);
        await expect(quantize(input, dirname(calibration), { ...quantizeOptions(), calibration, overwrite: true })).rejects.toThrow(/holds the input file .*text\.txt/);
        expect(readdirSync(dirname(calibration))).toEqual(['text.txt']);
      }
    } finally {
      process.chdir(saved.cwd);
      if (saved.home === undefined) delete process.env['HOME'];
      else process.env['HOME'] = saved.home;
    }
    expect(readdirSync(home)).toEqual(['keep']);
    expect(readdirSync(work).sort()).toEqual(['keep', 'sub']);
    expect(inputFiles()).toEqual(before);
    expect(readdirSync(models)).toEqual(['input']);
    expect(existsSync(measurementFile)).toBe(true);
  }, 60_000);

  it('aborted while writing, leaves the previous output whole and no work directory or lock', async () => {
    const out = join(fresh(), 'out');
    await w.run(w.sources[0], out);
    const ac = new AbortController();
    const onProgress = (p: Progress) => {
      if (p.stage === undefined || p.stage === 'write') ac.abort();
    };
    await expect(w.run(w.sources[1], out, { overwrite: true, signal: ac.signal, onProgress })).rejects.toMatchObject({ name: 'AbortError' });
    expect(isOutputOf(out, w.sources[0])).toBe(true);
    expect(beside(out)).toEqual(['out', ...w.keptOnAbort].sort());
    await w.run(w.sources[1], out, { overwrite: true });
    expect(isOutputOf(out, w.sources[1])).toBe(true);
    expect(beside(out)).toEqual(['out']);
  }, 60_000);

  it('holds its output while it runs; killed while writing, it leaves the old output whole, and the next run removes its work directory and lock', async () => {
    const out = join(fresh(), 'out');
    await w.run(w.sources[0], out);
    const child = await runner.stopAt(w.child(w.sources[1]), out, 'writing');
    try {
      const leftovers = beside(out).filter((e) => e !== 'out' && !w.keptOnAbort.includes(e));
      expect(leftovers).toEqual(['.out.lock', expect.stringMatching(new RegExp(`^\\.out\\.partial-${child.pid}-[0-9a-f]+$`))]);
      // another command into the same output fails at once, naming the one that holds it
      await expect(exportModel(tiny[0].dir, out, { overwrite: true })).rejects.toThrow(new RegExp(`out is being written by another ${w.name} \\(process ${child.pid} `));
    } finally {
      await kill(child);
    }
    expect(isOutputOf(out, w.sources[0])).toBe(true);
    await w.run(w.sources[1], out, { overwrite: true });
    expect(isOutputOf(out, w.sources[1])).toBe(true);
    expect(beside(out)).toEqual(['out']);
  }, 60_000);

  it('killed between moving the old output aside and the new one in: the next run puts the old one back first', async () => {
    const out = join(fresh(), 'out');
    await w.run(w.sources[0], out);
    await kill(await runner.stopAt(w.child(w.sources[1]), out, 'moved-aside'));
    expect(existsSync(out)).toBe(false);
    expect(beside(out).some((e) => e.startsWith(`.out.old-`))).toBe(true);
    // without overwrite: the old output is back, and stays
    await expect(w.run(w.sources[1], out)).rejects.toThrow(/out already exists and is not empty/);
    expect(isOutputOf(out, w.sources[0])).toBe(true);
    expect(beside(out).filter((e) => !w.keptOnAbort.includes(e))).toEqual(['out']);
    await w.run(w.sources[1], out, { overwrite: true });
    expect(isOutputOf(out, w.sources[1])).toBe(true);
    expect(beside(out)).toEqual(['out']);
  }, 60_000);
});

describe('around the writers', () => {
  it.skipIf(!proc)('measure() fails at once where its job directory cannot be made (/proc)', async () => {
    await expect(measure(demo, '/proc/self/m.json', { length: 48, measurementRows: 2, threads: 2 })).rejects.toThrow(/cannot create \/proc\/self\/\.m\.json\.job: ENOENT/);
  }, 30_000);

  it("export's dtype is one of its three names, never a name every object has", async () => {
    const out = join(fresh(), 'out');
    for (const dtype of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'int8'])
      await expect(exportModel(tiny[0].dir, out, { dtype: dtype as 'float16' }), dtype).rejects.toThrow(new RegExp(`dtype must be float16, bfloat16 or float32 \\(got ${dtype}\\)`));
    expect(readdirSync(dirname(out))).toEqual([]);
  });

  it('an export written inside its source directory copies neither its own lock nor work directory', async () => {
    const source = join(fresh(), 'model');
    cpSync(tiny[0].dir, source, { recursive: true });
    const out = join(source, 'f16');
    await exportModel(source, out);
    expect(readdirSync(out).filter((e) => e.startsWith('.'))).toEqual([]);
    expect(readdirSync(source).filter((e) => e.startsWith('.'))).toEqual([]);
  });
});
