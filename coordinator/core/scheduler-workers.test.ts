import { describe, expect, it } from "vitest";
import { effectsOf } from "./effects.js";
import { Harness, drvPathOf, mkNode, mkReport, mkSubmission, mkWorker } from "./test-support.js";

const TIMEOUT = 10_000;

function oneDrv(h: Harness, name = "a") {
  const eff = h.run((s, t) => s.submitJob(t, mkSubmission(`j-${name}`, [mkNode(name)], [name])));
  return h.assigns(eff)[0];
}

describe("scheduler: leases and workers", () => {
  it("a lost worker's build requeues with epoch+1, no retry counted, and its late result is rejected", () => {
    const h = new Harness({ heartbeatTimeoutMs: TIMEOUT });
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    const first = oneDrv(h);
    expect(first.workerId).toBe("w1");
    h.clock.advance(TIMEOUT + 1);
    const lost = h.run((s, t) => s.advanceTo(t));
    expect(effectsOf(lost, "event").map((e) => e.event.type)).toContain("worker.lost");
    const rec = h.scheduler.drv(drvPathOf("a"))!.record;
    expect(rec).toMatchObject({ state: "ready", epoch: first.spec.lease.epoch + 1, transientFailures: 0, attempts: 1 });

    const second = h.assigns(h.run((s, t) => s.workerJoined(t, mkWorker("w2"))))[0];
    expect(second.spec.lease.epoch).toBe(first.spec.lease.epoch + 2);

    const before = h.scheduler.drv(drvPathOf("a"))!.record;
    const late = h.report(first);
    expect(effectsOf(late, "ack")).toEqual([
      { kind: "ack", workerId: "w1", lease: first.spec.lease, accepted: false, reason: expect.stringMatching(/stale lease/) },
    ]);
    expect(effectsOf(late, "event")[0].event).toMatchObject({ type: "build.rejected", workerId: "w1" });
    expect(effectsOf(late, "persistDrvs")).toEqual([]);
    expect(h.scheduler.drv(drvPathOf("a"))!.record).toEqual(before);

    expect(effectsOf(h.report(second), "ack")[0].accepted).toBe(true);
    expect(h.scheduler.job("j-a")!.state).toBe("succeeded");
  });

  it("a revoked worker is lost at once: its build requeues to another worker and its result is rejected", () => {
    const h = new Harness({ heartbeatTimeoutMs: TIMEOUT });
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    const first = oneDrv(h);
    const revoked = h.run((s, t) => s.workerRevoked(t, "w1"));
    expect(effectsOf(revoked, "event").map((e) => e.event)).toContainEqual(expect.objectContaining({ type: "worker.lost", workerId: "w1", requeued: [drvPathOf("a")] }));
    expect(h.scheduler.drv(drvPathOf("a"))!.record).toMatchObject({ state: "ready", epoch: first.spec.lease.epoch + 1, transientFailures: 0 });
    expect(h.scheduler.workers(h.clock.now())[0].state).toBe("lost");
    expect(h.run((s, t) => s.workerRevoked(t, "w1"))).not.toContainEqual(expect.objectContaining({ kind: "event" }));
    const second = h.assigns(h.run((s, t) => s.workerJoined(t, mkWorker("w2"))))[0];
    expect(second.workerId).toBe("w2");
    expect(effectsOf(h.report(first), "ack")[0].accepted).toBe(false);
    expect(effectsOf(h.report(second), "ack")[0].accepted).toBe(true);
  });

  it("a declined assignment costs nothing, and its worker gets no work until a heartbeat reconciles what it runs", () => {
    const h = new Harness({ heartbeatTimeoutMs: TIMEOUT, maxTransientRetries: 1 });
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    // The worker still runs a build we think it dropped: "stale" was aborted on its way (say) and never arrived.
    const stale = { drvPath: drvPathOf("stale"), epoch: 7 };
    let assign = oneDrv(h);
    for (let i = 0; i < 3; i++) {
      const declined = h.report(assign, "declined");
      expect(effectsOf(declined, "ack")).toEqual([{ kind: "ack", workerId: "w1", lease: assign.spec.lease, accepted: true, reason: "" }]);
      expect(effectsOf(declined, "event").map((e) => e.event.type)).toContain("assignment.declined");
      // Not offered again to the worker that said it was full.
      expect(h.assigns(declined)).toEqual([]);
      expect(h.scheduler.drv(drvPathOf("a"))!.record).toMatchObject({ state: "ready", transientFailures: 0, epoch: assign.spec.lease.epoch + 1 });
      const hb = h.run((s, t) => s.heartbeat(t, "w1", { freeMemoryBytes: 8 * 2 ** 30, freeDiskBytes: 100 * 2 ** 30, uptimeSeconds: 7, running: [stale] }));
      // The heartbeat's stale build is aborted before the next assignment goes out.
      const kinds = hb.filter((e) => e.kind === "abort" || e.kind === "assign").map((e) => e.kind);
      expect(kinds).toEqual(["abort", "assign"]);
      expect(effectsOf(hb, "abort")[0]).toMatchObject({ workerId: "w1", lease: stale });
      assign = h.assigns(hb)[0];
    }
    // Three refusals with a budget of one transient failure: still not failed, and it builds.
    expect(effectsOf(h.report(assign), "ack")[0].accepted).toBe(true);
    expect(h.scheduler.job("j-a")!.state).toBe("succeeded");
  });

  it("heartbeats move the deadline; a silent worker is lost only after it", () => {
    const h = new Harness({ heartbeatTimeoutMs: TIMEOUT });
    h.run((s, t) => s.workerJoined(t, mkWorker("w1")));
    h.clock.advance(TIMEOUT - 1);
    const hb = h.run((s, t) => s.heartbeat(t, "w1", { freeMemoryBytes: 5, freeDiskBytes: 6, uptimeSeconds: 7, running: [] }));
    expect(effectsOf(hb, "heartbeatAck")).toEqual([{ kind: "heartbeatAck", workerId: "w1", deadlineMs: h.clock.now() + TIMEOUT }]);
    h.clock.advance(TIMEOUT);
    h.run((s, t) => s.advanceTo(t));
    expect(h.scheduler.workers(h.clock.now())[0]).toMatchObject({ state: "active", freeMemoryBytes: 5 });
    h.clock.advance(1);
    h.run((s, t) => s.advanceTo(t));
    expect(h.scheduler.workers(h.clock.now())[0].state).toBe("lost");
    expect(() => h.run((s, t) => s.heartbeat(t, "w1", { freeMemoryBytes: 0, freeDiskBytes: 0, uptimeSeconds: 0, running: [] }))).toThrow(/join again/);
  });

  it("a reconnecting worker's current lease is adopted, not duplicated; stale ones get an abort", () => {
    const h = new Harness({ heartbeatTimeoutMs: TIMEOUT });
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    const a = oneDrv(h, "a");
    h.run((s, t) => s.workerDisconnected(t, "w1"));
    expect(h.scheduler.drv(drvPathOf("a"))!.record.state).toBe("building");
    h.clock.advance(TIMEOUT / 2);
    const stale = { drvPath: drvPathOf("a"), epoch: a.spec.lease.epoch - 1 };
    const gone = { drvPath: drvPathOf("nope"), epoch: 1 };
    const back = h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 }), [a.spec.lease, gone, stale]));
    expect(h.assigns(back)).toEqual([]);
    expect(effectsOf(back, "abort").map((e) => e.lease)).toEqual([gone, stale]);
    expect(effectsOf(back, "event").map((e) => e.event)).toContainEqual(expect.objectContaining({ type: "worker.joined", adopted: 1, aborted: 2 }));
    expect(h.scheduler.drv(drvPathOf("a"))!.record).toMatchObject({ state: "building", epoch: a.spec.lease.epoch, workerId: "w1" });
    expect(h.scheduler.workers(h.clock.now())[0].running.map((r) => r.name)).toEqual(["a"]);
    h.clock.advance(TIMEOUT);
    h.run((s, t) => s.heartbeat(t, "w1", { freeMemoryBytes: 0, freeDiskBytes: 0, uptimeSeconds: 0, running: [a.spec.lease] }));
    expect(effectsOf(h.report(a), "ack")[0].accepted).toBe(true);
  });

  it("a worker that rejoins without its lease gets it requeued, uncounted", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    const a = oneDrv(h);
    const back = h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 }), []));
    const again = h.assigns(back)[0];
    expect(again.spec.lease.epoch).toBe(a.spec.lease.epoch + 2);
    expect(h.scheduler.drv(drvPathOf("a"))!.record).toMatchObject({ transientFailures: 0, attempts: 2 });
  });

  it("heartbeats listing a stale lease get an abort", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1")));
    const hb = h.run((s, t) =>
      s.heartbeat(t, "w1", { freeMemoryBytes: 0, freeDiskBytes: 0, uptimeSeconds: 0, running: [{ drvPath: drvPathOf("x"), epoch: 4 }] }),
    );
    expect(effectsOf(hb, "abort")).toHaveLength(1);
  });

  it("a draining worker takes no new work; handed-back leases requeue at once, uncounted", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 2 })));
    const eff = h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("a"), mkNode("b"), mkNode("c")], ["a", "b", "c"])));
    const [x, y] = h.assigns(eff);
    const drained = h.run((s, t) => s.workerDraining(t, "w1", { handedBack: [x.spec.lease], deadlineMs: t + 5000 }));
    expect(h.assigns(drained)).toEqual([]);
    expect(h.scheduler.drv(x.spec.lease.drvPath)!.record).toMatchObject({ state: "ready", transientFailures: 0 });
    expect(h.scheduler.workers(h.clock.now())[0].state).toBe("draining");
    // Its remaining build may still finish and be accepted.
    expect(effectsOf(h.report(y), "ack")[0].accepted).toBe(true);
    expect(h.assigns(h.run((s, t) => s.workerJoined(t, mkWorker("w2", { maxBuilds: 2 }))))).toHaveLength(2);
  });

  it("places builtin, i686 and feature-requiring derivations on workers that fit", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("x86", { maxBuilds: 4 })));
    const nodes = [
      mkNode("fetch", [], { system: "builtin" }),
      mkNode("i686", [], { system: "i686-linux" }),
      mkNode("vm", [], { requiredSystemFeatures: ["kvm"] }),
    ];
    const first = h.run((s, t) => s.submitJob(t, mkSubmission("j", nodes, ["fetch", "i686", "vm"])));
    expect(h.assigns(first).map((a) => [a.spec.name, a.workerId])).toEqual([["fetch", "x86"]]);
    const st = h.scheduler.jobStatus("j", h.clock.now(), { derivations: true })!;
    const why = Object.fromEntries(st.derivations.map((d) => [d.name, d.holdReason]));
    expect(why.i686).toBe("no active worker builds i686-linux");
    expect(why.vm).toBe("no active worker builds x86_64-linux with features [kvm]");
    const multi = h.run((s, t) => s.workerJoined(t, mkWorker("multi", { systems: ["x86_64-linux", "i686-linux"] })));
    expect(h.assigns(multi).map((a) => [a.spec.name, a.workerId])).toEqual([["i686", "multi"]]);
    const kvm = h.run((s, t) => s.workerJoined(t, mkWorker("kvm", { features: ["kvm"] })));
    expect(h.assigns(kvm).map((a) => [a.spec.name, a.workerId])).toEqual([["vm", "kvm"]]);
  });
});

describe("scheduler: build outcomes", () => {
  it("transient failures retry up to maxTransientRetries, then fail", () => {
    const h = new Harness({ maxTransientRetries: 2 });
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    let a = oneDrv(h);
    a = h.assigns(h.report(a, "inputs-unavailable"))[0];
    // An unverified success is an upload failure: transient.
    a = h.assigns(h.report(a, "succeeded", false))[0];
    expect(h.scheduler.drv(drvPathOf("a"))!.record).toMatchObject({ transientFailures: 2, state: "building" });
    expect(h.assigns(h.report(a, "timed-out"))).toEqual([]);
    const rec = h.scheduler.drv(drvPathOf("a"))!.record;
    expect(rec.state).toBe("failed");
    expect(rec.reason).toMatch(/gave up after 3 transient failures; last: timed-out/);
  });

  it("OOM halves the cores and uses its own budget; aborted requeues uncounted", () => {
    const h = new Harness({ maxTransientRetries: 0, maxOomRetries: 2 });
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { cores: 8, maxBuilds: 1 })));
    let a = oneDrv(h);
    expect(a.spec.cores).toBe(8);
    a = h.assigns(h.report(a, "out-of-memory"))[0];
    expect(a.spec.cores).toBe(4);
    a = h.assigns(h.report(a, "aborted"))[0];
    expect(a.spec.cores).toBe(4);
    a = h.assigns(h.report(a, "out-of-memory"))[0];
    expect(a.spec.cores).toBe(2);
    expect(h.scheduler.drv(drvPathOf("a"))!.record).toMatchObject({ oomKills: 2, transientFailures: 0, state: "building" });
    h.report(a, "out-of-memory");
    expect(h.scheduler.drv(drvPathOf("a"))!.record).toMatchObject({ state: "failed", reason: expect.stringMatching(/out of memory 3 times/) });
    expect(h.scheduler.workers(h.clock.now())[0]).toMatchObject({ oomKills: 3, buildsDone: 0 });
  });

  it("a report from an unknown worker is rejected", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1")));
    const a = oneDrv(h);
    const eff = h.run((s, t) => s.buildReported(t, "intruder", mkReport(a), true));
    expect(effectsOf(eff, "ack")[0]).toMatchObject({ accepted: false, reason: "unknown worker intruder" });
    expect(h.scheduler.drv(drvPathOf("a"))!.record.state).toBe("building");
  });
});
