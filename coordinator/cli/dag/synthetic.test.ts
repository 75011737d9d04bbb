import { describe, expect, it } from "vitest";
import { checkClosedAcyclic } from "../../../test/fixtures/dag-check.js";
import { BUILTIN_SYSTEM } from "../../core/types.js";
import { cutClosure } from "./jsonl.js";
import { seededRandom, syntheticDag } from "./synthetic.js";

describe("seededRandom", () => {
  it("is deterministic per seed and stays in [0, 1)", () => {
    const a = seededRandom(7);
    const b = seededRandom(7);
    const xs = Array.from({ length: 1000 }, () => a());
    expect(Array.from({ length: 1000 }, () => b())).toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(seededRandom(8)()).not.toBe(xs[0]);
  });
});

describe("syntheticDag", () => {
  it("is deterministic for a seed and differs across seeds", () => {
    expect(syntheticDag({ nodes: 500, seed: 1 })).toEqual(syntheticDag({ nodes: 500, seed: 1 }));
    expect(syntheticDag({ nodes: 500, seed: 2 })).not.toEqual(syntheticDag({ nodes: 500, seed: 1 }));
  });

  it("handles tiny sizes", () => {
    expect(syntheticDag({ nodes: 0, seed: 1 })).toEqual([]);
    expect(syntheticDag({ nodes: 1, seed: 1 })).toHaveLength(1);
    for (const n of [2, 3, 5, 17]) checkClosedAcyclic(syntheticDag({ nodes: n, seed: n, layers: 4 }));
  });

  it("builds a closed, acyclic, nixpkgs-like 100k-node DAG in topological order", () => {
    const nodes = syntheticDag({ nodes: 100_000, seed: 42, storeDir: "/tmp/nix/store" });
    expect(nodes).toHaveLength(100_000);
    const depth = checkClosedAcyclic(nodes);
    expect(depth).toBeGreaterThan(20);
    expect(depth).toBeLessThanOrEqual(120);

    const index = new Map(nodes.map((n, i) => [n.drvPath, i]));
    expect(nodes.every((n, i) => n.inputDrvs.every((d) => index.get(d.drvPath)! < i))).toBe(true);
    expect(nodes.every((n) => /^\/tmp\/nix\/store\/[0-9a-df-np-sv-z]{32}-.+\.drv$/.test(n.drvPath))).toBe(true);

    const fods = nodes.filter((n) => n.fixedOutput).length;
    expect(fods).toBeGreaterThan(1_000);
    expect(nodes.some((n) => n.system === BUILTIN_SYSTEM)).toBe(true);
    expect(nodes.some((n) => n.requiredSystemFeatures.includes("big-parallel"))).toBe(true);
    expect(nodes.some((n) => !n.allowSubstitutes)).toBe(true);
    const partial = nodes.filter((n) => n.inputDrvs.some((d) => d.outputs.length === 1 && d.outputs[0] !== "out"));
    expect(partial.length).toBeGreaterThan(1_000);
    // Every input is used through an output it has.
    const usesMissingOutput = nodes.some((n) => n.inputDrvs.some((d) => d.outputs.some((o) => !(o in nodes[index.get(d.drvPath)!].outputs))));
    expect(usesMissingOutput).toBe(false);
    // The top node's closure is a big share of the graph, as for real applications.
    expect(cutClosure(nodes, [nodes[nodes.length - 1].drvPath]).length).toBeGreaterThan(100);
  }, 60_000);
});
