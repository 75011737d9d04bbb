// Rebuilding scheduler state from storage after a coordinator restart, and
// taking the snapshot storage would hold. Workers are not trusted from
// storage: builds that were running stay building under their epoch until
// their worker reconnects (and is adopted) or the grace deadline passes.
import { copyDrvRecord, isTerminal, leaseHolders, type DrvRecord, type LeaseHolder } from "./drv-state.js";
import { InvalidInputError } from "./errors.js";
import { buildJobGraph, topoOrder } from "./job-graph.js";
import { cancelDrv, takeBack, type SchedulerState } from "./scheduler-state.js";
import type { Snapshot } from "./snapshot.js";
import type { DrvNode, DrvPath } from "./types.js";
import { placeholderWorker } from "./worker-state.js";

/** Loads `snap` into empty state. Repairs are persisted with the first event's effects. */
export function restoreState(s: SchedulerState, now: number, snap: Snapshot): void {
  const nodes = new Map<DrvPath, DrvNode>(snap.nodes.map((n) => [n.drvPath, n]));
  for (const stored of snap.drvs) {
    const node = nodes.get(stored.drvPath);
    if (node === undefined) throw new InvalidInputError(`snapshot: record ${stored.drvPath} has no node`);
    s.dag.load(node, fromStored(stored));
  }
  for (const job of snap.jobs) s.book.add({ ...job, roots: [...job.roots] });
  for (const rec of s.dag.records.values()) {
    for (const jobId of rec.jobs) s.book.attach(jobId, rec);
    // ETAs use the mean measured build time: rebuild it from finished builds.
    if (rec.state === "done" && !rec.cached) {
      s.stats.builds++;
      s.stats.totalDurationMs += rec.durationMs;
    }
  }
  restoreEstimates(s, snap);
  rankRunningJobs(s);

  const failed = s.dag.settleRestored(now);
  for (const rec of failed) s.dag.propagateFailure(rec, now);
  // A crash can leave records no running job wants (a cancel half-persisted,
  // or a submit whose job record never made it): cancel them.
  for (const rec of s.dag.records.values()) {
    if (isTerminal(rec.state) || rec.jobs.some((id) => s.book.get(id)?.record.state === "running")) continue;
    cancelDrv(s, rec, now, "no running job wants it (after restore)");
  }
  const graceDeadline = now + s.config.restoreGraceMs;
  for (const rec of s.dag.records.values()) {
    if (rec.state !== "building") continue;
    if (rec.workerId === null) {
      takeBack(s, rec, now, "restored without a worker");
      continue;
    }
    for (const holder of leaseHolders(rec)) {
      // Its worker takes no work until it joins again, and is lost if it does not by the grace deadline.
      if (s.pool.get(holder.workerId) === undefined) s.pool.add(placeholderWorker(holder.workerId, now, graceDeadline));
    }
  }
}

/** A copy of a stored record under today's field names (records stored before the rename keep backup copies under `hedges`). */
function fromStored(stored: DrvRecord & { hedges?: LeaseHolder[] }): DrvRecord {
  const rec: DrvRecord & { hedges?: LeaseHolder[] } = copyDrvRecord(stored);
  if (stored.hedges !== undefined) {
    delete rec.hedges;
    if (rec.backupCopies === undefined && stored.hedges.length > 0) rec.backupCopies = stored.hedges.map((h) => ({ ...h }));
  }
  return rec;
}

// Estimates are stored apart (persistEstimate effects). Without them, relearn
// from the last attempt of every record built here, in finishing order: a
// best effort that keeps a restarted farm from starting blind.
function restoreEstimates(s: SchedulerState, snap: Snapshot): void {
  if (snap.estimates !== undefined) {
    s.estimator.importEstimates?.(snap.estimates);
    return;
  }
  const built = [...s.dag.records.values()]
    .filter((r) => r.state === "done" && !r.cached && r.durationMs > 0)
    .sort((a, b) => (a.finishedAtMs ?? 0) - (b.finishedAtMs ?? 0) || a.seq - b.seq);
  for (const rec of built) {
    s.estimator.observe(s.dag.node(rec.drvPath), {
      outcome: "succeeded",
      durationMs: rec.durationMs,
      peakMemoryBytes: rec.peakMemoryBytes,
      ...(rec.peakMemoryNotMeasured ? { memoryNotMeasured: true } : {}),
      cores: rec.cores,
      memoryLimitBytes: rec.reservedMemoryBytes,
      atMs: rec.finishedAtMs ?? undefined,
    });
  }
}

// Ranks live only in memory: recompute them for the jobs still running.
function rankRunningJobs(s: SchedulerState): void {
  for (const entry of s.book.all()) {
    if (entry.record.state !== "running") continue;
    const members = new Set(entry.drvs);
    const topo = topoOrder(members, (p) => s.dag.node(p));
    if ("cycleAt" in topo) throw new InvalidInputError(`snapshot: cycle through ${topo.cycleAt}`);
    const isLeaf = (p: DrvPath): boolean => s.dag.records.get(p)?.state === "done";
    const graph = buildJobGraph(topo.order, s.dag.nodes, isLeaf);
    for (const [p, rank] of s.priority.rankGraph(graph, s.estimator)) s.dag.raiseRank(p, rank);
  }
}

/** The state storage would hold now (copies). */
export function takeSnapshot(s: SchedulerState): Snapshot {
  return {
    nodes: [...s.dag.nodes.values()],
    drvs: [...s.dag.records.values()].map(copyDrvRecord),
    jobs: [...s.book.all()].map((e) => ({ ...e.record, roots: [...e.record.roots] })),
    ...(s.estimator.exportEstimates ? { estimates: s.estimator.exportEstimates() } : {}),
  };
}
