// The dispatch pass that ends every event: offer ready derivations, best
// first, to free workers through the placement policy. It only touches
// platform queues some free worker can serve, and stops when slots run out,
// so its cost follows the number of assignments, not the size of the DAG.
import type { DagIndex } from "./dag-index.js";
import { addBackupCopy, dropHolder, holderOn, lease, limitsWorkers, trustAllows, type DrvRecord, type LeaseHolder } from "./drv-state.js";
import type { EffectSink } from "./effects.js";
import { durationAt, type Estimate, type Estimator } from "./estimator.js";
import { addHolder } from "./lease-index.js";
import { applyCoreLimit, fleetKey, platformMatches, type PlacementPolicy, type PlacementRequest, type WorkerCandidate } from "./placement.js";
import { comparePriority, type PriorityKey } from "./priority.js";
import type { PlatformQueue, ReadyEntry } from "./ready-queue.js";
import type { AssignmentSpec, DrvNode, DrvPath, StorePath } from "./types.js";
import type { WorkerPool } from "./worker-pool.js";
import type { WorkerRecord } from "./worker-state.js";

/** What the dispatch pass reads and changes. */
export interface DispatchContext {
  dag: DagIndex;
  workers: WorkerPool;
  policy: PlacementPolicy;
  estimator: Estimator;
  sink: EffectSink;
  /** Wall-clock limit put on every build; 0 = none. */
  buildTimeoutMs: number;
  /** Unplaceable derivations looked at per pass before giving up (bounds the work). */
  maxSetAside: number;
  /** Why a ready derivation was last passed over, and since when it has been; cleared when it is leased. */
  passedOver: Map<DrvPath, PassedOver>;
  /** Start backup copies of a running build whose estimated remaining time is at least this (ms); 0 = never. */
  backupCopyMinRemainingMs: number;
  /** Most backup copies of one build at a time. */
  maxBackupCopiesPerBuild: number;
}

/** A ready derivation placement passed over: the latest reason, and when it was first passed over. */
export interface PassedOver {
  reason: string;
  sinceMs: number;
}

/** Output paths of exactly the input outputs `node` uses, deduplicated, in input order. */
export function inputPathsOf(node: DrvNode, nodes: ReadonlyMap<DrvPath, DrvNode>): StorePath[] {
  const out = new Set<StorePath>();
  for (const input of node.inputDrvs) {
    const dep = nodes.get(input.drvPath)!;
    for (const name of input.outputs) out.add(dep.outputs[name]);
  }
  return [...out];
}

/** The assignment a worker receives for a freshly leased record (the primary's grant unless `holder` says otherwise). */
export function assignmentSpec(
  node: DrvNode,
  rec: DrvRecord,
  nodes: ReadonlyMap<DrvPath, DrvNode>,
  timeoutMs: number,
  estimate?: Estimate,
  holder: Pick<LeaseHolder, "cores" | "reservedMemoryBytes"> = rec,
): AssignmentSpec {
  // Only measured durations: a prior (a guess of minutes for anything unknown) would make a draining worker hand back everything.
  const expectedMs = estimate?.model ? (estimate.model.source === "history" ? durationAt(estimate.model, holder.cores) : 0) : (estimate?.durationMs ?? 0);
  return {
    lease: { drvPath: rec.drvPath, epoch: rec.epoch },
    name: node.name,
    outputs: { ...node.outputs },
    inputPaths: inputPathsOf(node, nodes),
    cores: holder.cores,
    memoryLimitBytes: holder.reservedMemoryBytes,
    timeoutMs,
    estimatedDurationMs: expectedMs,
  };
}

/** Expected ms a building record's primary attempt still needs (by its estimate), or null when unknown. */
function expectedRemainingMs(rec: DrvRecord, estimate: Estimate, now: number): number | null {
  const total = estimate.model !== undefined ? durationAt(estimate.model, Math.max(1, rec.cores)) : estimate.durationMs;
  if (total === null) return null;
  return total - (now - (rec.startedAtMs ?? now));
}

/**
 * Active workers without a free slot, per platform: a policy may prefer to
 * wait for one. Listed once per dispatch pass and again only after an
 * assignment changes who is busy (most placement tries in a pass fail, and
 * each would otherwise walk the whole fleet).
 */
class BusyWorkers {
  private readonly byPlatform = new Map<string, WorkerCandidate[]>();

  constructor(private readonly workers: WorkerPool) {}

  /** Every active worker of a platform (the pool keeps the list between passes). */
  fleet(system: string, features: readonly string[]): readonly WorkerRecord[] {
    return this.workers.fleet(system, features);
  }

  /** The fleet's workers without a free slot, with their loads. */
  of(system: string, features: readonly string[]): WorkerCandidate[] {
    const key = fleetKey(system, features);
    let list = this.byPlatform.get(key);
    if (list === undefined) {
      list = this.fleet(system, features)
        .filter((w) => !this.workers.hasFreeSlot(w))
        .map((w) => this.workers.candidate(w));
      this.byPlatform.set(key, list);
    }
    return list;
  }

  /** A worker took or lost a build: reservations and slots changed. */
  changed(): void {
    this.byPlatform.clear();
  }
}

/** What placement is asked for `node`; busy workers matter only when nothing free will do, so they are listed on first read (the fleet too). */
function placementRequest(
  busyWorkers: BusyWorkers,
  now: number,
  node: DrvNode,
  record: DrvRecord,
  estimate: Estimate,
  candidates: WorkerCandidate[],
  passedOverSinceMs?: number,
): PlacementRequest {
  let busy: WorkerCandidate[] | undefined;
  let fleet: readonly WorkerRecord[] | undefined;
  return {
    now,
    node,
    record,
    estimate,
    candidates,
    passedOverSinceMs,
    get busy() {
      return (busy ??= busyWorkers.of(node.system, node.requiredSystemFeatures).filter((c) => trustAllows(record, c.worker.info)));
    },
    get fleet() {
      if (fleet === undefined) {
        const all = busyWorkers.fleet(node.system, node.requiredSystemFeatures);
        // Most records go anywhere: the shared list, not a copy per try.
        fleet = limitsWorkers(record) ? all.filter((w) => trustAllows(record, w.info)) : all;
      }
      return fleet;
    },
  };
}

function servable(q: PlatformQueue, free: readonly WorkerRecord[]): boolean {
  return free.some((w) => platformMatches(w.info, q.system, q.features));
}

/** The best head among queues some free worker can serve. */
function bestQueue(queues: readonly PlatformQueue[], free: readonly WorkerRecord[]): PlatformQueue | null {
  let best: { q: PlatformQueue; head: ReadyEntry } | null = null;
  for (const q of queues) {
    const head = q.peek();
    if (head === undefined || !servable(q, free)) continue;
    if (best === null || comparePriority(head.key, best.head.key) < 0) best = { q, head };
  }
  return best?.q ?? null;
}

/** Ready derivations per dispatch pass that may try to preempt a backup copy. */
const MAX_PREEMPT_TRIES = 8;
/** Long builds per dispatch pass that may fail to find a worker for a backup copy (a placement try walks every worker). */
const MAX_BACKUP_COPY_MISSES = 8;

/** The backup copy on `w` of `rec`, when `rec` ranks below `readyKey` (a copy yields only to more urgent work). */
function yieldingCopy(rec: DrvRecord | undefined, w: WorkerRecord, dag: DagIndex, readyKey: PriorityKey): LeaseHolder | undefined {
  if (rec === undefined || rec.workerId === w.info.workerId) return undefined;
  const h = holderOn(rec, w.info.workerId);
  return h !== undefined && comparePriority(dag.keyOf(rec.drvPath), readyKey) > 0 ? h : undefined;
}

/** A worker as it would be with the copies that yield to `readyKey` stopped; null when none would. */
function withoutYieldingCopies(workers: WorkerPool, w: WorkerRecord, dag: DagIndex, readyKey: PriorityKey): WorkerCandidate | null {
  const view = workers.candidate(w);
  const running = view.running;
  for (const drvPath of workers.leasesOf(w).keys()) {
    const h = yieldingCopy(dag.records.get(drvPath), w, dag, readyKey);
    if (h !== undefined) addHolder(view, h, -1);
  }
  return view.running === running ? null : view;
}

/** Workers running at least one copy (the ones a ready derivation may preempt). */
function workersWithCopies(workers: WorkerPool, dag: DagIndex): WorkerRecord[] {
  const out: WorkerRecord[] = [];
  if (!dag.leases.hasBackupCopies()) return out; // the usual case, without a walk over every worker's leases
  for (const w of workers.values()) {
    if (w.state !== "active") continue;
    for (const drvPath of workers.leasesOf(w).keys()) {
      const rec = dag.records.get(drvPath);
      if (rec !== undefined && rec.workerId !== w.info.workerId) {
        out.push(w);
        break;
      }
    }
  }
  return out;
}

/** The least urgent build with a backup copy on `withCopies`, or null when there is none. */
function leastUrgentCopy(workers: WorkerPool, withCopies: readonly WorkerRecord[], dag: DagIndex): PriorityKey | null {
  let weakest: PriorityKey | null = null;
  for (const w of withCopies) {
    for (const drvPath of workers.leasesOf(w).keys()) {
      const rec = dag.records.get(drvPath);
      if (rec === undefined || rec.workerId === w.info.workerId) continue;
      const key = dag.keyOf(drvPath);
      if (weakest === null || comparePriority(key, weakest) > 0) weakest = key;
    }
  }
  return weakest;
}

/** Stops the copies on `w` that yield to `readyKey` (a ready derivation takes their place). */
function preemptCopies(ctx: DispatchContext, w: WorkerRecord, forDrvPath: DrvPath, readyKey: PriorityKey, now: number): void {
  for (const drvPath of [...ctx.workers.leasesOf(w).keys()]) {
    const rec = ctx.dag.records.get(drvPath)!;
    const h = yieldingCopy(rec, w, ctx.dag, readyKey);
    if (h === undefined) continue;
    const lease = { drvPath, epoch: rec.epoch };
    ctx.dag.apply(rec, now, () => dropHolder(rec, w.info.workerId));
    ctx.sink.send({ kind: "abort", workerId: w.info.workerId, lease, reason: `backup copy stopped: ${ctx.dag.node(forDrvPath).name} needs the worker` });
    ctx.sink.emit({ type: "drv.backup-copy-preempted", atMs: now, drvPath, epoch: rec.epoch, workerId: w.info.workerId, forDrvPath });
  }
}

/**
 * Assigns ready derivations to free workers until one of them runs out; a
 * derivation with nowhere to go may take a worker whose backup copies are
 * of less urgent builds. Workers left idle then take backup copies of long running builds.
 */
export function dispatch(ctx: DispatchContext, now: number): void {
  let free = ctx.workers.free();
  const busy = new BusyWorkers(ctx.workers);
  if (ctx.dag.ready.size > 0) {
    const withCopies = workersWithCopies(ctx.workers, ctx.dag);
    if (free.length > 0 || withCopies.length > 0) free = dispatchReady(ctx, now, free, withCopies, busy);
  }
  if (free.length > 0 && ctx.backupCopyMinRemainingMs > 0) startBackupCopies(ctx, now, free, busy);
}

/** The ready pass; returns the workers still free. */
function dispatchReady(ctx: DispatchContext, now: number, free: WorkerRecord[], withCopies: WorkerRecord[], busy: BusyWorkers): WorkerRecord[] {
  const { dag, workers, sink } = ctx;
  const queues = dag.ready.nonEmpty();
  const setAside: DrvPath[] = [];
  // Preemption is for the best few ready derivations: bounded so a long ready queue costs no more per pass.
  let preemptTries = 0;
  const weakestCopy = leastUrgentCopy(workers, withCopies, dag);
  while ((free.length > 0 || (withCopies.length > 0 && preemptTries < MAX_PREEMPT_TRIES)) && setAside.length < ctx.maxSetAside) {
    const q = bestQueue(queues, withCopies.length === 0 ? free : [...free, ...withCopies]);
    if (q === null) break;
    // With no free worker left only a derivation more urgent than some copy can start, and the rest of the queue is less urgent.
    if (free.length === 0 && (weakestCopy === null || comparePriority(q.peek()!.key, weakestCopy) >= 0)) break;
    const entry = dag.ready.pop(q)!;
    const rec = dag.records.get(entry.drvPath)!;
    const node = dag.node(entry.drvPath);
    const candidates = free.filter((w) => platformMatches(w.info, q.system, q.features) && trustAllows(rec, w.info)).map((w) => workers.candidate(w));
    const estimate = ctx.estimator.estimate(node);
    const passedOverSinceMs = ctx.passedOver.get(entry.drvPath)?.sinceMs;
    const request = placementRequest(busy, now, node, rec, estimate, candidates, passedOverSinceMs);
    let decision = ctx.policy.place(request);
    let preempt: WorkerRecord | undefined;
    if (!decision.ok && withCopies.length > 0 && preemptTries < MAX_PREEMPT_TRIES) {
      // Backup copies of less urgent builds never hold this one back: try the workers as they would be
      // without them. A copy of a more urgent build (it may be the one that finishes the critical path) stays.
      const views: WorkerCandidate[] = [];
      for (const w of withCopies) {
        const view = platformMatches(w.info, q.system, q.features) && trustAllows(rec, w.info) ? withoutYieldingCopies(workers, w, dag, entry.key) : null;
        if (view !== null) views.push(view);
      }
      // Only a derivation some copy would yield to spends a try (the most urgent ones outrank every copy).
      if (views.length > 0) preemptTries++;
      const second = views.length === 0 ? decision : ctx.policy.place({ ...request, candidates: views });
      if (second.ok) {
        decision = second;
        preempt = withCopies.find((w) => w.info.workerId === second.workerId);
      }
    }
    if (!decision.ok) {
      setAside.push(entry.drvPath);
      ctx.passedOver.set(entry.drvPath, { reason: decision.reason, sinceMs: passedOverSinceMs ?? now });
      continue;
    }
    if (preempt !== undefined) {
      preemptCopies(ctx, preempt, rec.drvPath, entry.key, now);
      withCopies = withCopies.filter((w) => w !== preempt);
    }
    const w = preempt ?? free.find((f) => f.info.workerId === decision.workerId);
    if (w === undefined) throw new Error(`policy ${ctx.policy.name} chose ${decision.workerId}, not a candidate`);
    const grant = {
      workerId: w.info.workerId,
      cores: applyCoreLimit(decision.cores, rec),
      memoryBytes: decision.memoryReservationBytes,
      diskBytes: decision.diskReservationBytes ?? 0,
      now,
    };
    dag.apply(rec, now, () => lease(rec, grant));
    busy.changed();
    ctx.passedOver.delete(rec.drvPath);
    sink.send({ kind: "assign", workerId: w.info.workerId, spec: assignmentSpec(node, rec, dag.nodes, ctx.buildTimeoutMs, estimate) });
    free = free.filter((f) => f !== w);
    if (workers.hasFreeSlot(w)) free.push(w);
  }
  // Passed-over derivations go back with their key (and a fresh token).
  for (const p of setAside) dag.ready.push(dag.node(p), dag.keyOf(p));
  return free;
}

/**
 * Speculative backup copies (as MapReduce's backup tasks): a long build is
 * lost whenever its container is recycled or killed, and restarting it from
 * scratch can cost most of a day on the critical path. Idle workers that no
 * ready derivation could use run a second copy under the same lease, best
 * priority first, placed by the same policy (memory, lifetime). The first
 * success wins and the others are aborted; a ready derivation preempts a copy.
 */
function startBackupCopies(ctx: DispatchContext, now: number, free: WorkerRecord[], busy: BusyWorkers): void {
  const { dag, workers, sink } = ctx;
  const wanted: { rec: DrvRecord; node: DrvNode; estimate: Estimate }[] = [];
  for (const w of workers.values()) {
    for (const drvPath of workers.leasesOf(w).keys()) {
      const rec = dag.records.get(drvPath);
      // Each record once, through its primary (none whose build is done and only uploads); at most maxBackupCopiesPerBuild copies.
      if (rec === undefined || rec.workerId !== w.info.workerId || rec.uploading || (rec.backupCopies?.length ?? 0) >= ctx.maxBackupCopiesPerBuild) continue;
      const node = dag.node(drvPath);
      const estimate = ctx.estimator.estimate(node);
      const left = expectedRemainingMs(rec, estimate, now);
      if (left !== null && left >= ctx.backupCopyMinRemainingMs) wanted.push({ rec, node, estimate });
    }
  }
  wanted.sort((a, b) => comparePriority(dag.keyOf(a.rec.drvPath), dag.keyOf(b.rec.drvPath)));
  let misses = 0;
  for (const { rec, node, estimate } of wanted) {
    if (free.length === 0 || misses >= MAX_BACKUP_COPY_MISSES) return;
    const candidates = free
      .filter((w) => platformMatches(w.info, node.system, node.requiredSystemFeatures) && trustAllows(rec, w.info) && !workers.leasesOf(w).has(rec.drvPath))
      .map((w) => workers.candidate(w));
    if (candidates.length === 0) continue;
    const decision = ctx.policy.place(placementRequest(busy, now, node, rec, estimate, candidates));
    if (!decision.ok) {
      misses++;
      continue;
    }
    const w = free.find((f) => f.info.workerId === decision.workerId)!;
    const copy: LeaseHolder = {
      workerId: w.info.workerId,
      cores: applyCoreLimit(decision.cores, rec),
      reservedMemoryBytes: decision.memoryReservationBytes,
      reservedDiskBytes: decision.diskReservationBytes ?? 0,
      startedAtMs: now,
    };
    dag.apply(rec, now, () => addBackupCopy(rec, copy));
    busy.changed();
    sink.send({ kind: "assign", workerId: w.info.workerId, spec: assignmentSpec(node, rec, dag.nodes, ctx.buildTimeoutMs, estimate, copy) });
    sink.emit({ type: "drv.backup-copy-started", atMs: now, drvPath: rec.drvPath, epoch: rec.epoch, workerId: w.info.workerId, backupCopies: rec.backupCopies?.length ?? 0 });
    if (!workers.hasFreeSlot(w)) free = free.filter((f) => f !== w);
  }
}
