import { defineConfig } from "vitest/config";

// Unit tests sit beside the code they test; integration tests (real Nix, NATS,
// namespaces) are the *.interop.test.ts and test/** files. All run in `npm test`.
export default defineConfig({
  test: {
    include: ["coordinator/**/*.test.ts", "worker/**/*.test.ts", "proto/**/*.test.ts", "test/**/*.test.ts", "deploy/**/*.test.ts"],
    // The chaos run kills and freezes processes on a timetable: it runs alone, after the rest (test/chaos/vitest.config.ts).
    exclude: ["node_modules/**", "dist/**", "test/chaos/chaos.test.ts"],
    pool: "forks",
    // Two cores: the integration suites each start several processes.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
