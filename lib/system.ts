// What this machine offers the engine.
import { native } from './native.js';

/** A family of CPU kernels. */
export type Isa = 'scalar' | 'avx2' | 'avx512';

export interface CpuInfo {
  /** Kernel families this CPU can run, e.g. ['scalar', 'avx2']. */
  isas: Isa[];
  /** The one loadModel picks by default. */
  best: Isa;
  avx512bf16: boolean;
  physicalCores: number;
}

export function cpuInfo(): CpuInfo {
  return native().cpuInfo() as CpuInfo;
}
