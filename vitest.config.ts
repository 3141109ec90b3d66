import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts', 'engines/*/test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: [
            'test/integration/**/*.test.ts',
            'test/e2e/**/*.test.ts',
            'test/reliability/**/*.test.ts',
            'engines/*/test/integration/**/*.test.ts',
          ],
          // reliability-run first: its teardown (the secret sweep, the figures) runs after the server stops.
          globalSetup: ['test/support/reliability-run.ts', 'test/support/global-setup.ts'],
          setupFiles: ['test/support/secret-recorder.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
