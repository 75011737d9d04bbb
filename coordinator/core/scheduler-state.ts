// The scheduler's state in one place, shared by the modules that implement
// its events (submit, worker events, build events, restore) and its queries.
import { DagIndex } from "./dag-index.js";
import { dispatch, type PassedOver } from "./dispatch.js";
import { cancel, dropHolder, holderOn, leaseHolders, requeue, type DrvRecord } from "./drv-state.js";
import { EffectSink, type Effect } from "./effects.js";
import type { Estimator } from "./estimator.js";
import { JobBook } from "./job-book.js";
import { LearnedEstimator } from "./learned-estimator.js";
import { DEFAULT_MEMORY_FIT, MemoryFit, type LifetimePolicy } from "./memory-fit.js";
import type { PlacementPolicy } from "./placement.js";
import type { PriorityPolicy } from "./priority.js";
import type { DrvPath } from "./types.js";
import { UpwardRankPriority } from "./upward-rank.js";
import { WorkerPool } from "./worker-pool.js";

/** Tunables of the scheduler. */
export interface SchedulerConfig {
  /** A worker silent this long is lost and its builds requeued. */
  heartbeatTimeoutMs: number;
  /** Transient failures (inputs-unavailable, upload-failed, ...) retried before a derivation fails. */
  maxTransientRetries: number;
  /** OOM kills retried (raised memory estimate, at most half the cores) before a derivation fails. */
  maxOomRetries: number;
  /** After a restore, how long a lease waits for its worker to reconnect. */
  restoreGraceMs: number;
  /** Wall-clock limit put on every build; 0 = none. */
  buildTimeoutMs: number;
  /** Unplaceable ready derivations examined per dispatch pass. */
  maxSetAsidePerDispatch: number;
  /** Default placement (memory-fit): when no worker lives long enough for a build, wait for a fresh one or start anyway. */
  lifetimePolicy: LifetimePolicy;
  /** Memory-fit keeps this fraction of a worker's memory, within [memorySafetyMarginMinBytes, memorySafetyMarginMaxBytes], unreserved. */
  memorySafetyMarginFraction: number;
  memorySafetyMarginMinBytes: number;
  memorySafetyMarginMaxBytes: number;
  /** Memory-fit reserves this much above the estimate when the worker has room. */
  memoryHeadroomFraction: number;
  /** Idle workers run a backup copy of a build expected to need at least this much longer (ms); 0 = no backup copies. */
  backupCopyMinRemainingMs: number;
  /**
   * Most backup copies of one build at a time. Two by default: an 11 h build
   * on 12 h containers with random kills loses one copy in four or five, and
   * on the nixpkgs-10k simulation a third holder cut the median makespan
   * from 1.21x to 1.08x of the lower bound (copies use only idle workers).
   */
  maxBackupCopiesPerBuild: number;
}

/** Defaults for every SchedulerConfig field. */
export const DEFAULT_SCHEDULER_CONFIG: SchedulerConfig = {
  heartbeatTimeoutMs: 15_000,
  maxTransientRetries: 3,
  maxOomRetries: 3,
  restoreGraceMs: 60_000,
  buildTimeoutMs: 0,
  maxSetAsidePerDispatch: 1000,
  lifetimePolicy: DEFAULT_MEMORY_FIT.lifetimePolicy,
  memorySafetyMarginFraction: DEFAULT_MEMORY_FIT.memorySafetyMarginFraction,
  memorySafetyMarginMinBytes: DEFAULT_MEMORY_FIT.memorySafetyMarginMinBytes,
  memorySafetyMarginMaxBytes: DEFAULT_MEMORY_FIT.memorySafetyMarginMaxBytes,
  memoryHeadroomFraction: DEFAULT_MEMORY_FIT.memoryHeadroomFraction,
  backupCopyMinRemainingMs: 60 * 60_000,
  maxBackupCopiesPerBuild: 2,
};

/** Pluggable parts of the scheduler. */
export interface SchedulerPolicies {
  placement: PlacementPolicy;
  priority: PriorityPolicy;
  estimator: Estimator;
}

/** Everything the scheduler knows. */
export interface SchedulerState extends SchedulerPolicies {
  config: SchedulerConfig;
  sink: EffectSink;
  dag: DagIndex;
  book: JobBook;
  pool: WorkerPool;
  /** Ready derivations placement passed over: why, and since when (not persisted: a restart starts the clock again). */
  passedOver: Map<DrvPath, PassedOver>;
  /** Memory of running builds as the last heartbeat reported it (not persisted). */
  liveUsage: Map<DrvPath, LiveUsage>;
  /** Measured durations of successful builds, for ETAs. */
  stats: { builds: number; totalDurationMs: number };
}

/** A running build's memory from heartbeats, for the lease of `epoch`. */
export interface LiveUsage {
  epoch: number;
  memoryBytes: number;
  peakMemoryBytes: number;
}

/** The default policies: memory-fit placement, upward-rank priority, a learned estimator with the built-in heavy table. */
export function defaultPolicies(config: SchedulerConfig): SchedulerPolicies {
  return {
    placement: new MemoryFit({
      lifetimePolicy: config.lifetimePolicy,
      memorySafetyMarginFraction: config.memorySafetyMarginFraction,
      memorySafetyMarginMinBytes: config.memorySafetyMarginMinBytes,
      memorySafetyMarginMaxBytes: config.memorySafetyMarginMaxBytes,
      memoryHeadroomFraction: config.memoryHeadroomFraction,
    }),
    priority: new UpwardRankPriority(),
    estimator: new LearnedEstimator(),
  };
}

/** Fresh, empty state wired together (record changes feed job counts, persistence and events). */
export function createState(config: Partial<SchedulerConfig>, policies: Partial<SchedulerPolicies>): SchedulerState {
  const sink = new EffectSink();
  const book = new JobBook();
  const dag = new DagIndex((rec, from, now, wasCached) => {
    book.onDrvChange(rec, from, wasCached);
    // Waiting to ready is not stored: a restore derives it from the inputs' records (DagIndex.settleRestored),
    // and every derivation a job builds makes this move, a write each for nothing.
    if (!(from === "waiting" && rec.state === "ready")) sink.drvChanged(rec);
    if (from !== null && from !== rec.state) {
      sink.emit({
        type: "drv.state",
        atMs: now,
        drvPath: rec.drvPath,
        from,
        to: rec.state,
        epoch: rec.epoch,
        workerId: rec.workerId,
        reason: rec.reason,
      });
    }
  });
  const full = { ...DEFAULT_SCHEDULER_CONFIG, ...config };
  const defaults = defaultPolicies(full);
  return {
    config: full,
    placement: policies.placement ?? defaults.placement,
    priority: policies.priority ?? defaults.priority,
    estimator: policies.estimator ?? defaults.estimator,
    sink,
    dag,
    book,
    pool: new WorkerPool(dag.leases),
    passedOver: new Map(),
    liveUsage: new Map(),
    stats: { builds: 0, totalDurationMs: 0 },
  };
}

/** Takes a lease back: requeues the derivation (epoch++), which frees its workers' slots. */
export function takeBack(s: SchedulerState, rec: DrvRecord, now: number, reason: string): void {
  s.liveUsage.delete(rec.drvPath);
  s.dag.apply(rec, now, () => requeue(rec, reason));
}

/**
 * The attempt on `workerId` ended without a result (its worker was lost,
 * handed it back, or it was killed or failed transiently). With another
 * holder (a copy) still running, that one carries the lease on and nothing
 * is requeued; otherwise the lease is taken back. Returns true when taken back.
 */
export function endAttempt(s: SchedulerState, rec: DrvRecord, workerId: string, now: number, reason: string): boolean {
  const holder = holderOn(rec, workerId);
  if (holder === undefined || leaseHolders(rec).length === 1) {
    takeBack(s, rec, now, reason);
    return true;
  }
  if (rec.workerId === workerId) s.liveUsage.delete(rec.drvPath);
  s.dag.apply(rec, now, () => dropHolder(rec, workerId));
  return false;
}

/** Sends an abort to every holder of `rec`'s lease but `except` (it reads the holders: send before the lease ends). */
export function abortHolders(s: SchedulerState, rec: DrvRecord, reason: string, except: string | null = null): void {
  for (const h of leaseHolders(rec)) {
    if (h.workerId !== except) s.sink.send({ kind: "abort", workerId: h.workerId, lease: { drvPath: rec.drvPath, epoch: rec.epoch }, reason });
  }
}

/** Cancels a derivation; a building one loses its lease and its workers get an abort. */
export function cancelDrv(s: SchedulerState, rec: DrvRecord, now: number, reason: string): void {
  if (rec.state === "building") {
    abortHolders(s, rec, reason);
    s.liveUsage.delete(rec.drvPath);
  }
  s.dag.apply(rec, now, () => cancel(rec, now, reason));
}

/** Ends every event: finish settled jobs, dispatch, hand back the collected effects. */
export function finishEvent(s: SchedulerState, now: number): Effect[] {
  s.book.settle(now, s.sink);
  dispatch(
    {
      dag: s.dag,
      workers: s.pool,
      policy: s.placement,
      estimator: s.estimator,
      sink: s.sink,
      buildTimeoutMs: s.config.buildTimeoutMs,
      maxSetAside: s.config.maxSetAsidePerDispatch,
      passedOver: s.passedOver,
      backupCopyMinRemainingMs: s.config.backupCopyMinRemainingMs,
      maxBackupCopiesPerBuild: s.config.maxBackupCopiesPerBuild,
    },
    now,
  );
  return s.sink.flush();
}
