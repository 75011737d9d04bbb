// A build whose builder is done uploads its outputs beside the worker's next
// build: the lease stays held, its slot, cores and memory do not.
import { describe, expect, it } from "vitest";
import { effectsOf } from "./effects.js";
import { Harness, drvPathOf, mkNode, mkSubmission, mkWorker } from "./test-support.js";

const TIMEOUT = 10_000;

function twoIndependent(h: Harness) {
  return h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("a"), mkNode("b")], ["a", "b"]))));
}

describe("scheduler: uploads beside the next build", () => {
  it("gives the worker its next build when the builder is done, and completes the first on its result", () => {
    const h = new Harness({ heartbeatTimeoutMs: TIMEOUT });
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1, cores: 4 })));
    const [first] = twoIndependent(h);
    expect(first.spec.cores).toBe(4);
    const done = h.run((s, t) => s.buildStepDone(t, "w1", first.spec.lease));
    const [second] = h.assigns(done);
    expect(second).toMatchObject({ workerId: "w1", spec: { cores: 4 } }); // the first holds no cores now
    expect(effectsOf(done, "persistDrvs").map((e) => e.records.map((r) => r.drvPath))).toEqual([[second.spec.lease.drvPath]]); // the mark itself is not stored
    expect(h.scheduler.drv(first.spec.lease.drvPath)!.record).toMatchObject({ state: "building", workerId: "w1", epoch: first.spec.lease.epoch });
    expect(h.scheduler.drv(first.spec.lease.drvPath)!.record.uploading).toBeUndefined(); // nor in what is stored or shown
    expect(effectsOf(h.report(first), "ack")[0].accepted).toBe(true);
    expect(effectsOf(h.report(second), "ack")[0].accepted).toBe(true);
    expect(h.scheduler.job("j")!.state).toBe("succeeded");
  });

  it("ignores the notice of a stale lease, and a second one", () => {
    const h = new Harness({ heartbeatTimeoutMs: TIMEOUT });
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    const [first] = twoIndependent(h);
    expect(h.run((s, t) => s.buildStepDone(t, "w1", { ...first.spec.lease, epoch: first.spec.lease.epoch + 1 }))).toEqual([]);
    expect(h.run((s, t) => s.buildStepDone(t, "w2", first.spec.lease))).toEqual([]);
    expect(h.assigns(h.run((s, t) => s.buildStepDone(t, "w1", first.spec.lease)))).toHaveLength(1);
    expect(h.run((s, t) => s.buildStepDone(t, "w1", first.spec.lease))).toEqual([]);
  });

  it("requeues an uploading build whose worker is lost, and a late result is rejected", () => {
    const h = new Harness({ heartbeatTimeoutMs: TIMEOUT });
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    const [first] = twoIndependent(h);
    const [second] = h.assigns(h.run((s, t) => s.buildStepDone(t, "w1", first.spec.lease)));
    h.clock.advance(TIMEOUT + 1);
    const lost = h.run((s, t) => s.advanceTo(t));
    const requeued = effectsOf(lost, "event").find((e) => e.event.type === "worker.lost")!.event;
    expect(requeued).toMatchObject({ workerId: "w1", requeued: expect.arrayContaining([first.spec.lease.drvPath, second.spec.lease.drvPath]) });
    expect(h.scheduler.drv(first.spec.lease.drvPath)!.record).toMatchObject({ state: "ready", epoch: first.spec.lease.epoch + 1 });
    expect(effectsOf(h.report(first), "ack")[0].accepted).toBe(false);
    const again = h.assigns(h.run((s, t) => s.workerJoined(t, mkWorker("w2", { maxBuilds: 2 }))));
    expect(again.map((a) => [a.workerId, a.spec.lease.drvPath].join(" ")).sort()).toEqual([drvPathOf("a"), drvPathOf("b")].map((p) => `w2 ${p}`).sort());
  });
});
