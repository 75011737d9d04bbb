import { describe, expect, it } from "vitest";
import { buildJobGraph, topoOrder } from "./job-graph.js";
import { LongestPathPriority, comparePriority, mergeRank } from "./priority.js";
import { drvPathOf, mkNode } from "./test-support.js";
import type { DrvNode } from "./types.js";

function graphOf(nodes: DrvNode[]) {
  const map = new Map(nodes.map((n) => [n.drvPath, n]));
  const topo = topoOrder(new Set(map.keys()), (p) => map.get(p)!);
  if ("cycleAt" in topo) throw new Error("cycle");
  return buildJobGraph(topo.order, map, () => false);
}

describe("longest-path priority", () => {
  it("ranks by steps to the root, ties by number of dependents", () => {
    // root <- mid <- leaf1, root <- leaf2, mid <- shared, root <- shared
    const nodes = [
      mkNode("shared"),
      mkNode("leaf1"),
      mkNode("leaf2"),
      mkNode("mid", ["leaf1", "shared"]),
      mkNode("root", ["mid", "leaf2", "shared"]),
    ];
    const ranks = new LongestPathPriority().rankGraph(graphOf(nodes));
    const r = (n: string) => ranks.get(drvPathOf(n))!;
    expect(r("root")).toEqual({ rank: 0, tiebreak: 0 });
    expect(r("mid")).toEqual({ rank: 1, tiebreak: 1 });
    expect(r("leaf2")).toEqual({ rank: 1, tiebreak: 1 });
    expect(r("leaf1")).toEqual({ rank: 2, tiebreak: 1 });
    expect(r("shared")).toEqual({ rank: 2, tiebreak: 2 });
    // shared and leaf1 tie on rank; shared has more dependents, so it goes first.
    expect(comparePriority({ ...r("shared"), seq: 9 }, { ...r("leaf1"), seq: 1 })).toBeLessThan(0);
  });

  it("orders by rank desc, tiebreak desc, then submission order", () => {
    const keys = [
      { rank: 1, tiebreak: 0, seq: 0 },
      { rank: 2, tiebreak: 0, seq: 5 },
      { rank: 1, tiebreak: 3, seq: 7 },
      { rank: 1, tiebreak: 0, seq: -1 },
    ];
    expect([...keys].sort(comparePriority).map((k) => k.seq)).toEqual([5, 7, -1, 0]);
  });

  it("a shared derivation keeps the higher rank either job gave it", () => {
    expect(mergeRank({ rank: 3, tiebreak: 1 }, { rank: 1, tiebreak: 4 })).toEqual({ rank: 3, tiebreak: 4 });
    expect(mergeRank(undefined, { rank: 1, tiebreak: 0 })).toEqual({ rank: 1, tiebreak: 0 });
  });
});
