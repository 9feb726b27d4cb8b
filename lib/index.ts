// The public surface of laminate.
export { loadModel, type LoadOptions, type LoadProgress } from './model/load.js';
export {
  Model,
  Sequence,
  type ForwardOptions,
  type GenerateOptions,
  type GenerateResult,
  type LogitsWanted,
  type ModelInfo,
  type StepInput,
} from './model/model.js';
export type { ModelConfig, RopeScaling } from './model/config.js';
export type { SamplerOptions } from './generate/sampler.js';
export { FormatError } from './errors.js';
export { cpuInfo } from './system.js';
