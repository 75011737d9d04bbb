import pino from "pino";
import { describe, expect, it } from "vitest";
import { Harness, mkNode, mkSubmission, mkWorker } from "../core/test-support.js";
import { createCoordinatorMetrics } from "../metrics.js";
import { countEvent, gaugeSource } from "./shell-metrics.js";

const logger = pino({ level: "silent" });

describe("shell metrics", () => {
  it("counts backup copies and requeues at the core's events", async () => {
    const m = createCoordinatorMetrics(() => undefined);
    countEvent({ type: "drv.backup-copy-started", atMs: 0, drvPath: "/a", epoch: 1, workerId: "w2", backupCopies: 1 }, m, logger);
    countEvent({ type: "worker.lost", atMs: 0, workerId: "w1", requeued: ["/a", "/b"] }, m, logger);
    expect((await m.backupCopies.get()).values).toEqual([expect.objectContaining({ labels: { event: "started" }, value: 1 })]);
    expect((await m.reassignments.get()).values).toEqual([expect.objectContaining({ labels: { reason: "worker-lost" }, value: 2 })]);
  });

  it("reads the gauges from the scheduler: states and memory reserved per worker", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    const [a] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", [mkNode("a"), mkNode("b")], ["a", "b"]))));
    const g = gaugeSource(h.scheduler);
    expect(g.workersByState()).toEqual({ active: 1 });
    expect(g.jobsByState()).toMatchObject({ running: 1, succeeded: 0 });
    expect(g.derivationsByState()).toMatchObject({ building: 1, ready: 1 });
    expect(g.reservedMemoryByWorker()).toEqual({ w1: a.spec.memoryLimitBytes });
  });
});
