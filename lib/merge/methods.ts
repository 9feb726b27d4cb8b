// The merge methods: their parameters (global or per model, defaults, required) and how
// the native executor runs each. The math itself is in native/merge/.
export type NativeMethod = 0 | 1 | 2 | 3 | 4; // passthrough, linear, slerp, task vectors, model stock
export type SparsifyKind = 0 | 1 | 2 | 3; // none, magnitude, random, magnitude outliers

interface ParamSpec {
  default?: number;
  required?: boolean;
}

export interface MethodSpec {
  name: string;
  /** How the model card names it. */
  pretty: string;
  url?: string;
  global: Record<string, ParamSpec>;
  perModel: Record<string, ParamSpec>;
  native: NativeMethod;
  sparsify: SparsifyKind;
  consensus: boolean;
  /** Needs a base model among the inputs. */
  needsBase: boolean;
  /** Least number of inputs besides the base. */
  minOthers: number;
}

const taskVectors = (
  name: string,
  pretty: string,
  url: string,
  sparsify: SparsifyKind,
  consensus: boolean,
  normalize: boolean,
  rescale: boolean,
  extra: Record<string, ParamSpec> = {},
): MethodSpec => ({
  name,
  pretty,
  url,
  global: { normalize: { default: normalize ? 1 : 0 }, rescale: { default: rescale ? 1 : 0 }, lambda: { default: 1 }, int8_mask: { default: 0 } },
  perModel: { weight: { required: true }, density: { default: 1 }, ...extra },
  native: 3,
  sparsify,
  consensus,
  needsBase: true,
  minOthers: 1,
});

/** The methods by name (a Map: a name from a config never finds a prototype's member). */
export const METHODS: ReadonlyMap<string, MethodSpec> = new Map(
  ([
    { name: 'passthrough', pretty: 'Passthrough', global: {}, perModel: { scale: {} }, native: 0, sparsify: 0, consensus: false, needsBase: false, minOthers: 1 },
    {
      name: 'linear', pretty: 'Linear', url: 'https://arxiv.org/abs/2203.05482',
      global: { normalize: { default: 1 } }, perModel: { weight: { required: true } }, native: 1, sparsify: 0, consensus: false, needsBase: false, minOthers: 1,
    },
    {
      name: 'slerp', pretty: 'SLERP', url: 'https://en.wikipedia.org/wiki/Slerp',
      global: { t: { required: true } }, perModel: {}, native: 2, sparsify: 0, consensus: false, needsBase: true, minOthers: 1,
    },
    taskVectors('task_arithmetic', 'Task Arithmetic', 'https://arxiv.org/abs/2212.04089', 0, false, false, false),
    taskVectors('ties', 'TIES', 'https://arxiv.org/abs/2306.01708', 1, true, true, false),
    taskVectors('dare_ties', 'DARE TIES', 'https://arxiv.org/abs/2311.03099', 2, true, false, true),
    taskVectors('dare_linear', 'Linear DARE', 'https://arxiv.org/abs/2311.03099', 2, false, false, true),
    taskVectors('breadcrumbs', 'Model Breadcrumbs', 'https://arxiv.org/abs/2312.06795', 3, false, false, false, { gamma: { default: 0.01 } }),
    taskVectors('breadcrumbs_ties', 'Model Breadcrumbs with TIES', 'https://arxiv.org/abs/2312.06795', 3, true, false, false, { gamma: { default: 0.01 } }),
    {
      name: 'model_stock', pretty: 'Model Stock', url: 'https://arxiv.org/abs/2403.19522',
      global: { filter_wise: { default: 0 } }, perModel: {}, native: 4, sparsify: 0, consensus: false, needsBase: true, minOthers: 2,
    },
  ] satisfies MethodSpec[]).map((m) => [m.name, m]),
);
