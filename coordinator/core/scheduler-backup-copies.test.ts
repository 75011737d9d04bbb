// Backup copies ("backupCopies") of long builds: idle workers run a second copy
// under the same lease; the first success wins, a lost copy costs no retry,
// and more urgent real work preempts a copy.
import { describe, expect, it } from "vitest";
import { effectsOf } from "./effects.js";
import { Scheduler } from "./scheduler.js";
import { Harness, drvPathOf, mkNode, mkSubmission, mkWorker } from "./test-support.js";

const TIMEOUT = 10_000;
const GCC = drvPathOf("gcc");

/** Two one-slot workers and gcc (the heavy table's 11 h prior): built on w1, backed up on w2. */
function copiedGcc(config = {}) {
  const h = new Harness({ heartbeatTimeoutMs: TIMEOUT, ...config });
  h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
  h.run((s, t) => s.workerJoined(t, mkWorker("w2", { maxBuilds: 1 })));
  const eff = h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("gcc")], ["gcc"])));
  const [primary, backup] = h.assigns(eff);
  return { h, eff, primary, backup };
}

const record = (h: Harness) => h.scheduler.drv(GCC)!.record;

describe("scheduler: backup copies of long builds", () => {
  it("an idle worker gets a second copy under the same lease, shown in status", () => {
    const { h, eff, primary, backup } = copiedGcc();
    expect(primary.workerId).toBe("w1");
    expect(backup).toMatchObject({ workerId: "w2", spec: { lease: primary.spec.lease, name: "gcc" } });
    expect(effectsOf(eff, "event").map((e) => e.event)).toContainEqual(expect.objectContaining({ type: "drv.backup-copy-started", drvPath: GCC, workerId: "w2" }));
    expect(record(h)).toMatchObject({ state: "building", workerId: "w1", attempts: 1, backupCopies: [expect.objectContaining({ workerId: "w2" })] });
    const row = h.scheduler.jobStatus("j", h.clock.now(), { derivations: true })!.derivations[0];
    expect(row).toMatchObject({ workerId: "w1", backupWorkerIds: ["w2"], backupCopy: false });
    const w2 = h.scheduler.workers(h.clock.now()).find((w) => w.workerId === "w2")!;
    expect(w2.running).toEqual([expect.objectContaining({ name: "gcc", workerId: "w2", backupCopy: true })]);
    expect(w2.reservedMemoryBytes).toBeGreaterThan(0);
  });

  it("the first copy to succeed wins: the other is aborted and its late report rejected", () => {
    const { h, primary, backup } = copiedGcc();
    const won = h.report(backup);
    expect(effectsOf(won, "ack")[0]).toMatchObject({ workerId: "w2", accepted: true });
    expect(effectsOf(won, "abort")).toEqual([{ kind: "abort", workerId: "w1", lease: primary.spec.lease, reason: "built on w2" }]);
    expect(record(h)).toMatchObject({ state: "done" });
    expect(record(h).backupCopies).toBeUndefined();
    expect(h.scheduler.job("j")!.state).toBe("succeeded");
    expect(effectsOf(h.report(primary, "aborted"), "ack")[0].accepted).toBe(false);
    for (const w of h.scheduler.workers(h.clock.now())) expect(w).toMatchObject({ running: [], reservedMemoryBytes: 0, reservedCores: 0 });
  });

  it("a lost worker's copy costs nothing: the backup carries the lease on, nothing is requeued", () => {
    const { h, primary, backup } = copiedGcc();
    h.clock.advance(TIMEOUT / 2);
    h.run((s, t) => s.heartbeat(t, "w2", { freeMemoryBytes: 1, freeDiskBytes: 1, uptimeSeconds: 1, running: [backup.spec.lease] }));
    h.clock.advance(TIMEOUT / 2 + 1);
    const lost = h.run((s, t) => s.advanceTo(t));
    expect(effectsOf(lost, "event").map((e) => e.event)).toContainEqual(expect.objectContaining({ type: "worker.lost", workerId: "w1", requeued: [] }));
    expect(effectsOf(lost, "assign")).toEqual([]);
    expect(record(h)).toMatchObject({ state: "building", epoch: primary.spec.lease.epoch, workerId: "w2", attempts: 1, transientFailures: 0 });
    expect(record(h).backupCopies).toBeUndefined();
    expect(effectsOf(h.report(backup), "ack")[0].accepted).toBe(true);
    expect(h.scheduler.job("j")!.state).toBe("succeeded");
  });

  it("a copy that fails transiently or is OOM-killed just ends; the other goes on, no budget spent", () => {
    const { h, primary, backup } = copiedGcc();
    const ended = h.report(backup, "worker-error");
    expect(effectsOf(ended, "ack")[0].accepted).toBe(true);
    expect(record(h)).toMatchObject({ state: "building", workerId: "w1", transientFailures: 0, oomKills: 0 });
    // w2 is idle again: it takes a fresh copy at once (same lease).
    expect(h.assigns(ended)).toEqual([expect.objectContaining({ workerId: "w2", spec: expect.objectContaining({ lease: primary.spec.lease }) })]);
    const oom = h.report(h.assigns(ended)[0], "out-of-memory");
    expect(record(h)).toMatchObject({ state: "building", workerId: "w1", oomKills: 0 });
    expect(h.scheduler.workers(h.clock.now()).find((w) => w.workerId === "w2")!.oomKills).toBe(1);
    expect(effectsOf(oom, "ack")[0].accepted).toBe(true);
  });

  it("a permanent failure of one copy fails the build and aborts the other", () => {
    const { h, backup } = copiedGcc();
    const failed = h.report(backup, "failed");
    expect(effectsOf(failed, "abort").map((a) => a.workerId)).toEqual(["w1"]);
    expect(record(h).state).toBe("failed");
  });

  it("a more urgent ready derivation with nowhere else to go preempts a copy; a less urgent one waits", () => {
    const { h, backup } = copiedGcc();
    // A lone small build ranks below gcc: it waits for a free worker, the copy goes on.
    const waits = h.run((s, t) => s.submitJob(t, mkSubmission("j2", [mkNode("small")], ["small"])));
    expect(effectsOf(waits, "abort")).toEqual([]);
    expect(h.assigns(waits)).toEqual([]);
    expect(record(h).backupCopies).toEqual([expect.objectContaining({ workerId: "w2" })]);
    // The head of a longer chain (head -> llvm -> clang, ~10.5 h at the reference cores against gcc's 6.3 h) is more urgent.
    const [head, llvm, clang] = [mkNode("head"), mkNode("llvm", ["head"]), mkNode("clang", ["llvm"])];
    const eff = h.run((s, t) => s.submitJob(t, mkSubmission("j3", [head, llvm, clang], ["clang"])));
    expect(effectsOf(eff, "abort")).toEqual([{ kind: "abort", workerId: "w2", lease: backup.spec.lease, reason: expect.stringMatching(/backup copy stopped: head needs the worker/) }]);
    expect(h.assigns(eff)).toEqual([expect.objectContaining({ workerId: "w2", spec: expect.objectContaining({ name: "head" }) })]);
    expect(effectsOf(eff, "event").map((e) => e.event)).toContainEqual(expect.objectContaining({ type: "drv.backup-copy-preempted", drvPath: GCC, workerId: "w2", forDrvPath: head.drvPath }));
    expect(record(h)).toMatchObject({ state: "building", workerId: "w1" });
    expect(record(h).backupCopies).toBeUndefined();
  });

  it("cancelling the job aborts every copy", () => {
    const { h } = copiedGcc();
    const eff = h.run((s, t) => s.cancelJob(t, "j"));
    expect(effectsOf(eff, "abort").map((a) => a.workerId).sort()).toEqual(["w1", "w2"]);
    for (const w of h.scheduler.workers(h.clock.now())) expect(w.running).toEqual([]);
  });

  it("short builds and a zero threshold get no copies", () => {
    const short = new Harness({ heartbeatTimeoutMs: TIMEOUT });
    short.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    short.run((s, t) => s.workerJoined(t, mkWorker("w2", { maxBuilds: 1 })));
    expect(short.assigns(short.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("small")], ["small"]))))).toHaveLength(1);
    const { backup } = copiedGcc({ backupCopyMinRemainingMs: 0 });
    expect(backup).toBeUndefined();
  });

  it("a restored coordinator keeps both copies: each worker rejoins and is adopted", () => {
    const { h, primary } = copiedGcc();
    const r = Scheduler.restore(h.clock.now(), h.scheduler.snapshot());
    expect(r.drv(GCC)!.record.backupCopies).toEqual([expect.objectContaining({ workerId: "w2" })]);
    for (const id of ["w1", "w2"]) {
      const eff = r.workerJoined(h.clock.now(), mkWorker(id, { maxBuilds: 1 }), [primary.spec.lease]);
      expect(effectsOf(eff, "event")[0].event).toMatchObject({ type: "worker.joined", workerId: id, adopted: 1, aborted: 0 });
      expect(effectsOf(eff, "assign")).toEqual([]);
    }
    expect(r.workers(h.clock.now()).map((w) => w.running.length)).toEqual([1, 1]);
  });

  it("a record stored before the rename, with its copies under `hedges`, restores them as backup copies", () => {
    const { h } = copiedGcc();
    const snap = h.scheduler.snapshot();
    const stored = snap.drvs.find((d) => d.drvPath === GCC)! as (typeof snap.drvs)[number] & { hedges?: unknown };
    stored.hedges = stored.backupCopies;
    delete stored.backupCopies;
    const r = Scheduler.restore(h.clock.now(), snap);
    expect(r.drv(GCC)!.record).toMatchObject({ backupCopies: [expect.objectContaining({ workerId: "w2" })] });
    expect(r.drv(GCC)!.record).not.toHaveProperty("hedges");
    expect(r.workers(h.clock.now()).map((w) => w.running.length)).toEqual([1, 1]);
  });
});
