// The part of a submitted DAG a job actually needs: everything reachable from
// its roots, stopping at derivations already done (built or in the cache),
// just as Nix does not build the inputs of a substitutable output.
import { runAll, SliceBudget, type Steps } from "./steps.js";
import type { DrvNode, DrvPath } from "./types.js";

/** A job's derivations in topological order (inputs first) with in-graph dependents. */
export interface JobGraph {
  order: DrvPath[];
  nodes: ReadonlyMap<DrvPath, DrvNode>;
  /** drv -> derivations of this graph that use it. */
  dependents: ReadonlyMap<DrvPath, DrvPath[]>;
}

/**
 * Kahn's algorithm over `members` (edges to non-members are ignored).
 * Returns the order, or the path of a node on a cycle.
 */
export function topoOrder(
  members: ReadonlySet<DrvPath>,
  nodeOf: (p: DrvPath) => DrvNode,
): { order: DrvPath[] } | { cycleAt: DrvPath } {
  return runAll(topoOrderSteps(members, nodeOf, new SliceBudget(0)));
}

/** topoOrder in slices of `budget`. */
export function* topoOrderSteps(
  members: ReadonlySet<DrvPath>,
  nodeOf: (p: DrvPath) => DrvNode,
  budget: SliceBudget,
): Steps<{ order: DrvPath[] } | { cycleAt: DrvPath }> {
  const pending = new Map<DrvPath, number>();
  const users = new Map<DrvPath, DrvPath[]>();
  const order: DrvPath[] = [];
  for (const p of members) {
    let n = 0;
    for (const input of nodeOf(p).inputDrvs) {
      if (!members.has(input.drvPath)) continue;
      n++;
      const list = users.get(input.drvPath);
      if (list) list.push(p);
      else users.set(input.drvPath, [p]);
    }
    pending.set(p, n);
    if (n === 0) order.push(p);
    if (budget.spend()) yield;
  }
  for (let i = 0; i < order.length; i++) {
    if (budget.spend()) yield;
    for (const u of users.get(order[i]) ?? []) {
      const left = pending.get(u)! - 1;
      pending.set(u, left);
      if (left === 0) order.push(u);
    }
  }
  if (order.length < members.size) {
    for (const [p, n] of pending) if (n > 0) return { cycleAt: p };
  }
  return { order };
}


/** reachable in slices of `budget`. */
export function* reachableSteps(
  roots: readonly DrvPath[],
  nodeOf: (p: DrvPath) => DrvNode,
  isLeaf: (p: DrvPath) => boolean,
  budget: SliceBudget,
): Steps<Set<DrvPath>> {
  const seen = new Set<DrvPath>(roots);
  const stack = [...seen];
  while (stack.length > 0) {
    const p = stack.pop()!;
    if (budget.spend()) yield;
    if (isLeaf(p)) continue;
    for (const input of nodeOf(p).inputDrvs) {
      if (!seen.has(input.drvPath)) {
        seen.add(input.drvPath);
        stack.push(input.drvPath);
      }
    }
  }
  return seen;
}

/** Builds the JobGraph of `order` (already topological); leaves contribute no edges. */
export function buildJobGraph(
  order: DrvPath[],
  nodes: ReadonlyMap<DrvPath, DrvNode>,
  isLeaf: (p: DrvPath) => boolean,
): JobGraph {
  return runAll(buildJobGraphSteps(order, nodes, isLeaf, new SliceBudget(0)));
}

/** buildJobGraph in slices of `budget`. */
export function* buildJobGraphSteps(
  order: DrvPath[],
  nodes: ReadonlyMap<DrvPath, DrvNode>,
  isLeaf: (p: DrvPath) => boolean,
  budget: SliceBudget,
): Steps<JobGraph> {
  const members = new Set(order);
  const dependents = new Map<DrvPath, DrvPath[]>();
  for (const p of order) {
    if (budget.spend()) yield;
    if (isLeaf(p)) continue;
    for (const input of nodes.get(p)!.inputDrvs) {
      if (!members.has(input.drvPath)) continue;
      const list = dependents.get(input.drvPath);
      if (list) list.push(p);
      else dependents.set(input.drvPath, [p]);
    }
  }
  return { order, nodes, dependents };
}
