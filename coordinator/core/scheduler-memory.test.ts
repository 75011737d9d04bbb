// The default policies end to end through the Scheduler on a virtual clock:
// reservations, OOM retries, lifetime waits, learned estimates and status.
import { describe, expect, it } from "vitest";
import { effectsOf, type EffectOf } from "./effects.js";
import { memoryAt } from "./estimator.js";
import { LearnedEstimator } from "./learned-estimator.js";
import { Scheduler } from "./scheduler.js";
import { Harness, drvPathOf, mkNode, mkReport, mkSubmission, mkWorker } from "./test-support.js";

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const HOUR = 3_600_000;

const rowsOf = (h: Harness, jobId = "j") => Object.fromEntries(h.scheduler.jobStatus(jobId, h.clock.now(), { derivations: true })!.derivations.map((d) => [d.name, d]));

function oom(h: Harness, a: EffectOf<"assign">) {
  // The worker kills a build at its reservation: the peak at the kill is the limit.
  return h.run((s, t) => s.buildReported(t, a.workerId, { ...mkReport(a, "out-of-memory"), peakMemoryBytes: a.spec.memoryLimitBytes }, false));
}

describe("scheduler with memory-fit (defaults)", () => {
  it("two builds on one worker add up reservations; a third that would exceed RAM waits and says why", () => {
    const estimator = new LearnedEstimator({
      heavy: [{ pname: "big", oneCoreMinutes: 10, parallelFraction: 0.5, baseMiB: 1200, perCoreMiB: 0, diskGiB: 1, note: "test" }],
    });
    const h = new Harness({}, new Scheduler({ heartbeatTimeoutMs: 10_000 }, { estimator }));
    h.run((s, t) => s.workerJoined(t, mkWorker("w", { memoryBytes: 4 * GiB, cores: 4, maxBuilds: 3 })));
    const nodes = ["b1", "b2", "b3"].map((n) => mkNode(`big-${n}`, [], { pname: "big", version: n }));
    const assigns = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", nodes, nodes.map((n) => n.name)))));
    expect(assigns).toHaveLength(2);
    const reserved = assigns.reduce((sum, a) => sum + a.spec.memoryLimitBytes, 0);
    for (const a of assigns) expect(a.spec.memoryLimitBytes).toBeGreaterThanOrEqual(1200 * MiB);
    expect(reserved).toBeLessThanOrEqual(4 * GiB - 128 * MiB);
    const [w] = h.scheduler.workers(h.clock.now());
    expect(w).toMatchObject({ reservedMemoryBytes: reserved, unreservedMemoryBytes: 4 * GiB - reserved, reservedCores: 5 });
    expect(w.running.map((r) => [r.reservedMemoryBytes, r.estimatedMemoryBytes, r.estimateSource])).toEqual(
      assigns.map((a) => [a.spec.memoryLimitBytes, 1200 * MiB, "heavy-table"]),
    );
    const waiting = Object.values(rowsOf(h)).find((r) => r.state === "ready")!;
    expect(waiting.holdReason).toBe(`waiting for memory: needs ~1200 MB at 1 core; most unreserved on a free worker is ${Math.round((4 * GiB - reserved - 128 * MiB) / MiB)} MB`);
    // One finishes: its reservation is released and the third starts.
    expect(h.assigns(h.report(assigns[0])).map((a) => a.spec.name)).toEqual([waiting.name]);
  });

  it("OOM: estimate raised, retried with fewer cores, not a failure, bounded with the exact reason", () => {
    const h = new Harness({ maxOomRetries: 2, maxTransientRetries: 0 });
    h.run((s, t) => s.workerJoined(t, mkWorker("w", { memoryBytes: 16 * GiB, cores: 8, maxBuilds: 1 })));
    let a = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("hog")], ["hog"]))))[0];
    expect(a.spec.cores).toBe(8);
    const estimates: number[] = [rowsOf(h).hog.estimatedMemoryBytes!];
    const limits = [a.spec.memoryLimitBytes];
    const cores = [a.spec.cores];
    for (let i = 0; i < 2; i++) {
      const eff = oom(h, a);
      // The raised estimate is persisted for the shell to store.
      expect(effectsOf(eff, "persistEstimate")[0].estimate).toMatchObject({ key: "hog@1" });
      expect(effectsOf(eff, "persistEstimate")[0].estimate.oomFloors).toContainEqual({ cores: a.spec.cores, bytes: Math.ceil(a.spec.memoryLimitBytes * 1.25) });
      a = h.assigns(eff)[0];
      const row = rowsOf(h).hog;
      expect(row).toMatchObject({ state: "building", oomKills: i + 1, attempts: i + 2 });
      expect(h.scheduler.drv(drvPathOf("hog"))!.record.transientFailures).toBe(0);
      estimates.push(row.estimatedMemoryBytes!);
      limits.push(a.spec.memoryLimitBytes);
      cores.push(a.spec.cores);
    }
    expect(cores).toEqual([8, 4, 2]);
    // At the cores granted, each retry is estimated to need more than the kill before it.
    const priorAt4 = memoryAt(new LearnedEstimator().estimate(mkNode("hog")).model!, 4);
    expect(estimates[1]).toBeGreaterThan(2 * priorAt4);
    expect(estimates[2]).toBeGreaterThanOrEqual(limits[1] * 1.25);
    expect(limits[2]).toBeGreaterThan(limits[0]);
    oom(h, a);
    const rec = h.scheduler.drv(drvPathOf("hog"))!.record;
    expect(rec.state).toBe("failed");
    expect(rec.reason).toBe(`needs more than ${Math.round(limits[2] / MiB)} MB; largest worker has 16384 MB (out of memory 3 times, last with 2 cores)`);
    expect(h.scheduler.job("j")!.state).toBe("failed");
  });

  it("a /proc guard kill (peak sampled past the reservation) is an OOM like a kernel kill: estimate over the peak, no retry budget spent", () => {
    const h = new Harness({ maxOomRetries: 2, maxTransientRetries: 0 });
    h.run((s, t) => s.workerJoined(t, mkWorker("w", { memoryBytes: 16 * GiB, cores: 2, maxBuilds: 1 })));
    const a = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("hog")], ["hog"]))))[0];
    // The guard sees the tree only every sample interval: it may be well past the limit when it kills.
    const peak = a.spec.memoryLimitBytes + 300 * MiB;
    const eff = h.run((s, t) => s.buildReported(t, a.workerId, { ...mkReport(a, "out-of-memory"), peakMemoryBytes: peak, error: `build ran out of memory at ${Math.round(peak / MiB)} MiB` }, false));
    expect(effectsOf(eff, "persistEstimate")[0].estimate.oomFloors).toContainEqual({ cores: a.spec.cores, bytes: Math.ceil(peak * 1.25) });
    const next = h.assigns(eff)[0];
    expect(next.spec.memoryLimitBytes).toBeGreaterThan(a.spec.memoryLimitBytes);
    const rec = h.scheduler.drv(drvPathOf("hog"))!.record;
    expect(rec).toMatchObject({ state: "building", oomKills: 1, transientFailures: 0, attempts: 2 });
    expect(h.scheduler.workers(h.clock.now())[0].oomKills).toBe(1);
  });

  it("a success whose memory was not measured shows so, and the estimate keeps its memory", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w", { memoryBytes: 16 * GiB, cores: 2, maxBuilds: 1 })));
    const a = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("quick")], ["quick"]))))[0];
    const before = rowsOf(h).quick.estimatedMemoryBytes;
    h.run((s, t) => s.buildReported(t, a.workerId, { ...mkReport(a, "succeeded"), peakMemoryBytes: 0, memoryNotMeasured: true }, true));
    expect(rowsOf(h).quick).toMatchObject({ state: "done", peakMemoryBytes: 0, peakMemoryNotMeasured: true, estimatedMemoryBytes: before });
  });

  it("an OOM whose raised need exceeds every worker fails at once", () => {
    const estimator = new LearnedEstimator({
      heavy: [{ pname: "hog", oneCoreMinutes: 10, parallelFraction: 0.5, baseMiB: 1500, perCoreMiB: 0, diskGiB: 1, note: "test" }],
    });
    const h = new Harness({}, new Scheduler({ heartbeatTimeoutMs: 10_000, maxOomRetries: 5 }, { estimator }));
    h.run((s, t) => s.workerJoined(t, mkWorker("w", { memoryBytes: 2 * GiB, cores: 1, maxBuilds: 1 })));
    const a = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("hog")], ["hog"]))))[0];
    // All the worker can give (memory minus its margin: 10%, at most 128 MiB); 1.25x that exceeds it.
    expect(a.spec.memoryLimitBytes).toBe(2 * GiB - 128 * MiB);
    oom(h, a);
    const hogLimit = Math.round(a.spec.memoryLimitBytes / MiB);
    expect(h.scheduler.drv(drvPathOf("hog"))!.record).toMatchObject({
      state: "failed",
      oomKills: 1,
      reason: `needs more than ${hogLimit} MB; largest worker has 2048 MB (out of memory 1 times, last with 1 cores)`,
    });
  });

  it("a worker near its end of life gets no long build; with no fresh worker the wait is explained", () => {
    const estimator = new LearnedEstimator({
      heavy: [{ pname: "long", oneCoreMinutes: 11 * 60, parallelFraction: 0, baseMiB: 100, perCoreMiB: 0, diskGiB: 1, note: "test" }],
    });
    const h = new Harness({}, new Scheduler({ heartbeatTimeoutMs: 10_000 }, { estimator }));
    h.run((s, t) => s.workerJoined(t, mkWorker("old", { maxLifetimeSeconds: 4 * 3600, uptimeSeconds: 3600 })));
    const eff = h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("long-1", [], { pname: "long" }), mkNode("short")], ["long-1", "short"])));
    expect(h.assigns(eff).map((a) => [a.spec.name, a.workerId])).toEqual([["short", "old"]]);
    // Longer than even a fresh one of these workers lives: it waits for the freshest there can be.
    expect(rowsOf(h)["long-1"].holdReason).toBe(
      "needs ~11h, more than a fresh worker's 4h allows with 10% to spare; waiting for a worker with 3h48m left to start on the freshest (longest remaining now 3h)",
    );
    const [old] = h.scheduler.workers(h.clock.now());
    expect(old.remainingLifetimeSeconds).toBe(3 * 3600);
    const fresh = h.run((s, t) => s.workerJoined(t, mkWorker("fresh", { maxLifetimeSeconds: 24 * 3600 })));
    expect(h.assigns(fresh).map((a) => [a.spec.name, a.workerId])).toEqual([["long-1", "fresh"]]);
    // Time passes on the virtual clock: remaining lifetime shrinks with it.
    h.clock.advance(HOUR);
    expect(h.scheduler.workers(h.clock.now()).find((w) => w.workerId === "old")!.remainingLifetimeSeconds).toBe(2 * 3600);
  });

  it("a build that waited longer than its slack would buy takes a worker outliving its estimate by half the slack", () => {
    const run = (waitMs: number) => {
      const estimator = new LearnedEstimator({
        heavy: [{ pname: "long", oneCoreMinutes: 9 * 60, parallelFraction: 0, baseMiB: 100, perCoreMiB: 0, diskGiB: 1, note: "test" }],
      });
      const h = new Harness({}, new Scheduler({ heartbeatTimeoutMs: 10 * HOUR }, { estimator }));
      const life = { maxLifetimeSeconds: 12 * 3600 };
      h.run((s, t) => s.workerJoined(t, mkWorker("old", { ...life, uptimeSeconds: 7 * 3600 })));
      expect(h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("long-1", [], { pname: "long" })], ["long-1"]))))).toEqual([]);
      h.clock.advance(waitMs);
      // 9.6 h left: less than 9 h + 10 %, more than 9 h + 5 %.
      return h.assigns(h.run((s, t) => s.workerJoined(t, mkWorker("mid", { ...life, uptimeSeconds: 2.4 * 3600 })))).map((a) => [a.spec.name, a.workerId]);
    };
    expect(run(0.5 * HOUR)).toEqual([]);
    expect(run(0.9 * HOUR)).toEqual([["long-1", "mid"]]);
  });

  it("a build lost with its worker after 3 h is not restarted where it could not run 4.5 h", () => {
    const h = new Harness({ heartbeatTimeoutMs: 10_000 });
    const life = { maxLifetimeSeconds: 12 * 3600 };
    h.run((s, t) => s.workerJoined(t, mkWorker("a", life)));
    const [a] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("x")], ["x"]))));
    for (let i = 0; i < 3 * 360; i++) {
      h.clock.advance(10_000);
      h.run((s, t) => s.heartbeat(t, "a", { freeMemoryBytes: GiB, freeDiskBytes: 50 * GiB, uptimeSeconds: Math.floor(t / 1000), running: [a.spec.lease] }));
    }
    h.clock.advance(20_000);
    h.run((s, t) => s.advanceTo(t));
    expect(h.scheduler.drv(drvPathOf("x"))!.record).toMatchObject({ state: "ready", lostAfterMs: 3 * HOUR });
    // 4 h left: the 5-minute prior would fit, the 3 h it already ran unfinished (x1.5, +10%) does not.
    const old = h.run((s, t) => s.workerJoined(t, mkWorker("old", { ...life, uptimeSeconds: 8 * 3600 })));
    expect(h.assigns(old)).toEqual([]);
    expect(rowsOf(h).x.holdReason).toMatch(/^needs ~4h30m, /);
    const fresh = h.run((s, t) => s.workerJoined(t, mkWorker("fresh", life)));
    expect(h.assigns(fresh).map((x) => [x.spec.name, x.workerId])).toEqual([["x", "fresh"]]);
  });

  it("learns from finished builds; status shows estimate and measured side by side, and live usage while building", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w", { maxBuilds: 1 })));
    const nodes = [mkNode("foo-1.1", [], { pname: "foo", version: "1.1" }), mkNode("foo-1.2", ["foo-1.1"], { pname: "foo", version: "1.2" })];
    const [a] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", nodes, ["foo-1.2"]))));
    expect(rowsOf(h)["foo-1.1"]).toMatchObject({ estimateSource: "default", currentMemoryBytes: 0 });
    h.run((s, t) =>
      s.heartbeat(t, "w", { freeMemoryBytes: GiB, freeDiskBytes: 50 * GiB, uptimeSeconds: 5, running: [a.spec.lease], usage: [{ lease: a.spec.lease, memoryBytes: 300 * MiB, peakMemoryBytes: 350 * MiB }] }),
    );
    expect(h.scheduler.workers(h.clock.now())[0].running[0]).toMatchObject({ currentMemoryBytes: 300 * MiB, currentPeakMemoryBytes: 350 * MiB, cores: a.spec.cores });
    const done = h.run((s, t) => s.buildReported(t, "w", { ...mkReport(a), peakMemoryBytes: 400 * MiB, durationMs: 90_000 }, true));
    expect(effectsOf(done, "persistEstimate").map((e) => e.estimate.key)).toEqual(["foo@1"]);
    const rows = rowsOf(h);
    expect(rows["foo-1.1"]).toMatchObject({ peakMemoryBytes: 400 * MiB, durationMs: 90_000, estimatedMemoryBytes: 400 * MiB, estimatedDurationMs: 90_000 });
    // foo-1.2 shares the key foo@1: it is estimated from foo-1.1's build.
    expect(rows["foo-1.2"]).toMatchObject({ state: "building", estimateSource: "history", estimatedMemoryBytes: 400 * MiB });
  });

  it("a restore takes stored estimates from the snapshot", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w")));
    const [a] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("x"), mkNode("y", ["x"])], ["y"]))));
    h.run((s, t) => s.buildReported(t, "w", { ...mkReport(a), peakMemoryBytes: 700 * MiB }, true));
    const snap = h.scheduler.snapshot();
    expect(snap.estimates!.map((e) => e.key)).toEqual(["x@1"]);
    const restored = Scheduler.restore(h.clock.now(), snap);
    expect(restored.policies.estimator.exportEstimates!()).toEqual(snap.estimates);
    const noEstimates = Scheduler.restore(h.clock.now(), { ...snap, estimates: [] });
    expect(noEstimates.policies.estimator.exportEstimates!()).toEqual([]);
  });
});
