// The output directory of every command that writes a model (merge, export, quantize):
// claimed by a lock file beside it, so that two commands never write one output; checked
// (never a file, a non-empty directory only with overwrite, never the filesystem root, the
// home or working directory, an input model or file, or a directory that holds one of
// them); and replaced so that a process killed at any moment leaves the old output or the
// new one. Beside the output `out`, in its parent directory:
//   .out.lock                  the claim: JSON { pid, host, command } of the process that holds it
//   .out.partial-<pid>-<hex>   a command's work directory, where the new model is written
//   .out.old-<pid>-<hex>       the previous output, moved aside while the new one moves in
// A command that takes the claim removes what processes no longer running left there,
// first moving an old output back into place when the output itself is missing.
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, realpath, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { homedir, hostname } from 'node:os';
import { basename, dirname, join, parse, resolve, sep } from 'node:path';

export interface OutputClaim {
  /** The output directory, absolute. */
  outDir: string;
  /** An empty directory of this command's own beside the output: write the new model in it. */
  workDir: string;
  /** Moves the complete work directory into the output's place (the previous output aside
   * first, removed after). */
  commit(): Promise<void>;
  /** Removes the work directory (whatever is left in it) and the lock. */
  release(): Promise<void>;
}

const code = (e: unknown) => (e as NodeJS.ErrnoException).code;
const unlessMissing = (e: unknown) => {
  if (code(e) !== 'ENOENT') throw e;
};
const cannotWrite = (path: string, e: unknown) => new Error(`cannot create ${path}: ${(e as Error).message}`, { cause: e });

// Lock files this process holds.
const held = new Set<string>();

/** Is process `pid` of this machine running? */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return code(e) === 'EPERM';
  }
}

/** The real path of p, or p itself where it does not exist. */
const real = (p: string) => realpath(p).catch(() => p);

/** What a command reads and must not replace: model directories, and other files (a
 * measurement, calibration text, a merge configuration). */
export interface Inputs {
  /** Input model directories. */
  models: string[];
  /** Other files read. */
  files?: string[];
}

/** Throws when outDir is a directory that no command may replace: the filesystem root, the
 * home or working directory, an input (model directory or file), or one that holds any of them. */
export async function checkNotProtected(outDir: string, inputs: Inputs): Promise<void> {
  const out = await real(resolve(outDir));
  const refuse = (what: string) => new Error(`${outDir} ${what}; laminate never replaces it`);
  if (parse(out).root === out) throw refuse('is the root of the filesystem');
  const kept: [string, string][] = [
    [homedir(), 'the home directory'],
    [process.cwd(), 'the working directory'],
    ...inputs.models.map((dir): [string, string] => [dir, `the input model ${dir}`]),
    ...(inputs.files ?? []).map((file): [string, string] => [file, `the input file ${file}`]),
  ];
  for (const [path, what] of kept) {
    const p = await real(resolve(path));
    if (p === out) throw refuse(`is ${what}`);
    if (p.startsWith(out + sep)) throw refuse(`holds ${what}`);
  }
}

/** Creates dir and its missing parents one level at a time (mkdir's recursive mode never
 * returns where the kernel refuses a new entry with ENOENT, as in /proc). */
export async function makeDirs(dir: string): Promise<void> {
  const missing: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    const s = await stat(d).catch((e: unknown) => {
      if (code(e) !== 'ENOENT' && code(e) !== 'ENOTDIR') throw e;
    });
    if (s) {
      if (!s.isDirectory()) throw new Error(`cannot create ${dir}: ${d} is a file`);
      break;
    }
    missing.unshift(d);
    if (dirname(d) === d) break;
  }
  for (const d of missing)
    await mkdir(d).catch((e: unknown) => {
      if (code(e) !== 'EEXIST') throw cannotWrite(d, e);
    });
}

/** Takes the lock file at `path` for `command`, breaking it when the process that holds it is gone. */
async function lock(path: string, outDir: string, command: string): Promise<void> {
  const host = hostname();
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await writeFile(path, JSON.stringify({ pid: process.pid, host, command }), { flag: 'wx' });
      held.add(path);
      return;
    } catch (e) {
      if (code(e) !== 'EEXIST') throw cannotWrite(path, e);
    }
    const text = await readFile(path, 'utf8').catch((e: unknown) => unlessMissing(e));
    if (text === undefined) continue; // released meanwhile
    let owner: { pid?: unknown; host?: unknown; command?: unknown } = {};
    try {
      owner = JSON.parse(text) as typeof owner;
    } catch {
      // being written (or cut short): its owner is unknown
    }
    const { pid } = owner;
    const gone = owner.host === host && typeof pid === 'number' && (pid === process.pid ? !held.has(path) : !running(pid));
    if (!gone) {
      const who = typeof pid === 'number' ? `process ${pid} on ${String(owner.host)}` : 'a process that is starting';
      const what = typeof owner.command === 'string' && /^[a-z]+$/.test(owner.command) ? owner.command : 'laminate command';
      throw new Error(`${outDir} is being written by another ${what} (${who}); if no laminate command is running, remove ${path}`);
    }
    await unlink(path).catch(unlessMissing);
  }
  throw new Error(`${outDir} is being written by another laminate command (the lock ${path} keeps changing hands)`);
}

async function unlock(path: string): Promise<void> {
  held.delete(path);
  await unlink(path).catch(unlessMissing);
}

/** Removes the work directories and old outputs that dead processes left beside `out`,
 * moving the newest old output back first when `out` itself is missing. */
async function removeLeftovers(out: string): Promise<void> {
  const parent = dirname(out);
  const prefix = `.${basename(out)}.`;
  const leftovers: { kind: string; path: string }[] = [];
  for (const entry of await readdir(parent)) {
    const m = entry.startsWith(prefix) ? /^(partial|old)-(\d+)-[0-9a-f]+$/.exec(entry.slice(prefix.length)) : null;
    // (under the lock, an entry with this process's own id belongs to no running command)
    if (m && (Number(m[2]) === process.pid || !running(Number(m[2])))) leftovers.push({ kind: m[1]!, path: join(parent, entry) });
  }
  const old = leftovers.filter((l) => l.kind === 'old');
  if (old.length > 0 && !(await lstat(out).then(() => true, () => false))) {
    // killed between moving the old output aside and moving the new one in
    const changed = await Promise.all(old.map(async (l) => (await stat(l.path)).ctimeMs));
    const newest = old[changed.indexOf(Math.max(...changed))]!;
    await rename(newest.path, out);
    leftovers.splice(leftovers.indexOf(newest), 1);
  }
  for (const l of leftovers) await rm(l.path, { recursive: true, force: true });
}

export interface ClaimOptions {
  /** The command writing (named in the lock, and to another command that finds it held). */
  command: 'merge' | 'export' | 'quantize';
  overwrite?: boolean | undefined;
  inputs: Inputs;
}

/** Claims outDir for one command: checks it, creates its parent directories, takes the lock,
 * cleans up after dead processes and makes the work directory. */
export async function claimOutput(outDir: string, options: ClaimOptions): Promise<OutputClaim> {
  if (typeof outDir !== 'string') throw new TypeError(`the output directory must be a path (got ${typeof outDir})`);
  if (outDir.trim() === '') throw new Error('the output directory is an empty path');
  const out = resolve(outDir);
  await checkNotProtected(out, options.inputs);
  const parent = dirname(out);
  const name = basename(out);
  await makeDirs(parent);
  const lockPath = join(parent, `.${name}.lock`);
  await lock(lockPath, out, options.command);
  const unique = () => `${process.pid}-${randomBytes(4).toString('hex')}`;
  const workDir = join(parent, `.${name}.partial-${unique()}`);
  try {
    await removeLeftovers(out);
    const existing = await stat(out).catch((e: unknown) => unlessMissing(e));
    if (existing && !existing.isDirectory()) throw new Error(`${out} is a file, not a directory; ${options.command} writes a model directory (remove the file or choose another path)`);
    if (existing && !options.overwrite && (await readdir(out)).length > 0) throw new Error(`${out} already exists and is not empty (pass overwrite: true to replace it)`);
    await mkdir(workDir).catch((e: unknown) => {
      throw cannotWrite(workDir, e);
    });
  } catch (e) {
    await unlock(lockPath);
    throw e;
  }
  return {
    outDir: out,
    workDir,
    async commit() {
      const previous = await lstat(out).then(() => true, () => false);
      const aside = join(parent, `.${name}.old-${unique()}`);
      if (previous) await rename(out, aside);
      try {
        await rename(workDir, out);
      } catch (e) {
        if (previous) await rename(aside, out);
        throw e;
      }
      // (the new output is in place: an old one that cannot be removed now is a leftover)
      if (previous) await rm(aside, { recursive: true, force: true }).catch(() => undefined);
    },
    async release() {
      try {
        await rm(workDir, { recursive: true, force: true });
      } finally {
        await unlock(lockPath);
      }
    },
  };
}
