import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    // the suites check CPU numerics unless a test names its device (test/gpu.test.ts does)
    env: { LAMINATE_DEVICE: 'cpu' },
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
