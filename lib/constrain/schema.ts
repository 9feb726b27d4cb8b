// The JSON Schema keywords that constrained decoding enforces. A schema that uses any
// other keyword (one that would change which documents are valid) is refused rather than
// silently loosened.
export class SchemaError extends Error {
  override name = 'SchemaError';
}

const ENFORCED = new Set([
  'type', 'properties', 'required', 'additionalProperties', 'enum', 'const', 'items', 'prefixItems', 'minItems', 'maxItems',
  'anyOf', 'oneOf', '$ref', '$defs', 'definitions', 'pattern', 'minLength', 'maxLength', 'minimum', 'maximum',
  'exclusiveMinimum', 'exclusiveMaximum',
]);
// Keywords that do not change validity.
const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly']);
const TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);

/** Throws SchemaError naming the first keyword (and where) that cannot be enforced. */
export function checkSchema(schema: unknown, path = '#'): void {
  if (schema === true || schema === false) return;
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) throw new SchemaError(`${path}: a schema must be an object or a boolean`);
  const s = schema as Record<string, unknown>;
  for (const key of Object.keys(s))
    if (!ENFORCED.has(key) && !ANNOTATIONS.has(key)) throw new SchemaError(`${path}: the keyword '${key}' is not supported by constrained decoding`);
  if (s['type'] !== undefined) {
    const types = Array.isArray(s['type']) ? s['type'] : [s['type']];
    for (const t of types) if (typeof t !== 'string' || !TYPES.has(t)) throw new SchemaError(`${path}/type: '${String(t)}' is not a JSON Schema type`);
  }
  if (s['$ref'] !== undefined && (typeof s['$ref'] !== 'string' || !/^#(\/(\$defs|definitions)\/[^/]+)?$/.test(s['$ref'])))
    throw new SchemaError(`${path}/$ref: only local references (#, #/$defs/NAME, #/definitions/NAME) are supported`);
  for (const key of ['properties', '$defs', 'definitions'] as const) {
    const map = s[key];
    if (map === undefined) continue;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new SchemaError(`${path}/${key} must be an object`);
    for (const [name, sub] of Object.entries(map)) checkSchema(sub, `${path}/${key}/${name}`);
  }
  for (const key of ['anyOf', 'oneOf', 'prefixItems'] as const) {
    const list = s[key];
    if (list === undefined) continue;
    if (!Array.isArray(list) || list.length === 0) throw new SchemaError(`${path}/${key} must be a non-empty list of schemas`);
    list.forEach((sub, i) => checkSchema(sub, `${path}/${key}/${i}`));
  }
  for (const key of ['items', 'additionalProperties'] as const) if (s[key] !== undefined) checkSchema(s[key], `${path}/${key}`);
  if (s['required'] !== undefined && (!Array.isArray(s['required']) || !s['required'].every((r) => typeof r === 'string')))
    throw new SchemaError(`${path}/required must be a list of property names`);
  if (s['enum'] !== undefined && (!Array.isArray(s['enum']) || s['enum'].length === 0)) throw new SchemaError(`${path}/enum must be a non-empty list`);
  if (s['pattern'] !== undefined && typeof s['pattern'] !== 'string') throw new SchemaError(`${path}/pattern must be a string`);
  for (const key of ['minItems', 'maxItems', 'minLength', 'maxLength'] as const)
    if (s[key] !== undefined && !(Number.isSafeInteger(s[key]) && (s[key] as number) >= 0)) throw new SchemaError(`${path}/${key} must be a non-negative integer`);
  for (const key of ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'] as const) {
    if (s[key] === undefined) continue;
    if (typeof s[key] !== 'number' || !Number.isFinite(s[key])) throw new SchemaError(`${path}/${key} must be a finite number`);
    // the engine enforces whole-number bounds only
    if (!Number.isInteger(s[key])) throw new SchemaError(`${path}/${key}: only whole-number bounds are supported (got ${s[key]})`);
  }
  if (Array.isArray(s['oneOf']) && !disjoint(s['oneOf'] as unknown[]))
    throw new SchemaError(`${path}/oneOf: its alternatives may overlap, and "exactly one" cannot be enforced; give each a different type, const or enum values, or a required property with a different const (or use anyOf)`);
}

type Sig = { types: Set<string> | null; values: unknown[] | null; tags: Map<string, unknown> };

/** What tells one alternative from another: its types, its values, its const properties. */
function signature(schema: unknown): Sig {
  const s = (typeof schema === 'object' && schema !== null ? schema : {}) as Record<string, unknown>;
  const t = s['type'];
  const types = typeof t === 'string' ? new Set([t]) : Array.isArray(t) ? new Set(t as string[]) : null;
  if (types?.has('number')) types.add('integer');
  const values = 'const' in s ? [s['const']] : Array.isArray(s['enum']) ? (s['enum'] as unknown[]) : null;
  const tags = new Map<string, unknown>();
  const props = s['properties'] as Record<string, Record<string, unknown>> | undefined;
  const required = Array.isArray(s['required']) ? (s['required'] as string[]) : [];
  if (props) for (const name of required) if (props[name] && 'const' in props[name]) tags.set(name, props[name]['const']);
  return { types, values, tags };
}

function disjoint(alternatives: unknown[]): boolean {
  const sigs = alternatives.map(signature);
  const key = (v: unknown) => JSON.stringify(v);
  for (let i = 0; i < sigs.length; i++)
    for (let j = i + 1; j < sigs.length; j++) {
      const a = sigs[i]!, b = sigs[j]!;
      if (a.types && b.types && ![...a.types].some((t) => b.types!.has(t))) continue;
      if (a.values && b.values && !a.values.some((v) => b.values!.map(key).includes(key(v)))) continue;
      if ([...a.tags].some(([name, v]) => b.tags.has(name) && key(b.tags.get(name)) !== key(v))) continue;
      return false;
    }
  return true;
}
