import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // QEMU boots and oracle runs are CPU-heavy on two cores; keep files from starving each other.
    fileParallelism: true,
    maxWorkers: 2,
  },
});
