import { describe, expect, it } from "vitest";
import { NoEstimates } from "./estimator.js";
import { buildJobGraph, topoOrder } from "./job-graph.js";
import { LearnedEstimator } from "./learned-estimator.js";
import { FifoPriority, LongestPathPriority, comparePriority } from "./priority.js";
import { Scheduler } from "./scheduler.js";
import { Harness, drvPathOf, mkNode, mkSubmission, mkWorker } from "./test-support.js";
import type { DrvNode } from "./types.js";
import { UpwardRankPriority } from "./upward-rank.js";

function graphOf(nodes: DrvNode[]) {
  const map = new Map(nodes.map((n) => [n.drvPath, n]));
  const topo = topoOrder(new Set(map.keys()), (p) => map.get(p)!);
  if ("cycleAt" in topo) throw new Error("cycle");
  return buildJobGraph(topo.order, map, () => false);
}

// A long chain (binutils -> gcc -> app, hours) beside a wide, deeper but
// cheap fan-out (fetches feeding preferLocalBuild steps). By steps the cheap
// side is longer; by estimated time the chain is the critical path.
function chainAndFanOut(): DrvNode[] {
  const nodes = [
    mkNode("binutils-2.35", [], { pname: "binutils", version: "2.35" }),
    mkNode("gcc-10.3.0", ["binutils-2.35"], { pname: "gcc", version: "10.3.0" }),
    mkNode("app", ["gcc-10.3.0"]),
  ];
  for (let i = 0; i < 30; i++) nodes.push(mkNode(`src${i}`, [], { fixedOutput: true }));
  nodes.push(mkNode("s1", nodes.slice(3).map((n) => n.name), { preferLocalBuild: true }));
  nodes.push(mkNode("s2", ["s1"], { preferLocalBuild: true }));
  nodes.push(mkNode("s3", ["s2"], { preferLocalBuild: true }));
  nodes.push(mkNode("s4", ["s3"], { preferLocalBuild: true }));
  return nodes;
}

describe("upward-rank priority", () => {
  it("rank = own estimated duration + the largest rank among dependents; ties by dependents", () => {
    const e = new LearnedEstimator();
    const nodes = chainAndFanOut();
    const ranks = new UpwardRankPriority().rankGraph(graphOf(nodes), e);
    const r = (n: string) => ranks.get(drvPathOf(n))!;
    const d = (n: string) => e.estimate(nodes.find((x) => x.name === n)!).durationMs!;
    expect(r("app").rank).toBe(d("app"));
    expect(r("gcc-10.3.0").rank).toBe(d("gcc-10.3.0") + d("app"));
    expect(r("binutils-2.35").rank).toBe(d("binutils-2.35") + d("gcc-10.3.0") + d("app"));
    expect(r("s1").tiebreak).toBe(1);
    expect(r("src0")).toEqual({ rank: d("src0") + d("s1") + d("s2") + d("s3") + d("s4"), tiebreak: 1 });
    expect(comparePriority({ ...r("binutils-2.35"), seq: 9 }, { ...r("src0"), seq: 0 })).toBeLessThan(0);
    // Longest-path by steps would start the cheap side first.
    const steps = new LongestPathPriority().rankGraph(graphOf(nodes));
    expect(steps.get(drvPathOf("src0"))!.rank).toBeGreaterThan(steps.get(drvPathOf("binutils-2.35"))!.rank);
  });

  it("falls back to step counts without estimates", () => {
    const ranks = new UpwardRankPriority().rankGraph(graphOf([mkNode("a"), mkNode("b", ["a"]), mkNode("c", ["b"])]), new NoEstimates());
    expect([...ranks.values()].map((r) => r.rank).sort()).toEqual([1, 2, 3]);
  });

  it("the scheduler starts the long chain before the wide cheap fan-out (default policies)", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w", { maxBuilds: 1, memoryBytes: 16 * 2 ** 30 })));
    const [first] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", chainAndFanOut(), ["app", "s4"]))));
    expect(first.spec.name).toBe("binutils-2.35");
  });

  it("fifo goes in submission order, whatever the graph", () => {
    const h = new Harness({}, new Scheduler({ heartbeatTimeoutMs: 10_000 }, { priority: new FifoPriority() }));
    h.run((s, t) => s.workerJoined(t, mkWorker("w", { maxBuilds: 1 })));
    const nodes = chainAndFanOut();
    nodes.unshift(nodes.splice(3, 1)[0]); // src0 first in the submission
    const [first] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", nodes, ["app", "s4"]))));
    expect(first.spec.name).toBe("src0");
    expect(new FifoPriority().rankGraph(graphOf(nodes)).get(drvPathOf("gcc-10.3.0"))).toEqual({ rank: 0, tiebreak: 0 });
  });
});
