// Trust tiers in the core: an untrusted worker's success is not final. It is
// built again on another worker; after a disagreement only a trusted worker
// may build it. Neither costs a retry.
import { describe, expect, it } from "vitest";
import { effectsOf } from "./effects.js";
import { Harness, drvPathOf, mkNode, mkReport, mkSubmission, mkWorker } from "./test-support.js";

const untrusted = (id: string) => mkWorker(id, { maxBuilds: 1, trusted: false });

describe("scheduler: trust tiers", () => {
  it("an untrusted success waits for another worker's build, which completes it", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, untrusted("u1")));
    const [first] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j1", [mkNode("a")], ["a"]))));
    expect(first.workerId).toBe("u1");
    const eff = h.run((s, t) => s.buildReported(t, "u1", mkReport(first), false, "unconfirmed"));
    expect(effectsOf(eff, "ack")[0].accepted).toBe(true);
    const rec = h.scheduler.drv(drvPathOf("a"))!.record;
    expect(rec).toMatchObject({ state: "ready", transientFailures: 0, unconfirmed: { workerId: "u1" } });
    expect(rec.reason).toBe("built on untrusted u1; waiting for another worker's build to confirm it");
    // u1 is free again but may not confirm its own build; u2 joins and gets it.
    expect(h.assigns(h.run((s, t) => s.advanceTo(t)))).toEqual([]);
    const [second] = h.assigns(h.run((s, t) => s.workerJoined(t, untrusted("u2"))));
    expect(second.workerId).toBe("u2");
    h.run((s, t) => s.buildReported(t, "u2", mkReport(second), true));
    expect(h.scheduler.drv(drvPathOf("a"))!.record).toMatchObject({ state: "done" });
    expect(h.scheduler.drv(drvPathOf("a"))!.record.unconfirmed).toBeUndefined();
    expect(h.scheduler.job("j1")!.state).toBe("succeeded");
  });

  it("after a disagreement only a trusted worker may build it", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, untrusted("u1")));
    const [first] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j1", [mkNode("a")], ["a"]))));
    h.run((s, t) => s.buildReported(t, "u1", mkReport(first), false, "unconfirmed"));
    const [second] = h.assigns(h.run((s, t) => s.workerJoined(t, untrusted("u2"))));
    const eff = h.run((s, t) => s.buildReported(t, "u2", mkReport(second), false, "mismatch"));
    expect(effectsOf(eff, "event").map((e) => e.event.type)).toContain("drv.trust-mismatch");
    const rec = h.scheduler.drv(drvPathOf("a"))!.record;
    expect(rec).toMatchObject({ state: "ready", needsTrustedWorker: true, transientFailures: 0 });
    expect(rec.reason).toBe("outputs built on u2 disagree with u1's; nothing signed, rebuilding on a trusted worker");
    expect(h.assigns(h.run((s, t) => s.workerJoined(t, untrusted("u3"))))).toEqual([]);
    const [third] = h.assigns(h.run((s, t) => s.workerJoined(t, mkWorker("t1", { maxBuilds: 1 }))));
    expect(third.workerId).toBe("t1");
    h.run((s, t) => s.buildReported(t, "t1", mkReport(third), true));
    expect(h.scheduler.drv(drvPathOf("a"))!.record).toMatchObject({ state: "done" });
    expect(h.scheduler.drv(drvPathOf("a"))!.record.needsTrustedWorker).toBeUndefined();
  });

  it("what waits for confirmation is persisted, so a restart keeps it", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, untrusted("u1")));
    const [first] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j1", [mkNode("a")], ["a"]))));
    const eff = h.run((s, t) => s.buildReported(t, "u1", mkReport(first), false, "unconfirmed"));
    const stored = effectsOf(eff, "persistDrvs").flatMap((e) => e.records).find((r) => r.drvPath === drvPathOf("a"))!;
    expect(stored.unconfirmed).toEqual({ workerId: "u1", narHashes: { [first.spec.outputs.out]: "sha256:x" }, owner: "u1" });
  });

  it("a withdrawn derivation counts as failed until a job wants it again, and is then built again", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("t1", { maxBuilds: 1 })));
    const [a] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j1", [mkNode("a")], ["a"]))));
    h.report(a);
    h.run((s, t) => s.outputsWithdrawn(t, [drvPathOf("a"), drvPathOf("not-known")], "withdrawn: built by t1 alone"));
    expect(h.scheduler.drv(drvPathOf("a"))!.record).toMatchObject({ state: "failed", reason: "withdrawn: built by t1 alone" });
    expect(h.scheduler.job("j1")!.state).toBe("succeeded"); // history stays
    const [again] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j2", [mkNode("a")], ["a"]))));
    expect(again.spec.lease.drvPath).toBe(drvPathOf("a"));
  });

  it("where the fleet has a worker of another owner, the confirming build comes from another owner", () => {
    const h = new Harness();
    const bobs = (id: string) => mkWorker(id, { maxBuilds: 1, trusted: false, owner: "bob" });
    h.run((s, t) => s.workerJoined(t, bobs("b1")));
    const [first] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j1", [mkNode("a")], ["a"]))));
    h.run((s, t) => s.workerJoined(t, mkWorker("c1", { maxBuilds: 1, trusted: false, owner: "carol", systems: ["other-linux"] })));
    h.run((s, t) => s.buildReported(t, "b1", mkReport(first), false, "unconfirmed"));
    // carol's worker exists (though it can't build this), so bob's second worker may not confirm bob's build.
    expect(h.assigns(h.run((s, t) => s.workerJoined(t, bobs("b2"))))).toEqual([]);
    const [second] = h.assigns(h.run((s, t) => s.workerJoined(t, mkWorker("c2", { maxBuilds: 1, trusted: false, owner: "carol" }))));
    expect(second.workerId).toBe("c2");
  });
});
