// XGrammar (MLC's grammar engine, compiled to WebAssembly; npm @mlc-ai/web-xgrammar, pinned)
// loaded in Node. The package ships a UMD bundle that expects CommonJS globals although
// its package.json declares an ES module, so it is evaluated here in a CommonJS scope (its
// one dynamic import, of node:module, answered by require).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';

import type * as XGrammar from '@mlc-ai/web-xgrammar';

export type XGrammarModule = typeof XGrammar;

let loaded: XGrammarModule | null = null;

export function xgrammar(): XGrammarModule {
  if (!loaded) {
    const file = createRequire(import.meta.url).resolve('@mlc-ai/web-xgrammar');
    const source = readFileSync(file, 'utf8').replaceAll("import('module')", "Promise.resolve(require('module'))");
    const module = { exports: {} as Record<string, unknown> };
    // eslint-disable-next-line @typescript-eslint/no-implied-eval
    new Function('exports', 'module', 'require', '__filename', '__dirname', source)(module.exports, module, createRequire(file), file, dirname(file));
    loaded = module.exports as unknown as XGrammarModule;
  }
  return loaded;
}
