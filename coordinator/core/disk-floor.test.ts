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
    expect(h.scheduler.drv(drvPathOf("filler"))!.record).toMatchObject({ state: "ready", transientFailures: 1, diskFloorBytes: 100 * MiB + 1 });
    const [second] = h.assigns(h.run((s, t) => s.workerJoined(t, mkWorker("b-big", { maxBuilds: 1, freeDiskBytes: 10 * 1024 * MiB }))));
    expect(second.workerId).toBe("b-big");
    h.report(second);
    expect(h.scheduler.job("j")!.state).toBe("succeeded");
  });
});
