import { defineConfig } from "vitest/config";

// The chaos run (npm run test:chaos; CHAOS_SIZE=small in npm test) kills and
// freezes processes on a timetable, so it runs alone, after the rest.
export default defineConfig({
  test: {
    include: ["test/chaos/chaos.test.ts"],
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 600_000,
    hookTimeout: 120_000,
  },
});
