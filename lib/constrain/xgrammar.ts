// XGrammar (MLC's grammar engine, compiled to WebAssembly; npm @mlc-ai/web-xgrammar, pinned),
// run on a worker thread. Its work is synchronous WebAssembly: preparing a 32k vocabulary
// takes most of a second and compiling a caller's regex or schema can take longer, which
// must not stop the JavaScript thread (timers, other requests, abort signals). The worker
// owns the compilers and matchers; the JavaScript thread sends it vocabularies, grammars
// and chosen tokens, and gets back bitmasks. Messages are handled in order, one at a time.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { GrammarError } from './errors.js';

/** What to compile: a JSON Schema (as text; `any` for any JSON object) or an EBNF grammar. */
export type GrammarSource = { schema: string; anyObject: boolean } | { ebnf: string };

type Request =
  | { op: 'vocabulary'; key: number; vocab: string[]; vocabType: Tokenizer['vocabType']; vocabSize: number; stop: number[] }
  | { op: 'compile'; key: number; id: number; stop: number[]; source: GrammarSource }
  | { op: 'mask'; id: number }
  | { op: 'accept'; id: number; token: number }
  | { op: 'dispose'; id: number };

type Reply = { rid: number; value?: unknown; error?: string };

/**
 * The worker's body. It is sent to the worker as source text, so it uses nothing from this
 * module: only what `require` gives it and the bundle path in workerData.
 */
function workerMain(): void {
  /* eslint-disable @typescript-eslint/no-require-imports, @typescript-eslint/no-explicit-any */
  const { parentPort, workerData } = require('node:worker_threads');
  const { readFileSync } = require('node:fs');
  const nodeModule = require('node:module');
  const { dirname } = require('node:path');
  // The package ships a UMD bundle that expects CommonJS globals although its package.json
  // declares an ES module: it is evaluated in a CommonJS scope, its one dynamic import (of
  // node:module) answered by require.
  const file: string = workerData.file;
  const source = readFileSync(file, 'utf8').replaceAll("import('module')", "Promise.resolve(require('module'))");
  const bundle = { exports: {} as any };
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  new Function('exports', 'module', 'require', '__filename', '__dirname', source)(bundle.exports, bundle, nodeModule.createRequire(file), file, dirname(file));
  const x = bundle.exports;
  const compilers = new Map<number, any>();
  const matchers = new Map<number, { matcher: any; stop: Set<number>; refused?: string }>();
  const handle = async (m: any): Promise<unknown> => {
    switch (m.op) {
      case 'vocabulary': {
        const info = await x.TokenizerInfo.createTokenizerInfo(m.vocab, m.vocabType, false, m.vocabSize, m.stop);
        compilers.set(m.key, await x.GrammarCompiler.createGrammarCompiler(info));
        return null;
      }
      case 'compile': {
        const compiler = compilers.get(m.key);
        if (!compiler) throw new Error('the vocabulary could not be prepared');
        const s = m.source;
        const compiled =
          s.schema !== undefined
            ? s.anyObject
              ? await compiler.compileJSONSchema(s.schema, false, -1, undefined, false)
              : await compiler.compileJSONSchema(s.schema, false, -1)
            : await compiler.compileGrammar(await x.Grammar.fromEBNF(s.ebnf, 'root'));
        try {
          matchers.set(m.id, { matcher: await x.GrammarMatcher.createGrammarMatcher(compiled, m.stop), stop: new Set(m.stop) });
        } finally {
          compiled.dispose();
        }
        return null;
      }
      case 'mask': {
        const entry = matchers.get(m.id);
        if (!entry) throw new Error(`no matcher ${m.id}`);
        if (entry.refused) throw new Error(entry.refused);
        return Int32Array.from(await entry.matcher.getNextTokenBitmask());
      }
      case 'accept': {
        const entry = matchers.get(m.id);
        if (entry && !entry.refused && !entry.matcher.acceptToken(m.token)) entry.refused = `token ${m.token} was chosen but the constraint does not allow it`;
        return undefined;
      }
      case 'dispose':
        matchers.get(m.id)?.matcher.dispose();
        matchers.delete(m.id);
        return undefined;
      default:
        throw new Error(`unknown request ${String(m.op)}`);
    }
  };
  let chain: Promise<void> = Promise.resolve();
  parentPort.on('message', (m: any) => {
    chain = chain.then(async () => {
      try {
        const value = await handle(m);
        if (m.rid === undefined) return;
        if (value instanceof Int32Array) parentPort.postMessage({ rid: m.rid, value }, [value.buffer]);
        else parentPort.postMessage({ rid: m.rid, value });
      } catch (e) {
        if (m.rid !== undefined) parentPort.postMessage({ rid: m.rid, error: e instanceof Error ? e.message : String(e) });
      }
    });
  });
  /* eslint-enable @typescript-eslint/no-require-imports, @typescript-eslint/no-explicit-any */
}

/** The worker and the requests it has not answered yet. */
class GrammarWorker {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  readonly #keys = new WeakMap<Tokenizer, Map<number, number>>();
  #next = 1;
  #dead: Error | null = null;

  constructor() {
    const file = createRequire(import.meta.url).resolve('@mlc-ai/web-xgrammar');
    this.#worker = new Worker(`(${workerMain.toString()})()`, { eval: true, workerData: { file } });
    this.#worker.unref();
    this.#worker.on('message', (reply: Reply) => {
      const p = this.#pending.get(reply.rid);
      if (!p) return;
      this.#pending.delete(reply.rid);
      if (this.#pending.size === 0) this.#worker.unref();
      if (reply.error !== undefined) p.reject(new GrammarError(reply.error));
      else p.resolve(reply.value);
    });
    const die = (e: Error) => {
      this.#dead = new GrammarError(`the grammar engine stopped: ${e.message}`);
      if (worker === this) worker = null;
      for (const p of this.#pending.values()) p.reject(this.#dead);
      this.#pending.clear();
    };
    this.#worker.on('error', die);
    this.#worker.on('exit', (code) => die(new Error(`its thread exited (${code})`)));
  }

  /** A request that is answered; the worker holds the process open only while one is pending. */
  #ask(request: Request): Promise<unknown> {
    if (this.#dead) return Promise.reject(this.#dead);
    const rid = this.#next++;
    if (this.#pending.size === 0) this.#worker.ref();
    return new Promise((resolve, reject) => {
      this.#pending.set(rid, { resolve, reject });
      this.#worker.postMessage({ ...request, rid });
    });
  }

  #tell(request: Request): void {
    if (!this.#dead) this.#worker.postMessage(request);
  }

  /** The worker's compiler for this vocabulary (sent once per tokenizer and size). */
  #vocabulary(tokenizer: Tokenizer, vocabSize: number, stop: number[]): { key: number; ready?: Promise<unknown> } {
    let bySize = this.#keys.get(tokenizer);
    if (!bySize) this.#keys.set(tokenizer, (bySize = new Map()));
    const known = bySize.get(vocabSize);
    if (known !== undefined) return { key: known };
    const key = this.#next++;
    bySize.set(vocabSize, key);
    const vocab: string[] = [];
    for (let id = 0; id < vocabSize; id++) {
      // special tokens are '' (never grammar text); the engine lets a NUL byte through where
      // the grammar forbids it, so NUL is never generated under a constraint
      const text = id < tokenizer.vocabSize && !tokenizer.isSpecial(id) ? (tokenizer.tokenText(id) ?? '') : '';
      vocab.push(text === '<0x00>' || text.includes('\0') ? '' : text);
    }
    const ready = this.#ask({ op: 'vocabulary', key, vocab, vocabType: tokenizer.vocabType, vocabSize, stop });
    ready.catch(() => bySize.delete(vocabSize));
    return { key, ready };
  }

  /** Compiles a grammar for this vocabulary into a matcher; resolves to its id. */
  async compile(tokenizer: Tokenizer, vocabSize: number, stop: number[], source: GrammarSource): Promise<number> {
    const { key, ready } = this.#vocabulary(tokenizer, vocabSize, stop);
    const id = this.#next++;
    const compiled = this.#ask({ op: 'compile', key, id, stop, source });
    if (ready) await ready.catch((e: unknown) => compiled.catch(() => Promise.reject(e)));
    await compiled;
    return id;
  }

  mask(id: number): Promise<Int32Array> {
    return this.#ask({ op: 'mask', id }) as Promise<Int32Array>;
  }

  accept(id: number, token: number): void {
    this.#tell({ op: 'accept', id, token });
  }

  dispose(id: number): void {
    this.#tell({ op: 'dispose', id });
  }
}

let worker: GrammarWorker | null = null;

/** The grammar engine's worker (started on first use, and again if it ever stops). */
export function grammarWorker(): GrammarWorker {
  return (worker ??= new GrammarWorker());
}

export type { GrammarWorker };
