// The measurement: for every block of every decoder layer, the candidate recipes and how
// well each kept the block's output. Stored as ExLlamaV2's measurement.json lays it out
// ({"measurement": {"model.layers.N.self_attn": [{accuracy, total_bits, q_proj: {...}, ...}]}}),
// so a file from either tool can be reused for any bitrate.
import { readFile } from 'node:fs/promises';

import type { ModelConfig } from '../model/config.js';
import { BLOCKS, checkRecipe, recipeBits, type BlockName, type Recipe } from './recipes.js';

export interface MeasuredOption {
  /** 1 - the mean relative error of the block's output (at least 1e-6). */
  accuracy: number;
  /** Bits the block's linears take (§6.5 accounting). */
  totalBits: number;
  /** One recipe per linear, in BLOCKS order. */
  recipes: Recipe[];
}

export interface Measurement {
  /** Keyed "model.layers.N.self_attn" and "model.layers.N.mlp". */
  modules: Record<string, MeasuredOption[]>;
  /** What it was measured on (laminate's files; absent in ExLlamaV2's). */
  calibration?: { dataset: string; rows: number; length: number };
}

export class MeasurementError extends Error {
  override name = 'MeasurementError';
}

export function moduleKey(layer: number, block: BlockName): string {
  return `model.layers.${layer}.${BLOCKS[block].key}`;
}

/** A linear's shape [out, in] and bias, per block and linear index. */
export function linearShape(config: ModelConfig, block: BlockName, index: number): { outFeatures: number; inFeatures: number; bias: boolean } {
  const { hiddenSize: h, intermediateSize: i, numAttentionHeads: nh, numKeyValueHeads: nkv, headDim: d } = config;
  if (block === 'attention') {
    const shapes: [number, number][] = [[nh * d, h], [nkv * d, h], [nkv * d, h], [h, nh * d]];
    return { outFeatures: shapes[index]![0], inFeatures: shapes[index]![1], bias: config.attentionBias };
  }
  const shapes: [number, number][] = [[i, h], [i, h], [h, i]];
  return { outFeatures: shapes[index]![0], inFeatures: shapes[index]![1], bias: false };
}

/** Bits a block takes with one recipe per linear. */
export function blockBits(config: ModelConfig, block: BlockName, recipes: Recipe[]): number {
  return recipes.reduce((sum, r, m) => {
    const s = linearShape(config, block, m);
    return sum + recipeBits(r, s.inFeatures, s.outFeatures, s.bias);
  }, 0);
}

// ExLlamaV2's per-matrix form: {"group_size": {"<bits>": size}, "bits": [...], "bits_prop": [...], "scale_bits": 4}.
function recipeJson(r: Recipe): Record<string, unknown> {
  return {
    group_size: Object.fromEntries(r.map((p) => [String(p.bits), p.groupSize])),
    bits: r.map((p) => p.bits),
    bits_prop: r.map((p) => p.fraction),
    scale_bits: 4,
  };
}

function recipeFromJson(v: unknown, where: string): Recipe {
  const o = v as Record<string, unknown> | null;
  const bits = o?.['bits'], prop = o?.['bits_prop'], gs = o?.['group_size'];
  if (!Array.isArray(bits) || !Array.isArray(prop) || bits.length !== prop.length || typeof gs !== 'object' || gs === null)
    throw new MeasurementError(`${where}: expected {group_size, bits, bits_prop}`);
  if (o?.['scale_bits'] !== undefined && o['scale_bits'] !== 4) throw new MeasurementError(`${where}: scale_bits must be 4`);
  const recipe = bits.map((b, i) => ({ bits: b, fraction: prop[i], groupSize: typeof gs === 'object' ? (gs as Record<string, unknown>)[String(b)] : undefined })) as Recipe;
  try {
    checkRecipe(recipe, where);
  } catch (e) {
    throw new MeasurementError((e as Error).message);
  }
  return recipe;
}

export function measurementJson(m: Measurement, layers: number): string {
  const measurement: Record<string, unknown[]> = {};
  for (const [key, options] of Object.entries(m.modules)) {
    const block: BlockName = key.endsWith('.mlp') ? 'mlp' : 'attention';
    measurement[key] = options.map((o) => ({
      accuracy: o.accuracy,
      total_bits: o.totalBits,
      ...Object.fromEntries(o.recipes.map((r, i) => [BLOCKS[block].linears[i]!, recipeJson(r)])),
    }));
  }
  return `${JSON.stringify({ measurement, last_module_idx: layers * 2, ...(m.calibration ? { laminate: { calibration: m.calibration } } : {}) }, null, 2)}\n`;
}

/**
 * Reads a measurement (laminate's or ExLlamaV2's) and checks it against the model: every
 * block of every layer measured, every recipe valid. Bits are recounted for this model.
 */
export function parseMeasurement(text: string, config: ModelConfig, where: string): Measurement {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new MeasurementError(`${where}: not JSON`);
  }
  const table = (json as Record<string, unknown> | null)?.['measurement'];
  if (typeof table !== 'object' || table === null || Array.isArray(table)) throw new MeasurementError(`${where}: no "measurement" object`);
  const modules: Record<string, MeasuredOption[]> = {};
  for (let layer = 0; layer < config.numHiddenLayers; layer++) {
    for (const block of ['attention', 'mlp'] as const) {
      const key = moduleKey(layer, block);
      const list = (table as Record<string, unknown>)[key];
      if (!Array.isArray(list) || list.length === 0) throw new MeasurementError(`${where}: ${key} is not measured (the file is for another model, or incomplete)`);
      modules[key] = list.map((o, i) => {
        const at = `${where}: ${key}[${i}]`;
        const accuracy = (o as Record<string, unknown>)?.['accuracy'];
        if (typeof accuracy !== 'number' || !Number.isFinite(accuracy)) throw new MeasurementError(`${at}: accuracy must be a number`);
        const recipes = BLOCKS[block].linears.map((name) => recipeFromJson((o as Record<string, unknown>)[name], `${at}.${name}`));
        return { accuracy, totalBits: blockBits(config, block, recipes), recipes };
      });
    }
  }
  const cal = (json as Record<string, Record<string, unknown>>)['laminate']?.['calibration'] as Measurement['calibration'] | undefined;
  return { modules, ...(cal ? { calibration: cal } : {}) };
}

export async function readMeasurement(path: string, config: ModelConfig): Promise<Measurement> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new MeasurementError(`measurement: cannot read ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseMeasurement(text, config, path);
}
