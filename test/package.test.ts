// The packed tarball installs into a fresh project and loads its prebuilt binary with no
// compiler on the PATH, through the package's own exports; the CLI and the examples run
// from there. Where no prebuilt binary can serve, the install names what building from
// source needs. The opt-in CUDA package installs beside it and is found.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { projectRoot } from './helpers/fixtures.js';
import { tmpDir, writeTinyCheckpoint } from './helpers/checkpoint.js';
import { referenceGreedy } from './helpers/reference.js';

const work = tmpDir('laminate-pack-');
afterAll(() => rmSync(work, { recursive: true, force: true }));

function npmCli(): string {
  const found = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
  return realpathSync(found);
}

const newest = (dir: string): number => Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)));
const platformDir = join(projectRoot, 'prebuilds', `${process.platform}-${process.arch}`);

// A PATH holding node, npm and a shell only: no make, cc, c++ or python.
const bin = join(work, 'bin');
const env = (): NodeJS.ProcessEnv => ({ HOME: process.env['HOME'], PATH: bin, npm_config_cache: process.env['npm_config_cache'] ?? join(process.env['HOME'] ?? work, '.npm') });
const npm = (args: string[], cwd: string, extra: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, [npmCli(), ...args], { cwd, env: { ...env(), ...extra }, encoding: 'utf8', timeout: 300_000 });

function freshApp(name: string): string {
  const app = join(work, name);
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));
  return app;
}

let tarball = '';
let packedFiles: string[] = [];

beforeAll(() => {
  // (re)built when missing or older than a native source
  if (!existsSync(platformDir) || readdirSync(platformDir).length === 0 || newest(platformDir) < newest(join(projectRoot, 'native')))
    execFileSync(process.execPath, [npmCli(), 'run', 'prebuilds'], { cwd: projectRoot, stdio: 'ignore' });
  const packed = execFileSync(process.execPath, [npmCli(), 'pack', '--json', '--pack-destination', work], { cwd: projectRoot, encoding: 'utf8' });
  const [{ filename, files }] = JSON.parse(packed.slice(packed.indexOf('['))) as [{ filename: string; files: { path: string }[] }];
  tarball = join(work, filename);
  packedFiles = files.map((f) => f.path);
  mkdirSync(bin);
  symlinkSync(process.execPath, join(bin, 'node'));
  symlinkSync(npmCli(), join(bin, 'npm'));
  symlinkSync(realpathSync('/bin/sh'), join(bin, 'sh'));
}, 600_000);

describe('npm package', () => {
  it('ships the built library, its types, the prebuilt binaries and the sources to build from, and no tests', () => {
    for (const f of ['dist/index.js', 'dist/index.d.ts', 'scripts/install.cjs', 'binding.gyp', 'native/sources.json', 'examples/generate.mjs', 'models/tiny-mistral-bf16/config.json'])
      expect(packedFiles).toContain(f);
    expect(packedFiles.some((p) => p.startsWith(`prebuilds/${process.platform}-${process.arch}/`))).toBe(true);
    // every prebuilt binary that is there (linux-arm64 too, when scripts/cross-arm64.sh built it)
    for (const dir of readdirSync(join(projectRoot, 'prebuilds'), { withFileTypes: true }).filter((e) => e.isDirectory()))
      for (const f of readdirSync(join(projectRoot, 'prebuilds', dir.name))) expect(packedFiles).toContain(`prebuilds/${dir.name}/${f}`);
    expect(packedFiles.some((p) => p.startsWith('test/') || p.startsWith('bench/') || p.startsWith('fuzz/'))).toBe(false);
  });

  it.skipIf(process.platform !== 'linux')('the Linux prebuilt binary needs glibc 2.28 at most and no libstdc++', () => {
    const [file] = readdirSync(platformDir).filter((f) => f.endsWith('.node'));
    expect(file).toMatch(/\.glibc\.node$/);
    const symbols = execFileSync('objdump', ['-T', join(platformDir, file!)], { encoding: 'utf8' });
    const versions = [...new Set(symbols.match(/GLIBC_[0-9.]+/g))].map((v) => v.slice(6).split('.').map(Number));
    expect(versions.length).toBeGreaterThan(0);
    for (const [major = 0, minor = 0] of versions) expect(major * 100 + minor, `GLIBC_${major}.${minor}`).toBeLessThanOrEqual(228);
    expect(symbols).not.toMatch(/GLIBCXX|CXXABI/);
  });

  it('a fresh install of the packed tarball loads the prebuilt addon without a compiler; the CLI and the examples run', async () => {
    for (const tool of ['make', 'cc', 'c++', 'g++', 'python3']) expect(spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { env: env() }).status).not.toBe(0);
    const app = freshApp('app');
    const install = npm(['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], app);
    expect(install.status, install.stderr + install.stdout).toBe(0);
    expect(existsSync(join(app, 'node_modules/laminate/build'))).toBe(false);

    const model = join(work, 'model');
    const ckpt = await writeTinyCheckpoint(model, { hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, vocab: 80, dtype: 'BF16', seed: 5 });
    writeFileSync(
      join(app, 'main.js'),
      `import { loadModel } from 'laminate';
       const model = await loadModel(process.argv[2]);
       const { tokens } = await model.generate({ tokens: [1, 2, 3], maxTokens: 6, stopAtEos: false });
       console.log(JSON.stringify(tokens));
       model.dispose();`,
    );
    const run = spawnSync(process.execPath, ['main.js', model], { cwd: app, env: env(), encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual(referenceGreedy(ckpt, [1, 2, 3], 6));

    // the README's first command, from the installed package's bin
    const cli = npm(['exec', '--', 'laminate', 'generate', 'The function', '--max-tokens', '8', '--threads', '2'], app);
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stdout).toMatch(/^The function/);

    const example = spawnSync(process.execPath, ['node_modules/laminate/examples/generate.mjs', 'The function'], { cwd: app, env: { ...env(), MAX_TOKENS: '8', THREADS: '2' }, encoding: 'utf8', timeout: 120_000 });
    expect(example.status, example.stderr).toBe(0);
    expect(example.stdout).toMatch(/--- generate ---\nThe function/);
  });

  it('without a matching prebuilt binary and without a toolchain, the install names what building needs', () => {
    const app = freshApp('app-source');
    // --build-from-source: as where no prebuilt binary matches
    const install = npm(['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], app, { npm_config_build_from_source: 'true' });
    expect(install.status).not.toBe(0);
    const text = install.stderr + install.stdout;
    expect(text).toMatch(/building it from source needs python3, make, a C\+\+ compiler/);
    expect(text).toMatch(/apt-get install python3 make g\+\+/);
  });

  const cudaBuild = join(projectRoot, 'build-cuda/Release/laminate.node');
  it.skipIf(!existsSync(cudaBuild))(`the opt-in CUDA package installs beside it and is found${existsSync(cudaBuild) ? '' : ' (skipped: no CUDA build; npm run build:cuda where nvcc is)'}`, () => {
    const out = join(work, 'cuda-package');
    execFileSync('bash', ['scripts/prebuild-cuda.sh', out], { cwd: projectRoot, stdio: 'ignore' });
    const [cudaTarball] = readdirSync(out).filter((f) => f.endsWith('.tgz'));
    const app = freshApp('app-cuda');
    const install = npm(['install', '--prefer-offline', '--no-audit', '--no-fund', tarball, join(out, cudaTarball!)], app);
    expect(install.status, install.stderr + install.stdout).toBe(0);
    writeFileSync(join(app, 'info.js'), `import { cudaInfo } from 'laminate'; console.log(JSON.stringify(cudaInfo()));`);
    const run = spawnSync(process.execPath, ['info.js'], { cwd: app, env: env(), encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    const info = JSON.parse(run.stdout) as { built: boolean; devices: unknown[]; reason?: string; simulated: boolean };
    expect(info.built).toBe(true);
    expect(info.simulated).toBe(false);
    // on a machine without a GPU, the reason is the driver or the device, not the build
    if (info.devices.length === 0) expect(info.reason).toMatch(/driver|device/i);

    // without it, the reason says how to get it
    const plain = freshApp('app-nocuda');
    expect(npm(['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], plain).status).toBe(0);
    writeFileSync(join(plain, 'info.js'), `import { cudaInfo } from 'laminate'; console.log(JSON.stringify(cudaInfo()));`);
    const none = JSON.parse(spawnSync(process.execPath, ['info.js'], { cwd: plain, env: env(), encoding: 'utf8' }).stdout) as { built: boolean; reason: string };
    expect(none.built).toBe(false);
    expect(none.reason).toMatch(new RegExp(`npm install laminate-cuda-${process.platform}-${process.arch}@`));
  });
});
