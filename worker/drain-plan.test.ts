import { describe, expect, it } from "vitest";
import { plannedEnd, splitForDrain } from "./drain-plan.js";

const lease = (n: string) => ({ drvPath: `/tmp/nix/store/${n}.drv`, epoch: 1 });

describe("splitForDrain", () => {
  const now = 100_000;
  const deadline = now + 30_000;

  it("keeps builds expected to end by the deadline and hands back the others at once", () => {
    const split = splitForDrain(
      [
        { lease: lease("almost-done"), startedAtMs: now - 50_000, estimatedDurationMs: 60_000 }, // 10 s left
        { lease: lease("just-started"), startedAtMs: now - 1000, estimatedDurationMs: 600_000 },
        { lease: lease("exactly"), startedAtMs: now, estimatedDurationMs: 30_000 },
      ],
      now,
      deadline,
    );
    expect(split.keep).toEqual([lease("almost-done"), lease("exactly")]);
    expect(split.handBack).toEqual([lease("just-started")]);
  });

  it("leaves builds without an estimate to the deadline", () => {
    expect(splitForDrain([{ lease: lease("unknown"), startedAtMs: now - 1000, estimatedDurationMs: 0 }], now, deadline)).toEqual({ keep: [lease("unknown")], handBack: [] });
  });

  it("expects an overrunning build to need as long again as it has overrun", () => {
    const late = (over: number) => splitForDrain([{ lease: lease("late"), startedAtMs: now - 60_000 - over, estimatedDurationMs: 60_000 }], now, deadline);
    expect(late(5000).keep).toHaveLength(1); // ~6 s more (a tenth of the estimate)
    expect(late(40_000).handBack).toHaveLength(1); // ~40 s more
  });
});

describe("plannedEnd", () => {
  it("drains one grace period (plus a margin) before the platform ends the machine", () => {
    expect(plannedEnd({ now: 1_000_000, uptimeSeconds: 3000, maxLifetimeSeconds: 3600, graceMs: 30_000, marginMs: 5000 })).toEqual({ endAtMs: 1_600_000, drainAtMs: 1_565_000 });
  });

  it("drains now when the end is nearer than the grace, and never without a lifetime", () => {
    expect(plannedEnd({ now: 1000, uptimeSeconds: 3590, maxLifetimeSeconds: 3600, graceMs: 30_000 })).toEqual({ endAtMs: 11_000, drainAtMs: 1000 });
    expect(plannedEnd({ now: 1000, uptimeSeconds: 10, maxLifetimeSeconds: 0, graceMs: 30_000 })).toBeNull();
  });
});
