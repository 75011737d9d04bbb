// The expected duration an assignment carries (a draining worker decides with
// it which builds to hand back at once): measured history only, never a prior.
import { describe, expect, it } from "vitest";
import { LearnedEstimator } from "./learned-estimator.js";
import { Scheduler } from "./scheduler.js";
import { Harness, mkNode, mkSubmission, mkWorker } from "./test-support.js";

describe("assignment estimates", () => {
  it("are 0 while only a prior is known, and the learned duration once the package has built", () => {
    const h = new Harness({}, new Scheduler({ heartbeatTimeoutMs: 10_000 }, { estimator: new LearnedEstimator() }));
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    const [first] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j-a", [mkNode("tool")], ["tool"]))));
    expect(first.spec.estimatedDurationMs).toBe(0);
    h.report(first); // took 1000 ms
    const again = mkNode("tool-b", [], { pname: "tool", version: "1.0" });
    const [second] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j-b", [again], ["tool-b"]))));
    expect(second.spec.estimatedDurationMs).toBeGreaterThan(500);
    expect(second.spec.estimatedDurationMs).toBeLessThan(2000);
  });

  it("are 0 without an estimator that knows anything", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1")));
    const [a] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j-a", [mkNode("x")], ["x"]))));
    expect(a.spec.estimatedDurationMs).toBe(0);
  });
});
