// upward-rank (HEFT's rank_u): a derivation's rank is its own estimated
// duration plus the largest rank among the derivations that use it, i.e. the
// estimated time from its start until the last root it leads to can finish
// with unlimited workers. Starting the largest first keeps the critical path
// moving: a 10-hour chain is not left behind a thousand one-minute leaves.
// Ties go to the derivation that unblocks the most (direct dependents: the
// transitive count costs more than O(n) on DAGs with much sharing), then to
// submission order (comparePriority).
import type { Estimator } from "./estimator.js";
import type { JobGraph } from "./job-graph.js";
import type { PriorityPolicy, Rank } from "./priority.js";
import { runAll, SliceBudget, type Steps } from "./steps.js";
import type { DrvPath } from "./types.js";

/** Ranks by the longest estimated-duration path to any root. */
export class UpwardRankPriority implements PriorityPolicy {
  readonly name = "upward-rank";

  /** One pass, dependents first: O(nodes + edges) per submitted job. */
  rankGraph(graph: JobGraph, estimator: Estimator): Map<DrvPath, Rank> {
    return runAll(this.rankGraphSteps(graph, estimator, new SliceBudget(0)));
  }

  /** rankGraph in slices of `budget`. */
  *rankGraphSteps(graph: JobGraph, estimator: Estimator, budget: SliceBudget): Steps<Map<DrvPath, Rank>> {
    const out = new Map<DrvPath, Rank>();
    for (let i = graph.order.length - 1; i >= 0; i--) {
      if (budget.spend()) yield;
      const path = graph.order[i];
      const deps = graph.dependents.get(path) ?? [];
      let up = 0;
      for (const d of deps) up = Math.max(up, out.get(d)?.rank ?? 0);
      // Unknown durations weigh 1 ms, so the rank falls back to a step count.
      const own = Math.max(1, estimator.estimate(graph.nodes.get(path)!).durationMs ?? 1);
      out.set(path, { rank: own + up, tiebreak: deps.length });
    }
    return out;
  }
}
