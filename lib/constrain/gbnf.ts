// GBNF (llama.cpp's grammar notation) read for its syntax before the grammar engine sees
// it, so that a mistake gets a message with its line and column, and rules that are used
// but never defined are named.
import { GrammarError } from './errors.js';

const NAME = /[a-zA-Z0-9_-]/;

const hex = (b: number) => `\\x${b.toString(16).padStart(2, '0')}`;
const MAX_LISTED = 1024;

/**
 * A character class as the engine takes it. The engine matches ASCII classes, negated
 * classes that exclude only ASCII, and strings; so the characters past ASCII of a class
 * are listed as strings (up to 1024 of them).
 */
export function classToEbnf(ranges: [number, number][], negated: boolean): string {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const ascii = sorted.filter(([lo]) => lo < 0x80).map(([lo, hi]): [number, number] => [lo, Math.min(hi, 0x7f)]);
  const spell = (set: [number, number][]) => set.map(([lo, hi]) => (lo === hi ? hex(lo) : `${hex(lo)}-${hex(hi)}`)).join('');
  const wide = sorted.filter(([, hi]) => hi >= 0x80).map(([lo, hi]): [number, number] => [Math.max(lo, 0x80), hi]);
  if (negated) {
    if (wide.length > 0) throw new GrammarError('grammar: a negated character class may exclude only ASCII characters');
    return ascii.length ? `[^${spell(ascii)}]` : '[\\u0000-\\U0010FFFF]';
  }
  const listed: string[] = [];
  for (const [lo, hi] of wide)
    for (let c = lo; c <= hi; c++) {
      if (c >= 0xd800 && c <= 0xdfff) continue;
      if (listed.length === MAX_LISTED) throw new GrammarError(`grammar: a character class may hold at most ${MAX_LISTED} characters past ASCII`);
      listed.push(JSON.stringify(String.fromCodePoint(c)));
    }
  const parts = [...(ascii.length ? [`[${spell(ascii)}]`] : []), ...listed];
  if (parts.length === 0) throw new GrammarError('grammar: a character class matches no character');
  return parts.length === 1 ? parts[0]! : `(${parts.join(' | ')})`;
}

/** Throws GrammarError at the first syntax error; returns the grammar as the engine takes
 * it (character classes and `.` spelled as UTF-8 byte classes). */
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
  const replacements: { start: number; end: number; text: string }[] = [];

  /** Reads an escape; returns its code point. */
  const escape = (): number => {
    i++; // the backslash
    const c = text[i++];
    if (c === undefined) fail('the grammar ends inside an escape');
    const digits = c === 'x' ? 2 : c === 'u' ? 4 : c === 'U' ? 8 : 0;
    if (digits) {
      if (!new RegExp(`^[0-9a-fA-F]{${digits}}`).test(text.slice(i))) fail(`\\${c} needs ${digits} hex digits`);
      const code = parseInt(text.slice(i, i + digits), 16);
      if (code > 0x10ffff) fail(`\\${c}${text.slice(i, i + digits)} is past the last Unicode character`);
      i += digits;
      return code;
    }
    const simple: Record<string, number> = { n: 10, r: 13, t: 9 };
    if (c! in simple) return simple[c!]!;
    if (!'\\"[]-^/'.includes(c!)) fail(`unknown escape \\${c}`);
    return c!.codePointAt(0)!;
  };
  const classChar = (): number => {
    if (text[i] === '\\') return escape();
    const code = text.codePointAt(i)!;
    i += code > 0xffff ? 2 : 1;
    return code;
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
      const start = i++;
      const negated = text[i] === '^';
      if (negated) i++;
      const ranges: [number, number][] = [];
      let first = true;
      while (text[i] !== ']' || first) {
        if (i >= text.length || text[i] === '\n') fail('unterminated character class (a ] is missing)');
        first = false;
        const lo = classChar();
        let hi = lo;
        if (text[i] === '-' && text[i + 1] !== ']' && i + 1 < text.length) {
          i++;
          hi = classChar();
          if (hi < lo) fail('a character range runs backwards');
        }
        ranges.push([lo, hi]);
      }
      i++;
      replacements.push({ start, end: i, text: classToEbnf(ranges, negated) });
    } else if (c === '(') {
      i++;
      alternatives(true);
      if (text[i] !== ')') fail('a ) is missing');
      i++;
    } else if (c === '.') {
      replacements.push({ start: i, end: i + 1, text: classToEbnf([], true) });
      i++;
    } else if (c !== undefined && NAME.test(c)) {
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
  for (const r of replacements) {
    out += text.slice(from, r.start) + r.text;
    from = r.end;
  }
  return out + text.slice(from);
}
