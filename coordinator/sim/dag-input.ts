// A DAG to simulate: a JSONL dump (plain or .xz) cut to the closure of its
// roots. Without roots, every derivation nothing else uses is a root.
import { InvalidInputError } from "../core/errors.js";
import type { DrvNode, DrvPath } from "../core/types.js";
import { cutClosure, loadJsonlDag } from "../cli/dag/mod.js";

/** A closed DAG and the roots a job asks for. */
export interface SimDag {
  name: string;
  nodes: DrvNode[];
  roots: DrvPath[];
}

/** Derivations no other derivation of `nodes` uses, in input order. */
export function sinks(nodes: readonly DrvNode[]): DrvPath[] {
  const used = new Set<DrvPath>();
  for (const n of nodes) for (const i of n.inputDrvs) used.add(i.drvPath);
  return nodes.filter((n) => !used.has(n.drvPath)).map((n) => n.drvPath);
}

/** Loads `file` and cuts the closure of `roots` (all sinks when none are given). */
export async function loadSimDag(file: string, roots: readonly DrvPath[] = [], name = file): Promise<SimDag> {
  const all = await loadJsonlDag(file);
  if (all.length === 0) throw new InvalidInputError(`${file}: no derivations`);
  const wanted = roots.length > 0 ? [...roots] : sinks(all);
  const nodes = cutClosure(all, wanted);
  return { name, nodes, roots: wanted };
}
