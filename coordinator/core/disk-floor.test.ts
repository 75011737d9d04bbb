// A build that fills a worker's disk is retried on a worker with more free
// disk than that one had, not on the same one again.
import { describe, expect, it } from "vitest";
import { drvPathOf, Harness, mkNode, mkSubmission, mkWorker } from "./test-support.js";

const MiB = 2 ** 20;

describe("disk-full", () => {
  it("sends the retry to a worker with more free disk, and never back to the one it filled", () => {
    const h = new Harness({ heartbeatTimeoutMs: 60_000 });
    h.run((s, t) => s.workerJoined(t, mkWorker("a-small", { maxBuilds: 1, freeDiskBytes: 100 * MiB })));
    const node = mkNode("filler", [], { preferLocalBuild: true }); // a small prior: fits the small disk
    const [first] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [node], ["filler"]))));
    expect(first.workerId).toBe("a-small");
    const failed = h.report(first, "disk-full");
    expect(h.assigns(failed)).toEqual([]); // not the same worker again
    expect(h.scheduler.drv(drvPathOf("filler"))!.record).toMatchObject({ state: "ready", transientFailures: 1, diskFloorBytes: 125 * MiB + 1 });
    const [second] = h.assigns(h.run((s, t) => s.workerJoined(t, mkWorker("b-big", { maxBuilds: 1, freeDiskBytes: 10 * 1024 * MiB }))));
    expect(second.workerId).toBe("b-big");
    h.report(second);
    expect(h.scheduler.job("j")!.state).toBe("succeeded");
  });

  it("never sends the retry to a worker that reports no free disk: with a full disk that is 0, not 'unknown'", () => {
    const h = new Harness({ heartbeatTimeoutMs: 60_000 });
    h.run((s, t) => s.workerJoined(t, mkWorker("a-small", { maxBuilds: 1, freeDiskBytes: 100 * MiB })));
    const node = mkNode("filler", [], { preferLocalBuild: true });
    const [first] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [node], ["filler"]))));
    // Its last heartbeat came while the build had filled the disk.
    h.run((s, t) => s.heartbeat(t, "a-small", { freeMemoryBytes: 1024 * MiB, freeDiskBytes: 0, uptimeSeconds: 10, running: [first.spec.lease] }));
    expect(h.assigns(h.report(first, "disk-full"))).toEqual([]);
    // 0 may also mean "not reported": builds that never filled a disk still go there.
    const [other] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("k", [mkNode("other", [], { preferLocalBuild: true })], ["other"]))));
    expect(other.workerId).toBe("a-small");
  });
});
