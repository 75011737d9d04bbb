import { describe, expect, it } from "vitest";
import { effectsOf } from "./effects.js";
import { Scheduler } from "./scheduler.js";
import { Harness, PersistedEffects, drvPathOf, mkNode, mkSubmission, mkWorker } from "./test-support.js";

// Builds a small run, then corrupts its snapshot the way a crash between two persists could.
function midRun() {
  const h = new Harness();
  h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
  const [a] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("a"), mkNode("b", ["a"])], ["b"]))));
  h.report(a);
  return { h, snap: h.scheduler.snapshot() };
}

describe("Scheduler.restore repairs", () => {
  it("a waiting record whose inputs are all done becomes ready and is dispatched", () => {
    const { h, snap } = midRun();
    const b = snap.drvs.find((r) => r.drvPath === drvPathOf("b"))!;
    Object.assign(b, { state: "waiting", epoch: 0, workerId: null, attempts: 0 });
    const r = Scheduler.restore(h.clock.now(), snap);
    expect(r.drv(drvPathOf("b"))!.record.state).toBe("ready");
    const eff = r.workerJoined(h.clock.now(), mkWorker("w9"));
    expect(effectsOf(eff, "assign").map((e) => e.spec.name)).toEqual(["b"]);
    expect(effectsOf(eff, "persistDrvs")[0].records.map((x) => x.state)).toContain("building");
  });

  it("records no running job wants are cancelled", () => {
    const { h, snap } = midRun();
    const r = Scheduler.restore(h.clock.now(), { ...snap, jobs: [] });
    expect(r.drv(drvPathOf("b"))!.record.state).toBe("cancelled");
    expect(r.drv(drvPathOf("a"))!.record.state).toBe("done");
    expect(effectsOf(r.advanceTo(h.clock.now()), "persistDrvs")).toHaveLength(1);
  });

  it("a running job whose derivations all finished before the crash finishes at the next event", () => {
    const { h, snap } = midRun();
    const b = snap.drvs.find((r) => r.drvPath === drvPathOf("b"))!;
    Object.assign(b, { state: "done", finishedAtMs: 5 });
    const r = Scheduler.restore(h.clock.now(), snap);
    const eff = r.advanceTo(h.clock.now());
    expect(effectsOf(eff, "persistJob")[0].job.state).toBe("succeeded");
  });

  it("a building record whose worker never reconnects is requeued after the grace deadline", () => {
    const { h, snap } = midRun();
    const t = h.clock.now();
    const r = Scheduler.restore(t, snap, { restoreGraceMs: 1000 });
    expect(r.workers(t).map((w) => [w.workerId, w.state])).toEqual([["w1", "disconnected"]]);
    expect(r.advanceTo(t + 1000).filter((e) => e.kind === "persistDrvs")).toEqual([]);
    r.advanceTo(t + 1001);
    expect(r.drv(drvPathOf("b"))!.record).toMatchObject({ state: "ready", transientFailures: 0 });
    expect(r.workers(t + 1001)[0].state).toBe("lost");
  });
});

describe("what a restore derives instead of loading", () => {
  it("waiting to ready is not stored: the record stays waiting in the store, and a restore makes it ready", () => {
    const h = new Harness();
    const store = new PersistedEffects();
    store.apply(h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 }))));
    // b needs a feature w1 lacks: it becomes ready when a is done, and nobody takes it.
    const submitted = h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("a"), mkNode("b", ["a"], { requiredSystemFeatures: ["big"] })], ["b"])));
    store.apply(submitted);
    const reported = h.report(h.assigns(submitted)[0]);
    store.apply(reported);

    expect(h.scheduler.drv(drvPathOf("b"))!.record.state).toBe("ready");
    expect(effectsOf(reported, "persistDrvs").flatMap((e) => e.records.map((r) => r.drvPath))).toEqual([drvPathOf("a")]);
    expect(effectsOf(reported, "event").map((e) => e.event)).toContainEqual(expect.objectContaining({ type: "drv.state", drvPath: drvPathOf("b"), from: "waiting", to: "ready" }));
    expect(store.drvs.get(drvPathOf("b"))!.state).toBe("waiting");

    const r = Scheduler.restore(h.clock.now(), store.snapshot());
    expect(r.drv(drvPathOf("b"))!.record.state).toBe("ready");
    const eff = r.workerJoined(h.clock.now(), mkWorker("w2", { features: ["big"] }));
    expect(effectsOf(eff, "assign").map((e) => [e.spec.name, e.workerId])).toEqual([["b", "w2"]]);
  });
});
