// A lower bound on any schedule's makespan: the longer of the critical path
// (every derivation at the fastest core count some worker can give it within
// its memory) and the total work spread perfectly over the fleet's cores
// (every derivation on one core, where it costs the least CPU). It ignores
// recycling, boot delays and per-attempt noise, so no policy can beat it.
import { topoOrder } from "../core/job-graph.js";
import { platformMatches } from "../core/placement.js";
import type { DrvNode, DrvPath, WorkerInfo } from "../core/types.js";
import { fleetCores, type FleetSpec } from "./fleet.js";
import { createWorkers, workerInfo } from "./sim-fleet.js";
import { durationOn, peakOn, type WorkloadModel } from "./workload.js";

/** The bound and its two terms. */
export interface LowerBound {
  boundMs: number;
  criticalPathMs: number;
  /** Sum of single-core build times / fleet cores. */
  workBoundMs: number;
  totalWorkCpuMs: number;
  /** Derivations no worker of the fleet can build within its memory (even on one core). */
  neverFit: string[];
  /** The critical path's derivations of an hour or more, with their fastest durations, inputs first. */
  criticalChain: { name: string; ms: number }[];
}

/** Fastest expected duration of `node` on any worker shape of the fleet (one core when nothing fits). */
export function fastestDurationMs(node: DrvNode, model: WorkloadModel, shapes: readonly WorkerInfo[]): { ms: number; fits: boolean } {
  const p = model.profile(node);
  let best = Infinity;
  for (const w of shapes) {
    if (!platformMatches(w, node.system, node.requiredSystemFeatures)) continue;
    for (let c = w.cores; c >= 1; c--) {
      if (peakOn(p, c) <= w.memoryBytes) {
        best = Math.min(best, durationOn(p, c));
        break; // fewer cores are never faster
      }
    }
  }
  return best === Infinity ? { ms: durationOn(p, 1), fits: false } : { ms: best, fits: true };
}

/** The makespan lower bound of building `nodes` (a closed DAG) on `fleet`. */
export function lowerBound(nodes: readonly DrvNode[], fleet: FleetSpec, model: WorkloadModel): LowerBound {
  const shapes = dedupeShapes(createWorkers(fleet).map((w) => workerInfo(w, fleet)));
  const byPath = new Map<DrvPath, DrvNode>(nodes.map((n) => [n.drvPath, n]));
  const topo = topoOrder(new Set(byPath.keys()), (p) => byPath.get(p)!);
  if ("cycleAt" in topo) throw new Error(`DAG has a cycle at ${topo.cycleAt}`);
  const finish = new Map<DrvPath, number>();
  const via = new Map<DrvPath, DrvPath | null>();
  const own = new Map<DrvPath, number>();
  let last: DrvPath | null = null;
  const neverFit: string[] = [];
  let criticalPathMs = 0;
  let totalWorkCpuMs = 0;
  for (const p of topo.order) {
    const node = byPath.get(p)!;
    const fastest = fastestDurationMs(node, model, shapes);
    if (!fastest.fits) neverFit.push(node.name);
    let start = 0;
    let from: DrvPath | null = null;
    for (const i of node.inputDrvs) {
      const f = finish.get(i.drvPath) ?? 0;
      if (f > start) [start, from] = [f, i.drvPath];
    }
    const end = start + fastest.ms;
    finish.set(p, end);
    via.set(p, from);
    own.set(p, fastest.ms);
    if (end > criticalPathMs) [criticalPathMs, last] = [end, p];
    totalWorkCpuMs += durationOn(model.profile(node), 1);
  }
  const workBoundMs = totalWorkCpuMs / fleetCores(fleet);
  const criticalChain: { name: string; ms: number }[] = [];
  for (let p = last; p !== null; p = via.get(p) ?? null) {
    if (own.get(p)! >= 3_600_000) criticalChain.unshift({ name: byPath.get(p)!.name, ms: own.get(p)! });
  }
  return { boundMs: Math.max(criticalPathMs, workBoundMs), criticalPathMs, workBoundMs, totalWorkCpuMs, neverFit, criticalChain };
}

function dedupeShapes(infos: WorkerInfo[]): WorkerInfo[] {
  const seen = new Map<string, WorkerInfo>();
  for (const w of infos) seen.set(`${w.cores}|${w.memoryBytes}|${w.features.join(",")}`, w);
  return [...seen.values()];
}
