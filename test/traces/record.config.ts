import { defineConfig } from 'vitest/config';

/**
 * Re-records the traces under test/traces/ from the real system (not part of `npm test`, which replays them):
 *
 *   npx vitest run --config test/traces/record.config.ts                 # every scenario
 *   RECORD=retransmission npx vitest run --config test/traces/record.config.ts
 */
export default defineConfig({
  test: {
    include: ['test/traces/record.spec.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    globalSetup: ['test/global-setup.ts'],
    setupFiles: ['test/setup-logs.ts'],
  },
});
