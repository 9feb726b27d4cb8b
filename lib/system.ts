// What this machine offers the engine.
import { native } from './native.js';

export interface CpuInfo {
  /** Kernel families this CPU can run, e.g. ['scalar', 'avx2']. */
  isas: string[];
  /** The one loadModel picks by default. */
  best: string;
  avx512bf16: boolean;
  physicalCores: number;
}

export function cpuInfo(): CpuInfo {
  return native().cpuInfo();
}
