import pino from "pino";
import { describe, expect, it } from "vitest";
import { withCacheRetry } from "./cache-retry.js";
import { BuildStepError } from "./executor.js";

const logger = pino({ level: "silent" });

function flaky(failures: number, outcome: "upload-failed" | "failed" = "upload-failed") {
  let calls = 0;
  return {
    step: async () => {
      calls++;
      if (calls <= failures) throw new BuildStepError(outcome, `attempt ${calls} failed`);
      return "ok";
    },
    calls: () => calls,
  };
}

describe("withCacheRetry", () => {
  it("waits until the cache answers again, then runs the step again", async () => {
    const f = flaky(2);
    let probes = 0;
    const probe = async () => ++probes > 3; // down for three probes
    const r = await withCacheRetry(f.step, { probe, signal: new AbortController().signal, logger, what: "uploading", probeEveryMs: 10 });
    expect(r).toBe("ok");
    expect(f.calls()).toBe(3);
    expect(probes).toBeGreaterThanOrEqual(4);
  });

  it("does not retry a real build failure", async () => {
    const f = flaky(1, "failed");
    await expect(withCacheRetry(f.step, { probe: async () => true, signal: new AbortController().signal, logger, what: "x" })).rejects.toThrow("attempt 1 failed");
    expect(f.calls()).toBe(1);
  });

  it("gives up after its attempts, or when the cache stays away", async () => {
    const always = flaky(99);
    await expect(withCacheRetry(always.step, { probe: async () => true, signal: new AbortController().signal, logger, what: "x", attempts: 2 })).rejects.toThrow("attempt 2 failed");
    const away = flaky(99);
    await expect(withCacheRetry(away.step, { probe: async () => false, signal: new AbortController().signal, logger, what: "x", maxWaitMs: 50, probeEveryMs: 10 })).rejects.toThrow("attempt 1 failed");
    expect(away.calls()).toBe(1);
  });
});
