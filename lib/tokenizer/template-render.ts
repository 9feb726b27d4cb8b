// Jinja rendering on a budget. A chat template comes with the model (tokenizer_config.json)
// and is untrusted input, and @huggingface/jinja renders it synchronously on the JS thread,
// so the interpreter here bounds what one render may cost:
// - time: a deadline checked at every step (every expression, statement and loop
//   iteration with a body), so a loop or a recursion of any shape stops;
// - weight: no value (nor the output) may weigh more than a limit, so that no single step
//   can take long (a string doubled in a loop, a list nested in itself, a loop over a huge
//   list);
// - the built-ins whose output can dwarf their input (range, join, replace, indent, tojson
//   with indent) are checked before they run.
import * as jinja from '@huggingface/jinja';

// @huggingface/jinja's typings of its interpreter do not resolve under NodeNext (its .d.ts
// files import without extensions): the parts used here.
interface Value {
  type: string;
  value: unknown;
}
interface Node {
  type: string;
}
interface Environment {
  set(name: string, value: unknown): Value;
  lookupVariable(name: string): Value;
}
interface Interpreter {
  evaluate(node: Node | undefined, env: Environment): Value;
  run(program: Node): Value;
}
const Interpreter = jinja.Interpreter as new (env: Environment) => Interpreter;
const Environment = jinja.Environment as new () => Environment;
interface Template {
  parsed: Node;
}

type Expr = Node & { value?: unknown };
interface CallNode extends Node {
  callee: Expr & { object?: Expr; property?: Expr; computed?: boolean };
  args: (Expr & { argument?: Expr; key?: { value: string } })[];
}
interface FilterNode extends Node {
  operand: Expr;
  filter: Expr & Partial<CallNode>;
}

/** The time one render may take: this, plus RENDER_MS_PER_ITEM for each message and tool
 * (real templates take 0.05 to 0.6 ms per message, the most on a cold start on a busy
 * machine). */
export const RENDER_MS = 50;
export const RENDER_MS_PER_ITEM = 2;
/** The weight limit of a render: the larger of this and twice the weight of its context. */
const MIN_WEIGHT_LIMIT = 1 << 16;
/** What a list item or a mapping entry weighs, in characters: going through one costs
 * about as much as copying this many characters. */
const ITEM_WEIGHT = 64;

interface Measure {
  weight: number;
  depth: number;
  /** It holds a namespace, whose contents can change: not cached. */
  volatile: boolean;
}
const SCALAR: Measure = { weight: 1, depth: 0, volatile: false };
const measures = new WeakMap<object, Measure>();

/**
 * The weight of a value (its characters, plus ITEM_WEIGHT per item and entry, counting a
 * shared part each time it appears, as printing it does) and its depth. Stops counting
 * past `limit` (the value is refused then), so a list nested in itself costs little.
 */
function measure(v: Value, limit = Infinity): Measure {
  const inner = v.value;
  if (typeof inner === 'string') return { weight: inner.length, depth: 0, volatile: false };
  if (!Array.isArray(inner) && !(inner instanceof Map)) return SCALAR;
  const known = measures.get(v);
  if (known) return known;
  const m: Measure = { weight: 0, depth: 0, volatile: v.type === 'NamespaceValue' };
  for (const [key, item] of inner instanceof Map ? (inner as Map<string, Value>) : (inner as Value[]).map((item) => ['', item] as const)) {
    const c = measure(item, limit - m.weight);
    m.weight += ITEM_WEIGHT + key.length + c.weight;
    m.depth = Math.max(m.depth, c.depth + 1);
    m.volatile ||= c.volatile;
    if (m.weight > limit) return m;
  }
  if (!m.volatile) measures.set(v, m);
  return m;
}

const weigh = (v: Value, limit?: number): number => (typeof v.value === 'string' ? v.value.length : measure(v, limit).weight);

const integer = (v: Value | undefined): number | null => (v?.type === 'IntegerValue' ? (v.value as number) : null);
const text = (v: Value | undefined): string | null => (v?.type === 'StringValue' ? (v.value as string) : null);

/** The most characters a built-in can make from these inputs, for those whose output can
 * be far heavier than their inputs; 0 for the others. */
function outputBound(name: string, operand: Value, positional: Value[], keyword: Map<string, Value>): number {
  const s = text(operand);
  switch (name) {
    case 'join': {
      const separator = text(positional[0] ?? keyword.get('separator'))?.length ?? 0;
      return s !== null ? s.length * (1 + separator) : weigh(operand) + (Array.isArray(operand.value) ? operand.value.length : 0) * separator;
    }
    case 'replace': {
      const [old, replacement] = [text(positional[0]), text(positional[1])];
      if (s === null || old === null || replacement === null) return 0;
      const count = integer(positional[2] ?? keyword.get('count'));
      const matches = old === '' ? s.length + 1 : Math.floor(s.length / old.length);
      return s.length + (count !== null && count >= 0 ? Math.min(count, matches) : matches) * replacement.length;
    }
    case 'indent': {
      const width = integer(positional[0] ?? keyword.get('width')) ?? 0;
      return s === null ? 0 : s.length + (s.split('\n').length) * Math.max(0, width);
    }
    case 'tojson': {
      // JSON escapes take up to 6 characters per character; each item's line is indented
      // by at most `indent` times the depth
      const indent = Math.max(0, integer(keyword.get('indent')) ?? 0);
      const { weight, depth } = measure(operand);
      return 6 * weight + 2 * (weight / ITEM_WEIGHT + 1) * (2 + indent * (depth + 1));
    }
  }
  return 0;
}

class BudgetedInterpreter extends Interpreter {
  readonly #deadline: number;
  readonly #ms: number;
  readonly limit: number;
  /** Values evaluated ahead of the interpreter (to check a call before it runs), by scope and
   * node, handed over when the interpreter evaluates that node in that scope. */
  readonly #ahead = new WeakMap<Environment, Map<Node, Value>>();
  #aheadCount = 0;

  constructor(env: Environment, ms: number, limit: number) {
    super(env);
    this.#ms = ms;
    this.#deadline = performance.now() + ms;
    this.limit = limit;
  }

  override evaluate(node: Node | undefined, env: Environment): Value {
    const ahead = this.#aheadCount > 0 && node ? this.#ahead.get(env) : undefined;
    if (ahead?.has(node!)) {
      const value = ahead.get(node!)!;
      ahead.delete(node!);
      this.#aheadCount--;
      return value;
    }
    if (performance.now() > this.#deadline) throw new Error(`rendering takes longer than its budget of ${this.#ms} ms (does the template loop without end?)`);
    // a filter block is its filter applied to its rendered body
    if (node?.type === 'FilterStatement') {
      const block = node as Node & { body: Node[]; filter: Expr };
      return this.evaluate({ type: 'FilterExpression', operand: { type: 'Program', body: block.body }, filter: block.filter } as Node, env);
    }
    if (node) this.#checkAhead(node, env);
    const value = super.evaluate(node, env);
    const weight = weigh(value, this.limit);
    if (weight > this.limit) throw new Error(`a value weighs ${weight} (characters, plus ${ITEM_WEIGHT} per list item or mapping entry), more than the limit of ${this.limit}`);
    return value;
  }

  #evaluateAhead(node: Node, env: Environment): Value {
    const value = this.evaluate(node, env);
    let ahead = this.#ahead.get(env);
    if (!ahead) this.#ahead.set(env, (ahead = new Map()));
    ahead.set(node, value);
    this.#aheadCount++;
    return value;
  }

  /** The arguments of a call, evaluated ahead in the interpreter's order: positional ones
   * (and spreads) first, then keyword ones. */
  #argumentsAhead(args: CallNode['args'], env: Environment): { positional: Value[]; keyword: Map<string, Value> } {
    const positional: Value[] = [];
    const keyword = new Map<string, Value>();
    for (const arg of args) {
      if (arg.type === 'SpreadExpression') {
        const items = this.#evaluateAhead(arg.argument!, env).value;
        if (Array.isArray(items)) positional.push(...(items as Value[]));
      } else if (arg.type !== 'KeywordArgumentExpression' && arg.type !== 'KeywordSpreadExpression') positional.push(this.#evaluateAhead(arg, env));
    }
    for (const arg of args) {
      if (arg.type === 'KeywordArgumentExpression') keyword.set(arg.key!.value, this.#evaluateAhead(arg.value as Expr, env));
      else if (arg.type === 'KeywordSpreadExpression') {
        const entries = this.#evaluateAhead(arg.argument!, env).value;
        if (entries instanceof Map) for (const [k, v] of entries as Map<string, Value>) keyword.set(k, v);
      }
    }
    return { positional, keyword };
  }

  /** Refuses a filter or method call whose output would be past the weight limit, before it
   * runs; its operand and arguments are evaluated ahead, in the interpreter's order. */
  #checkAhead(node: Node, env: Environment): void {
    let name: string, operand: Value, args: CallNode['args'];
    if (node.type === 'FilterExpression') {
      const { filter } = node as FilterNode;
      if (filter.type !== 'CallExpression' || filter.callee!.type !== 'Identifier') return;
      name = filter.callee!.value as string;
      if (!['join', 'replace', 'indent', 'tojson'].includes(name)) return;
      operand = this.#evaluateAhead((node as FilterNode).operand, env);
      args = filter.args!;
    } else if (node.type === 'CallExpression' && (node as CallNode).callee.type === 'MemberExpression') {
      // a method: the interpreter evaluates the arguments, then the object, then the name
      const { callee } = node as CallNode;
      if (callee.computed ? callee.property!.type === 'SliceExpression' : callee.property!.value !== 'replace') return;
      const { positional, keyword } = this.#argumentsAhead((node as CallNode).args, env);
      operand = this.#evaluateAhead(callee.object!, env);
      name = callee.computed ? (text(this.#evaluateAhead(callee.property!, env)) ?? '') : 'replace';
      return this.#refuse(name === 'replace' ? outputBound(name, operand, positional, keyword) : 0, `${name}()`);
    } else return;
    const { positional, keyword } = this.#argumentsAhead(args, env);
    this.#refuse(outputBound(name, operand, positional, keyword), `the filter ${name}`);
  }

  #refuse(bound: number, what: string): void {
    if (bound > this.limit) throw new Error(`${what} would make up to ${Math.round(bound)} characters, more than the limit of ${this.limit}`);
  }
}

const compiled = new Map<string, Template>();

function compile(source: string): Template {
  let t = compiled.get(source);
  if (!t) {
    try {
      t = new jinja.Template(source) as Template;
    } catch (e) {
      // The parser's own errors say what it expected; a TypeError is it running off the end
      // of a template whose block or expression is never closed.
      const why = e instanceof TypeError ? 'it ends inside an unclosed tag, block or expression' : (e as Error).message;
      throw new Error(`does not parse: ${why}`, { cause: e });
    }
    compiled.set(source, t);
  }
  return t;
}

/** Python's `strftime` for the fields chat templates use, in the C locale (as Python's). */
function strftime(date: Date, format: string): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  const month = (style: 'long' | 'short') => date.toLocaleString('en-US', { month: style });
  const fields: Record<string, () => string> = {
    Y: () => String(date.getFullYear()),
    m: () => pad(date.getMonth() + 1),
    d: () => pad(date.getDate()),
    b: () => month('short'),
    B: () => month('long'),
    H: () => pad(date.getHours()),
    M: () => pad(date.getMinutes()),
    '%': () => '%',
  };
  return format.replace(/%([YmdbBHM%])/g, (_, f: string) => fields[f]!());
}

/**
 * Renders a template with the globals that @huggingface/jinja's Template.render gives
 * (`range` bounded by the weight limit), within `ms` milliseconds and a weight limit of the
 * larger of MIN_WEIGHT_LIMIT and twice the weight of `context`. Throws an Error that says
 * what went wrong, or what budget was spent.
 */
export function renderTemplate(source: string, context: Record<string, unknown>, ms: number): string {
  const template = compile(source);
  const env = new Environment();
  for (const [key, value] of Object.entries({ true: true, false: false, none: null, True: true, False: false, None: null })) env.set(key, value);
  env.set('raise_exception', (message: unknown) => {
    throw new Error(String(message));
  });
  env.set('strftime_now', (format: string) => strftime(new Date(), String(format)));
  let weight = 0;
  for (const [key, value] of Object.entries(context)) weight += measure(env.set(key, value)).weight;
  const limit = Math.max(MIN_WEIGHT_LIMIT, 2 * weight);
  env.set('range', (start: number, stop?: number, step = 1) => {
    if (stop === undefined) [start, stop] = [0, start];
    if (step === 0) throw new Error('range() step must not be zero');
    const count = Math.ceil((stop - start) / step);
    if (count * (ITEM_WEIGHT + 1) > limit) throw new Error(`range() of ${count} numbers weighs more than the limit of ${limit}`);
    return Array.from({ length: Math.max(0, count) }, (_, i) => start + i * step);
  });
  const value = new BudgetedInterpreter(env, ms, limit).run(template.parsed);
  return value.value as string;
}
