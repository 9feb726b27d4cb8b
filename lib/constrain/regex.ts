// Regular expressions (the JavaScript syntax, matched against the whole output) as EBNF
// for the grammar engine: literals, classes, escapes, groups, alternation and greedy or
// lazy quantifiers. Back-references and look-arounds cannot be expressed and are an error.
export class RegexError extends Error {
  override name = 'RegexError';
}

const CLASS_ESCAPES: Record<string, string> = {
  d: '0-9',
  w: 'a-zA-Z0-9_',
  s: ' \\t\\n\\r\\f\\v',
};

function charCode(c: string): string {
  const code = c.codePointAt(0)!;
  if (c === '\n') return '\\n';
  if (c === '\r') return '\\r';
  if (c === '\t') return '\\t';
  if (code < 0x20 || code === 0x7f) return `\\x${code.toString(16).padStart(2, '0')}`;
  return c;
}

function literal(c: string): string {
  return `"${c === '"' || c === '\\' ? `\\${c}` : charCode(c)}"`;
}

function classChar(c: string): string {
  return c === ']' || c === '\\' || c === '^' || c === '-' ? `\\${c}` : charCode(c);
}

/** The EBNF (rule `root`) of a regular expression that must match the whole output. */
export function regexToEbnf(source: string): string {
  let i = 0;
  const fail = (message: string): never => {
    throw new RegexError(`regex /${source}/ at ${i}: ${message}`);
  };
  const peek = () => source[i];

  function escape(inClass: boolean): string {
    const c = source[i++];
    if (c === undefined) return fail('a pattern cannot end with \\');
    if (c in CLASS_ESCAPES) return inClass ? CLASS_ESCAPES[c]! : `[${CLASS_ESCAPES[c]}]`;
    const upper = c.toLowerCase();
    if (c !== upper && upper in CLASS_ESCAPES) {
      if (inClass) fail(`\\${c} inside a class is not supported`);
      return `[^${CLASS_ESCAPES[upper]}]`;
    }
    const simple: Record<string, string> = { n: '\n', r: '\r', t: '\t', f: '\f', v: '\v', '0': '\0' };
    let ch: string;
    if (c in simple) ch = simple[c]!;
    else if (c === 'x') {
      const hex = source.slice(i, i + 2);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) fail('\\x needs two hex digits');
      i += 2;
      ch = String.fromCodePoint(parseInt(hex, 16));
    } else if (c === 'u') {
      const m = /^\{([0-9a-fA-F]{1,6})\}|^([0-9a-fA-F]{4})/.exec(source.slice(i));
      if (!m) return fail('\\u needs four hex digits or {hex}');
      i += m[0].length;
      ch = String.fromCodePoint(parseInt(m[1] ?? m[2]!, 16));
    } else if (/[1-9kbBpP]/.test(c)) return fail(`\\${c} (back-references, word boundaries, Unicode properties) is not supported`);
    else if (/[a-zA-Z]/.test(c)) return fail(`unknown escape \\${c}`);
    else ch = c;
    return inClass ? classChar(ch) : literal(ch);
  }

  function charClass(): string {
    let out = '[';
    if (peek() === '^') {
      out += '^';
      i++;
    }
    let first = true;
    while (peek() !== ']' || first) {
      if (peek() === undefined) fail('unterminated character class');
      first = false;
      const c = source[i++]!;
      if (c === '\\') out += escape(true);
      else if (c === '-' ) out += '-';
      else out += classChar(c);
    }
    i++;
    return `${out}]`;
  }

  function atom(): string | null {
    const c = peek();
    if (c === undefined || c === '|' || c === ')') return null;
    i++;
    if (c === '(') {
      if (source.startsWith('?:', i)) i += 2;
      else if (source.startsWith('?<', i) && !source.startsWith('?<=', i) && !source.startsWith('?<!', i)) {
        const end = source.indexOf('>', i);
        if (end < 0) fail('unterminated group name');
        i = end + 1;
      } else if (peek() === '?') fail('look-arounds are not supported');
      const inner = alternation();
      if (peek() !== ')') fail('missing )');
      i++;
      return `(${inner})`;
    }
    if (c === '[') return charClass();
    if (c === '.') return '[^\\n\\r]';
    if (c === '\\') return escape(false);
    if (c === '^' || c === '$') return '';
    if (c === '*' || c === '+' || c === '?' || c === '{') return fail(`nothing to repeat before '${c}'`);
    return literal(c);
  }

  function quantified(): string | null {
    const a = atom();
    if (a === null) return null;
    let out = a;
    for (;;) {
      const c = peek();
      let q: string | null = null;
      if (c === '*' || c === '+' || c === '?') {
        q = c;
        i++;
      } else if (c === '{') {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(source.slice(i));
        if (!m) break;
        i += m[0].length;
        const lo = Number(m[1]);
        const hi = m[2] === undefined ? lo : m[3] === '' ? null : Number(m[3]);
        if (hi !== null && hi < lo) fail(`{${lo},${hi}}: the range is empty`);
        q = hi === null ? `{${lo},}` : hi === lo ? `{${lo}}` : `{${lo},${hi}}`;
      }
      if (q === null) break;
      if (peek() === '?') i++; // lazy or greedy: the same language
      if (out === '') fail('an anchor cannot be repeated');
      out = `(${out})${q}`;
    }
    return out;
  }

  function sequence(): string {
    const parts: string[] = [];
    for (let q = quantified(); q !== null; q = quantified()) if (q !== '') parts.push(q);
    return parts.length ? parts.join(' ') : '""';
  }

  function alternation(): string {
    const options = [sequence()];
    while (peek() === '|') {
      i++;
      options.push(sequence());
    }
    return options.join(' | ');
  }

  const body = alternation();
  if (i < source.length) fail(`unexpected '${source[i]}'`);
  return `root ::= ${body}\n`;
}
