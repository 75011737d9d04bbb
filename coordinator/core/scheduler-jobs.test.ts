import { describe, expect, it } from "vitest";
import { effectsOf } from "./effects.js";
import { Scheduler } from "./scheduler.js";
import { Harness, PersistedEffects, drvPathOf, mkNode, mkSubmission, mkWorker } from "./test-support.js";

describe("scheduler: cancel", () => {
  it("cancels what no other running job wants and aborts its running builds", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 4 })));
    const j1 = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j1", [mkNode("base"), mkNode("mine"), mkNode("p", ["base", "mine"])], ["p"]))));
    h.run((s, t) => s.submitJob(t, mkSubmission("j2", [mkNode("base"), mkNode("q", ["base"])], ["q"])));
    const mine = j1.find((a) => a.spec.name === "mine")!;
    const base = j1.find((a) => a.spec.name === "base")!;

    const eff = h.run((s, t) => s.cancelJob(t, "j1"));
    expect(effectsOf(eff, "abort")).toEqual([{ kind: "abort", workerId: "w1", lease: mine.spec.lease, reason: "job j1 cancelled" }]);
    expect(h.scheduler.job("j1")!.state).toBe("cancelled");
    expect(h.scheduler.drv(drvPathOf("mine"))!.record.state).toBe("cancelled");
    expect(h.scheduler.drv(drvPathOf("p"))!.record.state).toBe("cancelled");
    expect(h.scheduler.drv(drvPathOf("base"))!.record.state).toBe("building");
    expect(effectsOf(h.report(mine), "ack")[0].accepted).toBe(false);

    // The shared build carries on for j2.
    const q = h.assigns(h.report(base));
    expect(q.map((a) => a.spec.name)).toEqual(["q"]);
    h.report(q[0]);
    expect(h.scheduler.job("j2")!.state).toBe("succeeded");
    expect(h.scheduler.job("j1")!.state).toBe("cancelled");
    // Cancelling a finished job changes nothing.
    expect(h.run((s, t) => s.cancelJob(t, "j2"))).toEqual([]);
    expect(() => h.run((s, t) => s.cancelJob(t, "nope"))).toThrow(/unknown job/);
  });

  it("a later job revives a cancelled or failed derivation and builds it", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    const [a] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j1", [mkNode("a"), mkNode("b", ["a"])], ["b"]))));
    h.report(a, "failed");
    expect(h.scheduler.job("j1")!.state).toBe("failed");
    const again = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j2", [mkNode("a"), mkNode("b", ["a"])], ["b"]))));
    expect(again.map((x) => x.spec.name)).toEqual(["a"]);
    expect(h.scheduler.drv(drvPathOf("b"))!.record).toMatchObject({ state: "waiting", reason: "" });
    h.report(h.assigns(h.report(again[0]))[0]);
    expect(h.scheduler.job("j2")!.state).toBe("succeeded");
    // The earlier job's outcome is history: it stays failed.
    expect(h.scheduler.job("j1")!.state).toBe("failed");
  });
});

describe("scheduler: idempotency keys", () => {
  it("are per owner: the same key finds the owner's own job, never another's", () => {
    const h = new Harness();
    const sub = (jobId: string, owner: string) => mkSubmission(jobId, [mkNode("a")], ["a"], { idempotencyKey: "k1", owner });
    const first = h.run((s, t) => s.submitJob(t, sub("j1", "alice")));
    expect(effectsOf(first, "jobAccepted")).toEqual([{ kind: "jobAccepted", jobId: "j1", existing: false }]);
    expect(effectsOf(h.run((s, t) => s.submitJob(t, sub("j2", "alice"))), "jobAccepted")).toEqual([{ kind: "jobAccepted", jobId: "j1", existing: true }]);
    expect(effectsOf(h.run((s, t) => s.submitJob(t, sub("j3", "bob"))), "jobAccepted")).toEqual([{ kind: "jobAccepted", jobId: "j3", existing: false }]);
    expect([h.scheduler.job("j1")!.owner, h.scheduler.job("j3")!.owner]).toEqual(["alice", "bob"]);
  });
});

describe("scheduler: status", () => {
  it("counts, ETA from measured durations and worker views", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1, maxLifetimeSeconds: 3600, uptimeSeconds: 100 })));
    const nodes = [mkNode("a"), mkNode("b", ["a"]), mkNode("c", ["b"])];
    const [a] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", nodes, ["c"]))));
    expect(h.scheduler.jobStatus("j", h.clock.now())!.etaMs).toBe(0); // nothing measured yet
    h.clock.advance(1000);
    const [b] = h.assigns(h.report(a)); // mkReport says 1000 ms
    const st = h.scheduler.jobStatus("j", h.clock.now(), { derivations: true })!;
    expect(st.counts).toEqual({ total: 3, done: 1, cached: 0, building: 1, queued: 0, waiting: 1, failed: 0, cancelled: 0 });
    // c waits (1000 ms) + b just started (1000 ms left), one slot.
    expect(st.etaMs).toBe(2000);
    expect(st.derivations.map((d) => [d.name, d.state])).toEqual([["a", "done"], ["b", "building"], ["c", "waiting"]]);
    const [w] = h.scheduler.workers(h.clock.now());
    expect(w).toMatchObject({ workerId: "w1", state: "active", buildsDone: 1, remainingLifetimeSeconds: 3500 - 1 });
    expect(w.running.map((r) => r.name)).toEqual([b.spec.name]);
  });
});

describe("scheduler: hold reasons", () => {
  it("says why a ready derivation is not running", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("a"), mkNode("b")], ["a", "b"])));
    const rows = h.scheduler.jobStatus("j", h.clock.now(), { derivations: true })!.derivations;
    expect(rows.map((r) => [r.name, r.state, r.holdReason])).toEqual([
      ["a", "building", ""],
      ["b", "ready", "every matching worker is busy"],
    ]);
    expect(h.scheduler.stateCounts()).toEqual({ waiting: 0, ready: 1, building: 1, done: 0, failed: 0, cancelled: 0 });
  });
});

describe("scheduler: restore", () => {
  it("rebuilds from persisted effects mid-run, reproduces status, adopts the lease of a returning worker", () => {
    const h = new Harness({ restoreGraceMs: 50_000 });
    const store = new PersistedEffects();
    const run = (f: Parameters<Harness["run"]>[0]) => {
      const eff = h.run(f);
      store.apply(eff);
      return eff;
    };
    run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 2 })));
    run((s, t) => s.workerJoined(t, mkWorker("w2", { maxBuilds: 1 })));
    const nodes = [mkNode("a"), mkNode("bad"), mkNode("b", ["a"]), mkNode("c", ["a"]), mkNode("e", ["bad"]), mkNode("d", ["b", "c", "e"]), mkNode("x")];
    const first = h.assigns(run((s, t) => s.submitJob(t, mkSubmission("j", nodes, ["d", "x"]))));
    const byName = Object.fromEntries(first.map((a) => [a.spec.name, a]));
    expect(Object.keys(byName).sort()).toEqual(["a", "bad", "x"]);
    run((s, t) => s.buildReported(t, byName.bad.workerId, { ...mkReportFor(byName.bad), outcome: "failed", error: "boom" }, false));
    const bc = h.assigns(run((s, t) => s.buildReported(t, byName.a.workerId, mkReportFor(byName.a), true)));
    expect(bc.map((a) => a.spec.name).sort()).toEqual(["b", "c"]);

    // Persist effects must describe exactly the live state.
    const live = h.scheduler.snapshot();
    const stored = store.snapshot();
    expect(new Map(stored.drvs.map((r) => [r.drvPath, r]))).toEqual(new Map(live.drvs.map((r) => [r.drvPath, r])));
    expect(stored.jobs).toEqual(live.jobs);
    expect(stored.nodes.length).toBe(live.nodes.length);

    const now = h.clock.advance(5000);
    const restored = Scheduler.restore(now, stored, { heartbeatTimeoutMs: 10_000, restoreGraceMs: 50_000 });
    const strip = (st: ReturnType<Scheduler["jobStatus"]>) => ({ ...st!, derivations: st!.derivations.map((d) => ({ ...d, holdReason: "" })) });
    expect(strip(restored.jobStatus("j", now, { derivations: true }))).toEqual(strip(h.scheduler.jobStatus("j", now, { derivations: true })));
    expect(restored.jobStatus("j", now)!.failures[0]).toMatchObject({ name: "bad", reason: "boom" });

    const r = new Harness({}, restored);
    r.clock.set(now);
    expect(r.assigns(r.run((s, t) => s.advanceTo(t)))).toEqual([]);
    // simple-fit put b on w2 (least loaded) and c on w1 (beside x).
    const bLease = bc.find((a) => a.spec.name === "b")!;
    const cLease = bc.find((a) => a.spec.name === "c")!;
    expect([bLease.workerId, cLease.workerId, byName.x.workerId]).toEqual(["w2", "w1", "w1"]);
    // w2 comes back still running b: adopted, not rebuilt.
    const back = r.run((s, t) => s.workerJoined(t, mkWorker("w2", { maxBuilds: 2 }), [bLease.spec.lease]));
    expect(effectsOf(back, "abort")).toEqual([]);
    expect(r.assigns(back)).toEqual([]); // c and x still belong to w1 until the grace deadline
    expect(restored.drv(drvPathOf("b"))!.record).toMatchObject({ state: "building", epoch: bLease.spec.lease.epoch });
    // w1 never returns: after the grace deadline its builds requeue; c (higher rank) takes w2's free slot.
    r.clock.advance(50_001);
    r.run((s, t) => s.heartbeat(t, "w2", { freeMemoryBytes: 0, freeDiskBytes: 0, uptimeSeconds: 0, running: [bLease.spec.lease] }));
    const moved = r.assigns(r.run((s, t) => s.advanceTo(t)));
    expect(moved.map((a) => [a.spec.name, a.workerId])).toEqual([["c", "w2"]]);
    expect(moved[0].spec.lease.epoch).toBe(cLease.spec.lease.epoch + 2);
    expect(restored.drv(drvPathOf("c"))!.record).toMatchObject({ attempts: 2, transientFailures: 0 });
    expect(effectsOf(r.report(cLease), "ack")[0].accepted).toBe(false);
    r.report(moved[0]);
    expect(effectsOf(r.report(bLease), "ack")[0].accepted).toBe(true);
    expect(restored.drv(drvPathOf("d"))!.record.state).toBe("failed");
    expect(restored.jobStatus("j", r.clock.now())!.counts).toMatchObject({ done: 3, failed: 3, building: 1 });
  });
});

function mkReportFor(a: { spec: { lease: { drvPath: string; epoch: number }; cores: number } }) {
  return { lease: { ...a.spec.lease }, outcome: "succeeded" as const, outputs: [], durationMs: 1000, peakMemoryBytes: 1, cores: a.spec.cores, error: "" };
}
