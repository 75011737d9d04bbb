// Priority: the order in which ready derivations are offered to workers.
// A policy ranks each submitted job's graph; derivations shared by several
// jobs keep the highest rank any job gave them. Ties end in submission order.
import type { Estimator } from "./estimator.js";
import type { JobGraph } from "./job-graph.js";
import type { SliceBudget, Steps } from "./steps.js";
import type { DrvPath } from "./types.js";

/** What a policy assigns to one derivation; higher goes first. */
export interface Rank {
  rank: number;
  tiebreak: number;
}

/** Full ordering key of a ready derivation. */
export interface PriorityKey extends Rank {
  /** Global submission order; lower goes first. */
  seq: number;
}

/** Ranks the derivations of a job graph. Must be pure and deterministic. */
export interface PriorityPolicy {
  readonly name: string;
  /** A Rank for every derivation in `graph.order`. */
  rankGraph(graph: JobGraph, estimator: Estimator): Map<DrvPath, Rank>;
  /** rankGraph in slices of `budget`, for policies that can (a big submit must not hold the loop). */
  rankGraphSteps?(graph: JobGraph, estimator: Estimator, budget: SliceBudget): Steps<Map<DrvPath, Rank>>;
}

/** Negative when `a` goes before `b`: rank desc, tiebreak desc, seq asc. */
export function comparePriority(a: PriorityKey, b: PriorityKey): number {
  if (a.rank !== b.rank) return b.rank - a.rank;
  if (a.tiebreak !== b.tiebreak) return b.tiebreak - a.tiebreak;
  return a.seq - b.seq;
}

/** Combines the ranks two jobs gave one shared derivation: the higher of each. */
export function mergeRank(a: Rank | undefined, b: Rank): Rank {
  if (a === undefined) return b;
  return { rank: Math.max(a.rank, b.rank), tiebreak: Math.max(a.tiebreak, b.tiebreak) };
}

/**
 * longest-path: rank = number of steps on the longest path up to a root (so
 * the deepest chains start first), tiebreak = number of direct dependents.
 */
export class LongestPathPriority implements PriorityPolicy {
  readonly name = "longest-path";

  /** Walks the graph dependents-first once: O(nodes + edges). */
  rankGraph(graph: JobGraph): Map<DrvPath, Rank> {
    const out = new Map<DrvPath, Rank>();
    for (let i = graph.order.length - 1; i >= 0; i--) {
      const path = graph.order[i];
      const deps = graph.dependents.get(path) ?? [];
      let rank = 0;
      for (const d of deps) rank = Math.max(rank, (out.get(d)?.rank ?? 0) + 1);
      out.set(path, { rank, tiebreak: deps.length });
    }
    return out;
  }
}

/** fifo: no ranking at all; ready derivations go in submission order (a Hydra-like baseline). */
export class FifoPriority implements PriorityPolicy {
  readonly name = "fifo";

  /** Rank 0 for everyone. */
  rankGraph(graph: JobGraph): Map<DrvPath, Rank> {
    const out = new Map<DrvPath, Rank>();
    for (const p of graph.order) out.set(p, { rank: 0, tiebreak: 0 });
    return out;
  }
}
