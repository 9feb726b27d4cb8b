// GBNF (llama.cpp's grammar notation) read for its syntax before the grammar engine sees
// it, so that a mistake gets a message with its line and column, and rules that are used
// but never defined are named.
import { GrammarError } from './errors.js';

const NAME = /[a-zA-Z0-9_-]/;

/** Throws GrammarError at the first syntax error; returns the grammar as the engine takes
 * it (`.`, any character, written as a class). */
export function checkGbnf(text: string): string {
  if (typeof text !== 'string') throw new GrammarError('the grammar must be a string');
  let i = 0;
  const where = () => {
    const before = text.slice(0, i);
    const line = before.split('\n').length;
    return `line ${line}, column ${i - before.lastIndexOf('\n')}`;
  };
  const fail = (message: string): never => {
    throw new GrammarError(`grammar, ${where()}: ${message}`);
  };
  // Spaces, tabs and comments; newlines too inside parentheses.
  const space = (newlines: boolean) => {
    for (;;) {
      const c = text[i];
      if (c === ' ' || c === '\t' || c === '\r' || (newlines && c === '\n')) i++;
      else if (c === '#') while (i < text.length && text[i] !== '\n') i++;
      else return;
    }
  };
  const defined = new Set<string>();
  const used = new Map<string, string>();
  const dots: number[] = [];

  const escape = () => {
    i++; // the backslash
    const c = text[i++];
    if (c === undefined) fail('the grammar ends inside an escape');
    const hex = c === 'x' ? 2 : c === 'u' ? 4 : c === 'U' ? 8 : 0;
    if (hex) {
      if (!new RegExp(`^[0-9a-fA-F]{${hex}}`).test(text.slice(i))) fail(`\\${c} needs ${hex} hex digits`);
      i += hex;
    } else if (!'nrt\\"[]-^/'.includes(c!)) fail(`unknown escape \\${c}`);
  };

  const element = (nested: boolean): boolean => {
    const c = text[i];
    if (c === '"') {
      i++;
      while (text[i] !== '"') {
        if (i >= text.length || text[i] === '\n') fail('unterminated string (a " is missing)');
        if (text[i] === '\\') escape();
        else i++;
      }
      i++;
    } else if (c === '[') {
      i++;
      if (text[i] === '^') i++;
      let first = true;
      while (text[i] !== ']' || first) {
        if (i >= text.length || text[i] === '\n') fail('unterminated character class (a ] is missing)');
        first = false;
        if (text[i] === '\\') escape();
        else i++;
      }
      i++;
    } else if (c === '(') {
      i++;
      alternatives(true);
      if (text[i] !== ')') fail('a ) is missing');
      i++;
    } else if (c === '.') dots.push(i++);
    else if (c !== undefined && NAME.test(c)) {
      const start = i;
      while (i < text.length && NAME.test(text[i]!)) i++;
      const name = text.slice(start, i);
      if (!used.has(name)) used.set(name, where());
    } else return false;
    space(nested);
    // repetition
    for (;;) {
      const q = text[i];
      if (q === '*' || q === '+' || q === '?') i++;
      else if (q === '{') {
        const m = /^\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}/.exec(text.slice(i));
        if (!m) fail('a repetition is {m}, {m,} or {m,n}');
        if (m![3] !== undefined && m![3] !== '' && Number(m![3]) < Number(m![1])) fail(`{${m![1]},${m![3]}} is an empty range`);
        i += m![0].length;
      } else break;
      space(nested);
    }
    return true;
  };

  const sequence = (nested: boolean) => {
    let n = 0;
    while (element(nested)) n++;
    return n;
  };

  const alternatives = (nested: boolean) => {
    space(nested);
    if (sequence(nested) === 0 && text[i] !== '|' && !(nested && text[i] === ')')) fail(`expected an element, found ${text[i] === undefined ? 'the end' : `'${text[i]}'`}`);
    while (text[i] === '|') {
      i++;
      space(true);
      sequence(nested);
    }
  };

  space(true);
  while (i < text.length) {
    const start = i;
    while (i < text.length && NAME.test(text[i]!)) i++;
    if (i === start) fail(`expected a rule name, found '${text[i]}'`);
    const name = text.slice(start, i);
    if (defined.has(name)) fail(`the rule '${name}' is defined twice`);
    defined.add(name);
    space(false);
    if (!text.startsWith('::=', i)) fail(`expected ::= after '${name}'`);
    i += 3;
    alternatives(false);
    if (i < text.length && text[i] !== '\n') fail(`unexpected '${text[i]}'`);
    space(true);
  }
  if (!defined.has('root')) throw new GrammarError('grammar: there is no rule named root');
  for (const [name, at] of used) if (!defined.has(name)) throw new GrammarError(`grammar, ${at}: the rule '${name}' is used but not defined`);
  let out = '';
  let from = 0;
  for (const at of dots) {
    out += `${text.slice(from, at)}[\\u0000-\\U0010FFFF]`;
    from = at + 1;
  }
  return out + text.slice(from);
}
