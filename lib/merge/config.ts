// mergekit's YAML configuration: parsed, checked and normalized. Field names stay as in
// YAML (merge_method, layer_range, base_model, ...).
import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';

import { parseDocument } from 'yaml';

/** A parameter value: a number (or boolean), a gradient (list of numbers interpolated over
 * the layers of a slice), or a list of { filter, value } conditions. */
export type ParameterValue = number | boolean | number[] | { filter?: string; value: number | boolean | number[] }[];
export type Parameters = Record<string, ParameterValue>;

export interface SliceSource {
  model: string;
  layer_range: [number, number];
  parameters?: Parameters;
}

export interface MergeSlice {
  sources: SliceSource[];
  base_model?: string;
  parameters?: Parameters;
}

export interface MergeConfig {
  merge_method: string;
  slices?: MergeSlice[];
  models?: { model: string; parameters?: Parameters }[];
  base_model?: string;
  parameters?: Parameters;
  dtype?: string;
  out_dtype?: string;
  tokenizer_source?: string;
  chat_template?: string;
}

/** A config after checking, with model references resolved to absolute directories. */
export interface ParsedMergeConfig {
  config: MergeConfig;
  /** The YAML text as given (written to mergekit_config.yml), or a YAML dump of an object. */
  text: string;
  /** Where relative model paths were resolved from. */
  baseDir: string;
  /** The file the YAML was read from (absolute), when given as a path. */
  path?: string;
}

export class MergeConfigError extends Error {
  override name = 'MergeConfigError';
}

const DTYPES = new Map<string, 'F32' | 'F16' | 'BF16'>([['bfloat16', 'BF16'], ['float16', 'F16'], ['float32', 'F32']]);

/** 'bfloat16' | 'float16' | 'float32' (optionally 'torch.'-prefixed) -> safetensors dtype. */
export function dtypeFromName(name: string, where: string): 'F32' | 'F16' | 'BF16' {
  const d = DTYPES.get(name.replace(/^torch\./, ''));
  if (!d) throw new MergeConfigError(`${where}: dtype '${name}' is not supported (bfloat16, float16, float32)`);
  return d;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkModelRef(ref: unknown, where: string): string {
  if (typeof ref !== 'string' || ref === '') throw new MergeConfigError(`${where}: model must be a path to a local model directory`);
  if (ref.includes('+') || /@[^/]*$/.test(ref))
    throw new MergeConfigError(`${where}: '${ref}': revisions (@rev) and LoRA adapters (+lora) are not supported; give a local directory`);
  return ref;
}

function checkParameterValue(v: unknown, where: string): void {
  const scalar = (x: unknown) => typeof x === 'number' || typeof x === 'boolean';
  const gradient = (x: unknown) => Array.isArray(x) && x.length > 0 && x.every((y) => typeof y === 'number');
  if (scalar(v) || gradient(v)) return;
  if (Array.isArray(v) && v.every((c) => isRecord(c) && Object.hasOwn(c, 'value'))) {
    for (const c of v as Record<string, unknown>[]) {
      if (c['filter'] !== undefined && typeof c['filter'] !== 'string') throw new MergeConfigError(`${where}: filter must be a string`);
      if (!scalar(c['value']) && !gradient(c['value'])) throw new MergeConfigError(`${where}: value must be a number or a list of numbers`);
    }
    return;
  }
  throw new MergeConfigError(`${where}: must be a number, a list of numbers (gradient) or a list of {filter, value}`);
}

function checkParameters(p: unknown, where: string): Parameters | undefined {
  if (p === undefined || p === null) return undefined;
  if (!isRecord(p)) throw new MergeConfigError(`${where}: parameters must be a mapping`);
  for (const [k, v] of Object.entries(p)) checkParameterValue(v, `${where}.${k}`);
  return p as Parameters;
}

/** Checks the shape of a config object (methods and parameter names are checked by the planner). */
export function checkMergeConfig(raw: unknown): MergeConfig {
  if (!isRecord(raw)) throw new MergeConfigError('the merge config must be a mapping');
  const c = raw;
  if (typeof c['merge_method'] !== 'string') throw new MergeConfigError('merge_method is required');
  const forms = ['slices', 'models', 'modules'].filter((k) => c[k] !== undefined && c[k] !== null);
  if (forms.length !== 1) throw new MergeConfigError('give exactly one of slices and models');
  if (c['modules'] !== undefined) throw new MergeConfigError('modules (multi-module architectures) are not supported');
  if (c['tokenizer'] !== undefined) throw new MergeConfigError('tokenizer: {...} (vocabulary merging) is not supported; use tokenizer_source: base or a model');
  const config: MergeConfig = { merge_method: c['merge_method'] };
  if (c['slices'] !== undefined) {
    if (!Array.isArray(c['slices']) || c['slices'].length === 0) throw new MergeConfigError('slices must be a non-empty list');
    config.slices = c['slices'].map((s: unknown, i) => {
      const where = `slices[${i}]`;
      if (!isRecord(s) || !Array.isArray(s['sources']) || s['sources'].length === 0) throw new MergeConfigError(`${where}: sources must be a non-empty list`);
      const sources = s['sources'].map((src: unknown, j) => {
        const sw = `${where}.sources[${j}]`;
        if (!isRecord(src)) throw new MergeConfigError(`${sw}: must be a mapping`);
        const range = src['layer_range'];
        if (!Array.isArray(range) || range.length !== 2 || !range.every((x) => Number.isSafeInteger(x) && x >= 0) || range[0] > range[1])
          throw new MergeConfigError(`${sw}: layer_range must be [start, end] with 0 <= start <= end (half-open)`);
        const out: SliceSource = { model: checkModelRef(src['model'], sw), layer_range: [range[0], range[1]] };
        const params = checkParameters(src['parameters'], `${sw}.parameters`);
        if (params) out.parameters = params;
        return out;
      });
      const lengths = new Set(sources.map((x) => x.layer_range[1] - x.layer_range[0]));
      if (lengths.size > 1) throw new MergeConfigError(`${where}: all inputs to a slice must contain the same number of layers`);
      const slice: MergeSlice = { sources };
      if (s['base_model'] !== undefined) slice.base_model = checkModelRef(s['base_model'], `${where}.base_model`);
      const params = checkParameters(s['parameters'], `${where}.parameters`);
      if (params) slice.parameters = params;
      return slice;
    });
  } else {
    if (!Array.isArray(c['models']) || c['models'].length === 0) throw new MergeConfigError('models must be a non-empty list');
    config.models = c['models'].map((m: unknown, i) => {
      const where = `models[${i}]`;
      if (!isRecord(m)) throw new MergeConfigError(`${where}: must be a mapping`);
      const out: { model: string; parameters?: Parameters } = { model: checkModelRef(m['model'], where) };
      const params = checkParameters(m['parameters'], `${where}.parameters`);
      if (params) out.parameters = params;
      return out;
    });
  }
  if (c['base_model'] !== undefined && c['base_model'] !== null) config.base_model = checkModelRef(c['base_model'], 'base_model');
  const params = checkParameters(c['parameters'], 'parameters');
  if (params) config.parameters = params;
  for (const key of ['dtype', 'out_dtype'] as const) {
    const v = c[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string') throw new MergeConfigError(`${key} must be a string`);
    dtypeFromName(v, key);
    config[key] = v;
  }
  if (c['tokenizer_source'] !== undefined && c['tokenizer_source'] !== null) {
    const t = c['tokenizer_source'];
    if (t === 'union') throw new MergeConfigError("tokenizer_source: union (vocabulary merging) is not supported; use base or a model");
    if (typeof t !== 'string') throw new MergeConfigError('tokenizer_source must be base or a model');
    config.tokenizer_source = t === 'base' ? t : checkModelRef(t, 'tokenizer_source');
  }
  if (c['chat_template'] !== undefined && c['chat_template'] !== null) {
    if (typeof c['chat_template'] !== 'string') throw new MergeConfigError('chat_template must be a string');
    config.chat_template = c['chat_template'];
  }
  return config;
}

/** Parses YAML text; syntax errors name the line and column. */
export function parseMergeYaml(text: string, source = 'merge config'): MergeConfig {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const pos = e.linePos?.[0];
    throw new MergeConfigError(`${source}: YAML error${pos ? ` at line ${pos.line}, column ${pos.col}` : ''}: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`);
  }
  return checkMergeConfig(doc.toJS());
}

/** A config given as YAML text, a path to a YAML file, or an object. */
export async function loadMergeConfig(input: string | MergeConfig, options: { baseDir?: string } = {}): Promise<ParsedMergeConfig> {
  if (typeof input !== 'string') {
    const config = checkMergeConfig(input);
    const { stringify } = await import('yaml');
    return { config, text: stringify(config), baseDir: options.baseDir ?? process.cwd() };
  }
  // A path is a single line ending in .yml/.yaml; anything else is YAML text.
  if (!input.includes('\n') && /\.ya?ml$/i.test(input.trim())) {
    const path = resolve(input.trim());
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      throw new MergeConfigError(`${path}: cannot read: ${(e as Error).message}`);
    }
    return { config: parseMergeYaml(text, path), text, baseDir: options.baseDir ?? process.cwd(), path };
  }
  return { config: parseMergeYaml(input), text: input, baseDir: options.baseDir ?? process.cwd() };
}

/** A model reference as an absolute directory. */
export function modelDir(ref: string, baseDir: string): string {
  return isAbsolute(ref) ? ref : resolve(baseDir, ref);
}

