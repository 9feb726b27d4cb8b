// The CUDA side. Without the CUDA build or a GPU, the checks that need one are skipped with
// the reason in their name, and what can be checked without one still is: cudaInfo() never
// throws, and device: 'cuda' is an Error that says why. `npm run test:gpu` runs this file.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { cudaInfo, loadModel } from '../lib/index.js';

const demo = join(import.meta.dirname, '../models/tiny-mistral-bf16');
const info = cudaInfo();
const build = process.env['LAMINATE_CUDA_ADDON'] || join(import.meta.dirname, '../build-cuda/Release/laminate.node');

describe('CUDA, on any machine', () => {
  it('cudaInfo() describes the build and devices, or says why there are none', () => {
    expect(info.built).toBe(existsSync(build));
    if (!info.built) expect(info.reason).toMatch(/npm run build:cuda/);
    if (info.devices.length === 0) expect(info.reason).toMatch(/\S/);
    else expect(info.reason).toBeUndefined();
    if (info.built) expect(info.runtimeVersion).toBeGreaterThanOrEqual(12000);
  });

  it("device: 'cuda' is an Error that gives the reason; 'auto' runs", async () => {
    await expect(loadModel(demo, { device: 'cuda' })).rejects.toThrow(info.reason ?? /runs models on the CPU only/);
    await using model = await loadModel(demo, { device: 'auto' });
    expect(model.info.device).toBe('cpu');
  });
});

const gpu = info.devices.length > 0 ? '' : ` (skipped: ${info.reason})`;
describe.skipIf(gpu !== '')(`CUDA, on a GPU${gpu}`, () => {
  it('every device reports a name, a compute capability and its memory', () => {
    for (const d of info.devices) {
      expect(d.name).toMatch(/\S/);
      expect(d.computeCapability).toMatch(/^\d+\.\d+$/);
      expect(d.freeBytes).toBeGreaterThan(0);
      expect(d.freeBytes).toBeLessThanOrEqual(d.totalBytes);
    }
    expect(info.driverVersion).toBeGreaterThan(0);
  });
});
