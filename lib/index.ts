// The public surface of laminate.
export { loadModel, demoModelDir, type LoadOptions, type LoadProgress } from './model/load.js';
export {
  Model,
  Sequence,
  type ChatOptions,
  type ForwardOptions,
  type GenerateOptions,
  type GenerateTokensOptions,
  type LogitsWanted,
  type ModelInfo,
  type StepInput,
} from './model/model.js';
export { Chat, type ChatSessionOptions } from './model/chat.js';
export type { ModelConfig, RopeScaling } from './model/config.js';
export { Generation, type FinishReason, type GenerationChunk, type GenerationResult, type TokenLogprob, type ToolCall } from './generate/generation.js';
export { renderChat, type ToolChoice } from './model/tools.js';
export { encodeMistralV3, isMistralV3Tokenizer, parseToolCalls, newToolCallId, type MistralV3Options, type ParsedToolCall, type ParseToolCallsResult } from './tokenizer/mistral.js';
export type { SamplerOptions } from './generate/sampler.js';
export { Tokenizer, type SpecialTokens, type TextPiece, type TokenizeOptions } from './tokenizer/tokenizer.js';
export { ChatTemplateError, type ChatMessage, type ChatTool } from './tokenizer/chat-template.js';
export { Detokenizer } from './tokenizer/detokenizer.js';
export { merge, type MergeOptions, type MergeResult } from './merge/merge.js';
export type { WrittenModel } from './formats/model-writer.js';
export { exportModel, type ExportOptions } from './model/export.js';
export { packExl2, quantizeRtn, layoutGroups, bitsPerWeight, EXL2_WIDTHS, type Exl2Codes, type Exl2Group, type Exl2Tensors, type Exl2Width } from './formats/exl2.js';
export { MergeConfigError, type MergeConfig, type MergeSlice, type SliceSource, type Parameters, type ParameterValue } from './merge/config.js';
export { FormatError, CapacityError } from './errors.js';
export { cpuInfo, cudaInfo, type CpuInfo, type CudaDevice, type CudaInfo, type Isa } from './system.js';
export type { StepCounts } from './native.js';
export { quantize, measure, chooseStrategy, type QuantizeOptions, type MeasureOptions, type QuantizeProgress, type QuantizeResult, type QuantizedBlock } from './quantize/quantize.js';
export { readCalibration, calibrationRows, defaultCalibrationPath, CalibrationError, type CalibrationText, type CalibrationRows } from './quantize/calibration.js';
export { readMeasurement, parseMeasurement, measurementJson, MeasurementError, type Measurement, type MeasuredOption } from './quantize/measurement.js';
export { optimize, BudgetError, type SlotOption } from './quantize/optimize.js';
export { recipeGroups, recipeBits, parseRecipe, ATTENTION_CANDIDATES, MLP_CANDIDATES, HEAD_RECIPES, type Recipe, type RecipePart } from './quantize/recipes.js';
export { createServer, type ServerOptions, type LaminateServer, type ServerState } from './server/server.js';
export { serve, type ServeOptions, type RunningServer } from './server/serve.js';
export { ApiError } from './server/errors.js';
export type { ServerMetrics } from './server/metrics.js';
export { GrammarError, type ConstraintOptions } from './constrain/constraint.js';
export { SchemaError } from './constrain/schema.js';
export { RegexError } from './constrain/regex.js';
