import { describe, expect, it } from "vitest";
import { derivationsTable, formatBytes, formatDuration, jobOutcome, progressLine, table } from "./format.js";
import { DerivationStatus, JobStatus } from "../../proto/gen/farm.js";

const job = (patch: Partial<JobStatus> = {}): JobStatus => ({
  jobId: "j-1",
  description: "nixpkgs#hello",
  state: "running",
  counts: { total: 14, done: 7, cached: 1, building: 2, queued: 3, waiting: 2, failed: 0, cancelled: 0 },
  createdUnixMs: 0,
  finishedUnixMs: 0,
  etaMs: 80_000,
  roots: [],
  outputs: [],
  failures: [],
  derivations: [],
  ...patch,
});

describe("CLI formatting", () => {
  it("formats sizes and durations for people", () => {
    expect(formatBytes(0)).toBe("0");
    expect(formatBytes(1536 * 1024 ** 2)).toBe("1.5 GiB");
    expect(formatBytes(300 * 1024 ** 2)).toBe("300 MiB");
    expect(formatDuration(12_000)).toBe("12s");
    expect(formatDuration(260_000)).toBe("4m20s");
    expect(formatDuration(11 * 3600_000 + 5 * 60_000)).toBe("11h05m");
  });

  it("shows progress with an ETA while running, and none once finished", () => {
    expect(progressLine(job())).toBe("[7/14 done, 1 cached] 2 building, 3 queued, 2 waiting, 0 failed, ETA 1m20s");
    expect(progressLine(job({ etaMs: 0 }))).toMatch(/ETA unknown$/);
    expect(progressLine(job({ state: "succeeded" }))).not.toMatch(/ETA/);
  });

  it("ends a failed job with each failure, its reason and its log tail", () => {
    const text = jobOutcome(
      job({ state: "failed", counts: { ...job().counts!, failed: 2 }, failures: [{ drvPath: "/tmp/nix/store/x-b.drv", name: "b", reason: "builder failed with exit code 2", logTail: ["oops"] }] }),
    );
    expect(text).toContain("job j-1 failed: 2 of 14 derivations failed");
    expect(text).toContain("  b (/tmp/nix/store/x-b.drv): builder failed with exit code 2\n    | oops");
  });

  it("says 'not measured' for a peak nothing measured, never 0, in the table and the job JSON", () => {
    const row = (patch: Partial<DerivationStatus>) => DerivationStatus.fromPartial({ drvPath: "/tmp/nix/store/x-a.drv", name: "a", state: "done", ...patch });
    const [, measured, unmeasured, never] = derivationsTable([row({ peakMemoryBytes: 3 * 2 ** 20 }), row({ peakMemoryNotMeasured: true }), row({ state: "queued" })]).split("\n");
    expect(measured).toContain("3.0 MiB");
    expect(unmeasured).toContain("not measured");
    expect(unmeasured).not.toMatch(/\b0(\.0)? ?[MK]?i?B\b/);
    expect(never).not.toContain("not measured");
    expect(DerivationStatus.toJSON(row({ peakMemoryNotMeasured: true }))).toMatchObject({ peakMemoryNotMeasured: true });
    expect(DerivationStatus.toJSON(row({ peakMemoryNotMeasured: true }))).not.toHaveProperty("peakMemoryBytes");
  });

  it("aligns columns", () => {
    expect(table(["A", "LONG"], [["xyz", "1"]])).toBe("A    LONG\nxyz  1");
  });
});
