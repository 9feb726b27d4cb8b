// The packed tarball installs into a fresh project and loads its prebuilt binary with no
// compiler on the PATH, through the package's own exports.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { projectRoot } from './helpers/fixtures.js';
import { tmpDir, writeTinyCheckpoint } from './helpers/checkpoint.js';
import { referenceGreedy } from './helpers/reference.js';

const work = tmpDir('laminate-pack-');
afterAll(() => rmSync(work, { recursive: true, force: true }));

function npmCli(): string {
  const found = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
  return realpathSync(found);
}

describe('npm package', () => {
  it('a fresh install of the packed tarball loads the prebuilt addon without a compiler', async () => {
    // (re)built when missing or older than a native source
    const platformDir = join(projectRoot, 'prebuilds', `${process.platform}-${process.arch}`);
    const newest = (dir: string): number => Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)));
    if (!existsSync(platformDir) || readdirSync(platformDir).length === 0 || newest(platformDir) < newest(join(projectRoot, 'native')))
      execFileSync(process.execPath, [npmCli(), 'run', 'prebuild'], { cwd: projectRoot, stdio: 'ignore' });
    const packed = execFileSync(process.execPath, [npmCli(), 'pack', '--json', '--pack-destination', work], { cwd: projectRoot, encoding: 'utf8' });
    const [{ filename, files }] = JSON.parse(packed.slice(packed.indexOf('['))) as [{ filename: string; files: { path: string }[] }];
    const paths = files.map((f) => f.path);
    expect(paths).toContain('dist/index.js');
    expect(paths).toContain('dist/index.d.ts');
    expect(paths.some((p) => p.startsWith(`prebuilds/${process.platform}-${process.arch}/`))).toBe(true);
    expect(paths.some((p) => p.startsWith('test/'))).toBe(false);

    // A PATH holding node, npm and a shell only: no make, cc, c++ or python.
    const bin = join(work, 'bin');
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync(npmCli(), join(bin, 'npm'));
    symlinkSync(realpathSync('/bin/sh'), join(bin, 'sh'));
    const env: NodeJS.ProcessEnv = { HOME: process.env['HOME'], PATH: bin, npm_config_cache: process.env['npm_config_cache'] ?? join(process.env['HOME'] ?? work, '.npm') };
    for (const tool of ['make', 'cc', 'c++', 'g++', 'python3']) expect(spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { env }).status).not.toBe(0);

    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));
    const install = spawnSync(process.execPath, [npmCli(), 'install', '--prefer-offline', '--no-audit', '--no-fund', join(work, filename)], { cwd: app, env, encoding: 'utf8' });
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
    const run = spawnSync(process.execPath, ['main.js', model], { cwd: app, env, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual(referenceGreedy(ckpt, [1, 2, 3], 6));
  });
});
