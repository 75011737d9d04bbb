// Job submission: validate, find what the job needs (stopping at derivations
// already done or in the cache), rank it, and merge it into the global graph
// where a derivation shared with other jobs stays one record.
//
// A submit can carry 100k nodes, so it runs in slices (see steps.ts): the
// checks and the ranking change nothing, and the records are then created in
// topological order a slice at a time. Other events run between slices, so
// the first derivations may build while the rest are admitted; the job
// cannot finish (and is not persisted) until it is fully admitted, and a crash
// before that leaves records no running job wants, which restore cancels.
import { validateSteps, type Submission, type ValidDag } from "./dag-validate.js";
import { markCached } from "./drv-state.js";
import { InvalidInputError } from "./errors.js";
import { buildJobGraphSteps, reachableSteps } from "./job-graph.js";
import type { SchedulerState } from "./scheduler-state.js";
import { SliceBudget, type Steps } from "./steps.js";
import type { DrvNode, DrvPath, JobRecord } from "./types.js";

/** The time of the slice being run: the driver sets it before each slice. */
export interface SliceClock {
  now: number;
}

/** Submits a job (or answers with the job of the same idempotency key) in slices; replies with a jobAccepted effect at the end. */
export function* submitSteps(s: SchedulerState, at: SliceClock, sub: Submission, sliceSize: number): Steps<void> {
  const existing = sameJob(s, sub);
  if (existing !== undefined) return void s.sink.send({ kind: "jobAccepted", jobId: existing, existing: true });
  const budget = new SliceBudget(sliceSize);
  const valid = yield* validateSteps(sub, budget);
  if (s.book.get(sub.jobId) !== undefined) throw new InvalidInputError(`job ${sub.jobId} already exists`);

  // Below a done or cached derivation nothing needs building (like substitution in Nix).
  // Leaves that were done are remembered: one withdrawn meanwhile needs its inputs after all.
  const doneLeaves: DrvPath[] = [];
  const isLeaf = (p: DrvPath): boolean => {
    const rec = s.dag.records.get(p);
    if (rec?.state === "done") return true;
    return sub.cachedDrvPaths.has(p) && rec?.state !== "building";
  };
  const leafInReach = (p: DrvPath): boolean => {
    if (!isLeaf(p)) return false;
    if (s.dag.records.get(p)?.state === "done") doneLeaves.push(p);
    return true;
  };
  const members = yield* reachableSteps(sub.roots, (p) => valid.nodes.get(p)!, leafInReach, budget);
  const order: DrvPath[] = [];
  for (const p of valid.order) {
    if (members.has(p)) order.push(p);
    if (budget.spend()) yield;
  }
  const graph = yield* buildJobGraphSteps(order, valid.nodes, (p) => members.has(p) && isLeaf(p), budget);
  const ranks = s.priority.rankGraphSteps ? yield* s.priority.rankGraphSteps(graph, s.estimator, budget) : s.priority.rankGraph(graph, s.estimator);

  // From here on state changes. Another submit with the same key may have got here first.
  const raced = sameJob(s, sub);
  if (raced !== undefined) return void s.sink.send({ kind: "jobAccepted", jobId: raced, existing: true });
  const job: JobRecord = {
    jobId: sub.jobId,
    description: sub.description,
    roots: [...sub.roots],
    idempotencyKey: sub.idempotencyKey,
    owner: sub.owner ?? "",
    ...(sub.publish ? { publish: { ...sub.publish } } : {}),
    state: "running",
    createdAtMs: at.now,
    finishedAtMs: null,
  };
  const entry = s.book.add(job);
  entry.admitting = true;
  // Topological order: every input's record exists (and is settled) before its dependents'.
  for (let i = 0; i < order.length && entry.record.state === "running"; ) {
    const newNodes: DrvNode[] = [];
    for (; i < order.length; i++) {
      const p = order[i];
      const rank = ranks.get(p);
      if (rank !== undefined) s.dag.raiseRank(p, rank);
      admit(s, at.now, job.jobId, valid.nodes.get(p)!, sub.cachedDrvPaths.has(p), newNodes);
      if (budget.spend(1 + valid.nodes.get(p)!.inputDrvs.length)) {
        i++;
        break;
      }
    }
    s.sink.nodesAdded(newNodes);
    if (i < order.length) yield;
  }
  if (entry.record.state === "running") admitBelowWithdrawn(s, at.now, job.jobId, valid, sub.cachedDrvPaths, doneLeaves);
  s.book.admitted(entry);
  s.sink.jobChanged(job);
  s.sink.emit({
    type: "job.submitted",
    atMs: at.now,
    jobId: job.jobId,
    description: job.description,
    roots: [...job.roots],
    total: entry.drvs.length,
  });
  s.sink.send({ kind: "jobAccepted", jobId: job.jobId, existing: false });
}

function sameJob(s: SchedulerState, sub: Submission): string | undefined {
  return s.book.byIdempotencyKey(sub.owner ?? "", sub.idempotencyKey)?.record.jobId;
}

/** Creates the record of `node` for the job, or attaches the job to the existing one (reviving or marking it cached). */
function admit(s: SchedulerState, now: number, jobId: string, node: DrvNode, cached: boolean, newNodes: DrvNode[]): void {
  const existing = s.dag.records.get(node.drvPath);
  if (existing === undefined) {
    newNodes.push(node);
    s.book.attach(jobId, s.dag.create(node, jobId, cached, now));
    return;
  }
  if (existing.jobs.includes(jobId)) return;
  existing.jobs.push(jobId);
  s.sink.drvChanged(existing);
  s.book.attach(jobId, existing);
  if (cached && existing.state !== "done" && existing.state !== "building") {
    s.dag.apply(existing, now, () => markCached(existing, now));
  } else if (existing.state === "failed" || existing.state === "cancelled") {
    s.dag.revive(existing, now);
  }
}

/**
 * A derivation that was done when the job's closure was cut (so its inputs
 * were left out) may have been withdrawn while the job was admitted in
 * slices: the job then needs the inputs after all. Admits that missing part
 * (usually nothing) in one go, inputs first.
 */
function admitBelowWithdrawn(s: SchedulerState, now: number, jobId: string, valid: ValidDag, cached: ReadonlySet<DrvPath>, doneLeaves: DrvPath[]): void {
  const stack = doneLeaves.filter((p) => s.dag.records.get(p)?.state !== "done");
  const wanted = new Set<DrvPath>();
  while (stack.length > 0) {
    for (const input of valid.nodes.get(stack.pop()!)!.inputDrvs) {
      const rec = s.dag.records.get(input.drvPath);
      if (wanted.has(input.drvPath) || (rec !== undefined && rec.jobs.includes(jobId))) continue;
      wanted.add(input.drvPath);
      if (rec?.state !== "done" && !cached.has(input.drvPath)) stack.push(input.drvPath);
    }
  }
  if (wanted.size === 0) return;
  const newNodes: DrvNode[] = [];
  for (const p of valid.order) if (wanted.has(p)) admit(s, now, jobId, valid.nodes.get(p)!, cached.has(p), newNodes);
  s.sink.nodesAdded(newNodes);
}
