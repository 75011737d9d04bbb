// The dispatch pass that ends every event: offer ready derivations, best
// first, to free workers through the placement policy. It only touches
// platform queues some free worker can serve, and stops when slots run out,
// so its cost follows the number of assignments, not the size of the DAG.
import type { DagIndex } from "./dag-index.js";
import { lease, type DrvRecord } from "./drv-state.js";
import type { EffectSink } from "./effects.js";
import { durationAt, type Estimate, type Estimator } from "./estimator.js";
import { applyCoreLimit, hasFreeSlot, platformMatches, type PlacementPolicy, type WorkerCandidate } from "./placement.js";
import { comparePriority } from "./priority.js";
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
  /** Why a ready derivation was last passed over; cleared when it is leased. */
  waitingReasons: Map<DrvPath, string>;
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

/** The assignment a worker receives for a freshly leased record. */
export function assignmentSpec(
  node: DrvNode,
  rec: DrvRecord,
  nodes: ReadonlyMap<DrvPath, DrvNode>,
  timeoutMs: number,
  estimate?: Estimate,
): AssignmentSpec {
  // Only measured durations: a prior (a guess of minutes for anything unknown) would make a draining worker hand back everything.
  const expectedMs = estimate?.model ? (estimate.model.source === "history" ? durationAt(estimate.model, rec.cores) : 0) : (estimate?.durationMs ?? 0);
  return {
    lease: { drvPath: rec.drvPath, epoch: rec.epoch },
    name: node.name,
    outputs: { ...node.outputs },
    inputPaths: inputPathsOf(node, nodes),
    cores: rec.cores,
    memoryLimitBytes: rec.reservedMemoryBytes,
    timeoutMs,
    estimatedDurationMs: expectedMs,
  };
}

function candidateOf(w: WorkerRecord): WorkerCandidate {
  return {
    worker: w,
    running: w.running.size,
    reservedCores: w.reservedCores,
    reservedMemoryBytes: w.reservedMemoryBytes,
    reservedDiskBytes: w.reservedDiskBytes,
  };
}

/** Active workers of the platform without a free slot: a policy may prefer to wait for one. */
function busyCandidates(workers: WorkerPool, q: PlatformQueue): WorkerCandidate[] {
  const out: WorkerCandidate[] = [];
  for (const w of workers.values()) {
    if (w.state === "active" && !hasFreeSlot(w) && platformMatches(w.info, q.system, q.features)) out.push(candidateOf(w));
  }
  return out;
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

/** Assigns ready derivations to free workers until one of them runs out. */
export function dispatch(ctx: DispatchContext, now: number): void {
  const { dag, workers, sink } = ctx;
  let free = workers.free();
  if (free.length === 0 || dag.ready.size === 0) return;
  const queues = dag.ready.nonEmpty();
  const setAside: DrvPath[] = [];
  while (free.length > 0 && setAside.length < ctx.maxSetAside) {
    const q = bestQueue(queues, free);
    if (q === null) break;
    const entry = dag.ready.pop(q)!;
    const rec = dag.records.get(entry.drvPath)!;
    const node = dag.node(entry.drvPath);
    const candidates = free.filter((w) => platformMatches(w.info, q.system, q.features)).map(candidateOf);
    const estimate = ctx.estimator.estimate(node);
    let busy: WorkerCandidate[] | undefined;
    // Busy workers matter only when nothing free will do: listed on first read.
    const decision = ctx.policy.place({
      now,
      node,
      record: rec,
      estimate,
      candidates,
      get busy() {
        return (busy ??= busyCandidates(workers, q));
      },
    });
    if (!decision.ok) {
      setAside.push(entry.drvPath);
      ctx.waitingReasons.set(entry.drvPath, decision.reason);
      continue;
    }
    const w = free.find((f) => f.info.workerId === decision.workerId);
    if (w === undefined) throw new Error(`policy ${ctx.policy.name} chose ${decision.workerId}, not a candidate`);
    const grant = {
      workerId: w.info.workerId,
      cores: applyCoreLimit(decision.cores, rec),
      memoryBytes: decision.memoryReservationBytes,
      diskBytes: decision.diskReservationBytes ?? 0,
      now,
    };
    dag.apply(rec, now, () => lease(rec, grant));
    workers.attachLease(w, rec);
    ctx.waitingReasons.delete(rec.drvPath);
    sink.send({ kind: "assign", workerId: w.info.workerId, spec: assignmentSpec(node, rec, dag.nodes, ctx.buildTimeoutMs, estimate) });
    if (!hasFreeSlot(w)) free = free.filter((f) => f !== w);
  }
  // Passed-over derivations go back with their key (and a fresh token).
  for (const p of setAside) dag.ready.push(dag.node(p), dag.keyOf(p));
}
