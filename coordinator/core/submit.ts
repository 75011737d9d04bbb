// Job submission: validate, find what the job needs (stopping at derivations
// already done or in the cache), rank it, and merge it into the global graph
// where a derivation shared with other jobs stays one record.
import { validateSubmission, type Submission } from "./dag-validate.js";
import { markCached } from "./drv-state.js";
import { InvalidInputError } from "./errors.js";
import { buildJobGraph, reachable } from "./job-graph.js";
import type { SchedulerState } from "./scheduler-state.js";
import type { DrvNode, DrvPath, JobRecord } from "./types.js";

/** Submits a job (or answers with the job of the same idempotency key); replies with a jobAccepted effect. */
export function submitJob(s: SchedulerState, now: number, sub: Submission): void {
  const same = s.book.byIdempotencyKey(sub.owner ?? "", sub.idempotencyKey);
  if (same !== undefined) {
    s.sink.send({ kind: "jobAccepted", jobId: same.record.jobId, existing: true });
    return;
  }
  const valid = validateSubmission(sub);
  if (s.book.get(sub.jobId) !== undefined) throw new InvalidInputError(`job ${sub.jobId} already exists`);

  // Below a done or cached derivation nothing needs building (like substitution in Nix).
  const isLeaf = (p: DrvPath): boolean => {
    const rec = s.dag.records.get(p);
    if (rec?.state === "done") return true;
    return sub.cachedDrvPaths.has(p) && rec?.state !== "building";
  };
  const members = reachable(sub.roots, (p) => valid.nodes.get(p)!, isLeaf);
  const order = valid.order.filter((p) => members.has(p));
  const graph = buildJobGraph(order, valid.nodes, isLeaf);
  const ranks = s.priority.rankGraph(graph, s.estimator);

  const job: JobRecord = {
    jobId: sub.jobId,
    description: sub.description,
    roots: [...sub.roots],
    idempotencyKey: sub.idempotencyKey,
    owner: sub.owner ?? "",
    ...(sub.publish ? { publish: { ...sub.publish } } : {}),
    state: "running",
    createdAtMs: now,
    finishedAtMs: null,
  };
  s.book.add(job);
  s.sink.jobChanged(job);
  const newNodes: DrvNode[] = [];
  // Topological order: every input's record exists (and is settled) before its dependents'.
  for (const p of order) {
    const rank = ranks.get(p);
    if (rank !== undefined) s.dag.raiseRank(p, rank);
    const cached = sub.cachedDrvPaths.has(p);
    const existing = s.dag.records.get(p);
    if (existing === undefined) {
      const node = valid.nodes.get(p)!;
      newNodes.push(node);
      s.book.attach(job.jobId, s.dag.create(node, job.jobId, cached, now));
      continue;
    }
    existing.jobs.push(job.jobId);
    s.sink.drvChanged(existing);
    s.book.attach(job.jobId, existing);
    if (cached && existing.state !== "done" && existing.state !== "building") {
      s.dag.apply(existing, now, () => markCached(existing, now));
    } else if (existing.state === "failed" || existing.state === "cancelled") {
      s.dag.revive(existing, now);
    }
  }
  s.sink.nodesAdded(newNodes);
  s.sink.emit({
    type: "job.submitted",
    atMs: now,
    jobId: job.jobId,
    description: job.description,
    roots: [...job.roots],
    total: order.length,
  });
  s.sink.send({ kind: "jobAccepted", jobId: job.jobId, existing: false });
}
