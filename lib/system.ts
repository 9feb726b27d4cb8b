// What this machine offers the engine.
import { cudaAddon, native } from './native.js';

/** A family of CPU kernels, from the least to the most preferred: on x86-64 the VNNI
 * families are the AVX2 and AVX-512 ones with 8-bit dot products in the EXL2 matmul; on
 * arm64 'neondot' is 'neon' with the ARMv8.2-A dot products there. */
export type Isa = 'scalar' | 'avx2' | 'avx2vnni' | 'avx512' | 'avx512vnni' | 'neon' | 'neondot';

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

export interface CudaDevice {
  index: number;
  name: string;
  /** e.g. '9.0' */
  computeCapability: string;
  totalBytes: number;
  freeBytes: number;
}

export interface CudaInfo {
  /** Whether the CUDA variant of the addon (npm run build:cuda) is there and loads. */
  built: boolean;
  /** CUDA runtime and driver versions as the runtime reports them (1000 * major + 10 * minor); 0 when unknown or no driver. */
  runtimeVersion: number;
  driverVersion: number;
  devices: CudaDevice[];
  /** Why no device can be used, when none can: no build, no driver, no device. */
  reason?: string;
  /** The simulator build: its one device is the CPU running the CUDA kernels (for tests); device: 'auto' never picks it. */
  simulated: boolean;
}

/** What CUDA offers on this machine. Never throws: a missing build or driver is a reason. */
export function cudaInfo(): CudaInfo {
  const { addon, reason } = cudaAddon();
  if (!addon?.cudaInfo) return { built: false, runtimeVersion: 0, driverVersion: 0, devices: [], reason: reason ?? 'no CUDA build', simulated: false };
  const info = addon.cudaInfo();
  const devices = info.devices;
  return {
    built: true,
    runtimeVersion: info.runtimeVersion,
    driverVersion: info.driverVersion,
    devices,
    ...(devices.length === 0 ? { reason: info.error ?? 'no CUDA device' } : {}),
    simulated: info.simulated === true,
  };
}
