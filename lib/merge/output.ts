// The output directory of a merge: claimed by a lock file beside it, so that two merges
// never write one output; checked (never a file, a non-empty directory only with
// overwrite, never the filesystem root, the home or working directory, an input model, or
// a directory that holds one of them); and replaced so that a process killed at any moment
// leaves the old output or the new one. Beside the output `out`, in its parent directory:
//   .out.lock                  the claim: JSON { pid, host } of the merge that holds it
//   .out.partial-<pid>-<hex>   a merge's work directory, where the new model is written
//   .out.old-<pid>-<hex>       the previous output, moved aside while the new one moves in
// A merge that takes the claim removes what processes no longer running left there,
// first moving an old output back into place when the output itself is missing.
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, realpath, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { homedir, hostname } from 'node:os';
import { basename, dirname, join, parse, resolve, sep } from 'node:path';

export interface OutputClaim {
  /** The output directory, absolute. */
  outDir: string;
  /** An empty directory of this merge's own beside the output: write the new model in it. */
  workDir: string;
  /** Moves the complete directory `dir` into the output's place (the previous output aside
   * first, removed after). */
  commit(dir: string): Promise<void>;
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

/** Throws when outDir is a directory that no merge may replace: the filesystem root, the
 * home or working directory, one of `inputs` (the models merged), or one that holds any of them. */
export async function checkNotProtected(outDir: string, inputs: string[]): Promise<void> {
  const out = await real(resolve(outDir));
  if (parse(out).root === out) throw new Error(`${outDir} is the root of the filesystem; a merge must not replace it`);
  const kept: [string, string][] = [
    [homedir(), 'the home directory'],
    [process.cwd(), 'the working directory'],
    ...inputs.map((dir): [string, string] => [dir, `the input model ${dir}`]),
  ];
  for (const [dir, what] of kept) {
    const p = await real(dir);
    if (p === out) throw new Error(`${outDir} is ${what}; a merge must not replace it`);
    if (p.startsWith(out + sep)) throw new Error(`${outDir} holds ${what}; a merge must not replace it`);
  }
}

/** Creates dir and its missing parents one level at a time (mkdir's recursive mode never
 * returns where the kernel refuses a new entry with ENOENT, as in /proc). */
async function makeDirs(dir: string): Promise<void> {
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

/** Takes the lock file at `path`, breaking it when the process that holds it is gone. */
async function lock(path: string, outDir: string): Promise<void> {
  const host = hostname();
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await writeFile(path, JSON.stringify({ pid: process.pid, host }), { flag: 'wx' });
      held.add(path);
      return;
    } catch (e) {
      if (code(e) !== 'EEXIST') throw cannotWrite(path, e);
    }
    const text = await readFile(path, 'utf8').catch((e: unknown) => unlessMissing(e));
    if (text === undefined) continue; // released meanwhile
    let owner: { pid?: unknown; host?: unknown } = {};
    try {
      owner = JSON.parse(text) as typeof owner;
    } catch {
      // being written (or cut short): its owner is unknown
    }
    const { pid } = owner;
    const gone = owner.host === host && typeof pid === 'number' && (pid === process.pid ? !held.has(path) : !running(pid));
    if (!gone) {
      const who = typeof pid === 'number' ? `process ${pid} on ${String(owner.host)}` : 'a process that is starting';
      throw new Error(`${outDir} is being written by another merge (${who}); if no merge is running, remove ${path}`);
    }
    await unlink(path).catch(unlessMissing);
  }
  throw new Error(`${outDir} is being written by another merge (the lock ${path} keeps changing hands)`);
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
    // (under the lock, an entry with this process's own id belongs to no running merge)
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

/** Claims outDir for one merge: checks it, creates its parent directories, takes the lock,
 * cleans up after dead merges and makes the work directory. */
export async function claimOutput(outDir: string, options: { overwrite?: boolean | undefined; inputs: string[] }): Promise<OutputClaim> {
  if (outDir.trim() === '') throw new Error('the output directory is an empty path');
  const out = resolve(outDir);
  await checkNotProtected(out, options.inputs);
  const parent = dirname(out);
  const name = basename(out);
  await makeDirs(parent);
  const lockPath = join(parent, `.${name}.lock`);
  await lock(lockPath, out);
  const unique = () => `${process.pid}-${randomBytes(4).toString('hex')}`;
  const workDir = join(parent, `.${name}.partial-${unique()}`);
  try {
    await removeLeftovers(out);
    const existing = await stat(out).catch((e: unknown) => unlessMissing(e));
    if (existing && !existing.isDirectory()) throw new Error(`${out} is a file, not a directory; a merge writes a directory (remove the file or choose another path)`);
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
    async commit(dir) {
      const previous = await lstat(out).then(() => true, () => false);
      const aside = join(parent, `.${name}.old-${unique()}`);
      if (previous) await rename(out, aside);
      try {
        await rename(dir, out);
      } catch (e) {
        if (previous) await rename(aside, out);
        throw e;
      }
      // (the new output is in place: an old one that cannot be removed now is a leftover)
      if (previous) await rm(aside, { recursive: true, force: true }).catch(() => undefined);
    },
    async release() {
      await rm(workDir, { recursive: true, force: true });
      await unlock(lockPath);
    },
  };
}
