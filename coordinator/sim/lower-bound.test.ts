import { describe, expect, it } from "vitest";
import { mkNode } from "../core/test-support.js";
import { parseFleet } from "./fleet.js";
import { lowerBound } from "./lower-bound.js";
import { paramsFromJson, WorkloadModel } from "./workload.js";

const MIN = 60_000;

describe("lowerBound", () => {
  const model = new WorkloadModel(
    paramsFromJson({
      packages: {
        a: { singleCoreMin: 60, parallelFraction: 0.5, baseMB: 100, perCoreMB: 0, peakAt: 0.5 },
        b: { singleCoreMin: 30, parallelFraction: 0, baseMB: 100, perCoreMB: 0, peakAt: 0.5 },
        c: { singleCoreMin: 30, parallelFraction: 0, baseMB: 3000, perCoreMB: 0, peakAt: 0.5 },
      },
    }),
  );
  const nodes = [mkNode("a"), mkNode("b", ["a"]), mkNode("c")];

  it("takes the critical path at the fastest core count a worker offers", () => {
    // a on 2 cores: 60 * (0.5 + 0.25) = 45 min; then b 30 min. c never fits the 1 GB workers.
    const lb = lowerBound(nodes, parseFleet("1x2c:1G,1x1c:1G"), model);
    expect(lb.criticalPathMs).toBe(75 * MIN);
    expect(lb.totalWorkCpuMs).toBe(120 * MIN);
    expect(lb.workBoundMs).toBe(40 * MIN);
    expect(lb.boundMs).toBe(75 * MIN);
    expect(lb.neverFit).toEqual(["c"]);
    expect(lb.criticalChain).toEqual([]);
  });

  it("is the work bound when the fleet is small", () => {
    const lb = lowerBound(nodes, parseFleet("1x1c:4G"), model);
    expect(lb.criticalPathMs).toBe(90 * MIN);
    expect(lb.boundMs).toBe(120 * MIN);
    expect(lb.criticalChain).toEqual([{ name: "a", ms: 60 * MIN }]);
  });
});
