// The CUDA addon the GPU tests run on: the CUDA build when it sees a GPU; else the simulator
// build (npm run build:sim), which runs the same kernels and engine on the CPU; else none,
// with the reason, and the GPU tests skip, saying why (under CI or LAMINATE_REQUIRE_SIM=1
// they fail instead). LAMINATE_CUDA_ADDON picks a file outright. Import this before
// anything calls cudaInfo(): it points the library at the chosen build.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

import type { NativeAddon } from '../../lib/native.js';

const root = join(import.meta.dirname, '../..');
const require = createRequire(import.meta.url);

function withDevice(file: string): NativeAddon | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const addon = require(file) as NativeAddon;
    return addon.cudaInfo && addon.cudaInfo().devices.length > 0 ? addon : undefined;
  } catch {
    return undefined;
  }
}

function choose(): { file?: string; addon?: NativeAddon; reason: string } {
  const env = process.env['LAMINATE_CUDA_ADDON'];
  const candidates = env ? [resolve(env)] : [join(root, 'build-cuda/Release/laminate.node'), join(root, 'build-sim/Release/laminate.node')];
  for (const file of candidates) {
    const addon = withDevice(file);
    if (addon) return { file, addon, reason: '' };
  }
  return { reason: env ? `${env} sees no device` : 'no CUDA build with a GPU, and no simulator build (npm run build:sim)' };
}

const chosen = choose();
if (chosen.file) process.env['LAMINATE_CUDA_ADDON'] = chosen.file;

// Where the GPU tests must run (CI, which builds the simulator first, or
// LAMINATE_REQUIRE_SIM=1), a missing CUDA build fails them instead of skipping them.
const requiredBy = process.env['CI'] ? 'CI is set' : process.env['LAMINATE_REQUIRE_SIM'] === '1' ? 'LAMINATE_REQUIRE_SIM=1' : '';

/** The addon under test, its device's name (with "simulated" for the simulator), or why there is none. */
export const cuda = {
  addon: chosen.addon,
  simulated: chosen.addon?.cudaInfo?.().simulated === true,
  label: chosen.addon ? `${chosen.addon.cudaInfo!().devices[0]!.name}` : '',
  /** '' where the GPU tests run; else ' (skipped: why)', for skipIf and the test's name. */
  skip: chosen.addon || requiredBy ? '' : ` (skipped: ${chosen.reason})`,
  /** The addon; where there is none (and the tests must run), an Error that says why. */
  need(): NativeAddon {
    if (!chosen.addon) throw new Error(`the GPU tests must run (${requiredBy || 'asked for'}), but there is no CUDA addon to run them on: ${chosen.reason}`);
    return chosen.addon;
  },
};
