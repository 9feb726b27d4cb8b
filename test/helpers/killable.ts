// Commands that write a model (merge, exportModel, quantize) run in a child process that
// loads lib/ from its TypeScript sources and stops for good at a chosen moment, so that a
// test can kill it there, as a crash or kill -9 would.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { projectRoot } from './fixtures.js';

// The child: runs `fn` of the module (input, out, options) and stops at `event` (printing its
// name): 'writing' at the first progress report of the writing stage, 'moved-aside' once the
// old output has been renamed away. Argument: JSON [module URL, fn, input, out, options, event].
const CHILD = `
import { createRequire, syncBuiltinESMExports } from 'node:module';
const [moduleUrl, fn, input, out, options, event] = JSON.parse(process.argv[2]);
const stop = () => {
  process.stdout.write(event + '\\n');
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
};
if (event === 'moved-aside') {
  const fs = createRequire(import.meta.url)('node:fs/promises');
  const rename = fs.rename;
  fs.rename = async (from, to) => {
    await rename(from, to);
    if (from === out) stop();
  };
  syncBuiltinESMExports();
}
// (merge and export report { written, total }; quantize reports stages, the last 'write')
const onProgress = event === 'writing' ? (p) => { if (p.stage === undefined || p.stage === 'write') stop(); } : undefined;
const mod = await import(moduleUrl);
await mod[fn](input, out, { ...options, onProgress });
process.stdout.write('done\\n');
`;

// Loads .ts files (and the .js names they import each other by) through TypeScript's transpiler.
const LOADER = (typescript: string) => `
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import ts from ${JSON.stringify(typescript)};
export async function resolve(specifier, context, next) {
  if (/^\\.\\.?\\//.test(specifier) && specifier.endsWith('.js') && context.parentURL?.endsWith('.ts')) {
    const url = new URL(specifier.slice(0, -3) + '.ts', context.parentURL);
    if (existsSync(fileURLToPath(url))) return { url: url.href, shortCircuit: true };
  }
  return next(specifier, context);
}
export async function load(url, context, next) {
  if (!url.endsWith('.ts')) return next(url, context);
  const file = fileURLToPath(url);
  const options = { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 };
  return { format: 'module', source: ts.transpileModule(readFileSync(file, 'utf8'), { compilerOptions: options, fileName: file }).outputText, shortCircuit: true };
}
`;

/** A command a child runs: `fn` exported by `module` (a path under the project root),
 * called as fn(input, out, options). */
export interface ChildCommand {
  module: string;
  fn: string;
  input: unknown;
  options: Record<string, unknown>;
}

export interface ChildRunner {
  /** Starts `command` writing `out` in a child process and resolves once it has stopped at `event`. */
  stopAt(command: ChildCommand, out: string, event: 'writing' | 'moved-aside'): Promise<ChildProcess>;
}

/** Writes the child's script and module loader into `dir`. */
export function childRunner(dir: string): ChildRunner {
  const typescript = pathToFileURL(createRequire(import.meta.url).resolve('typescript')).href;
  writeFileSync(join(dir, 'loader.mjs'), LOADER(typescript));
  writeFileSync(join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'loader.mjs')).href)});\n`);
  writeFileSync(join(dir, 'child.mjs'), CHILD);
  return {
    async stopAt(command, out, event) {
      const moduleUrl = pathToFileURL(join(projectRoot, command.module)).href;
      const args = JSON.stringify([moduleUrl, command.fn, command.input, out, command.options, event]);
      const child = spawn(process.execPath, ['--import', join(dir, 'register.mjs'), join(dir, 'child.mjs'), args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d: Buffer) => {
          stdout += d.toString();
          if (stdout.includes(`${event}\n`)) resolve();
        });
        child.on('exit', (code) => reject(new Error(`the child ${command.fn} ended (${code}) before '${event}': ${stdout}${stderr}`)));
      });
      return child;
    },
  };
}

/** Kills a child with SIGKILL and resolves once it is gone. */
export const kill = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
