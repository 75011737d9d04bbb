// The coordinator's scheduling core. Synchronous, no I/O, no clock: every
// event takes `now` (ms) and returns the Effects the shell must carry out, in
// order. The live coordinator (gRPC + NATS) and the simulator drive this same
// class. Each event ends with a dispatch pass.
import { buildReported, buildStepDone, cancelJob, type TrustVerdict } from "./build-events.js";
import type { Submission } from "./dag-validate.js";
import type { DrvRecord } from "./drv-state.js";
import { copyDrvRecord, withdraw } from "./drv-state.js";
import type { Effect } from "./effects.js";
import type { Estimator } from "./estimator.js";
import { jobStatus, workerViews, type JobStatusView, type WorkerView } from "./job-status.js";
import type { PlacementPolicy } from "./placement.js";
import type { PriorityPolicy } from "./priority.js";
import { restoreState, takeSnapshot } from "./restore.js";
import { createState, finishEvent, type SchedulerConfig, type SchedulerPolicies, type SchedulerState } from "./scheduler-state.js";
import type { Snapshot } from "./snapshot.js";
import { runAll } from "./steps.js";
import { submitSteps } from "./submit.js";
import type { BuildReport, DrvNode, DrvPath, DrvState, JobRecord, JobState, Lease, WorkerInfo } from "./types.js";
import {
  heartbeat,
  loseOverdueWorkers,
  workerDisconnected,
  workerDraining,
  workerJoined,
  workerRevoked,
  type DrainNotice,
} from "./worker-events.js";
import type { HeartbeatInfo } from "./worker-state.js";

export type { SchedulerConfig, SchedulerPolicies } from "./scheduler-state.js";
export { DEFAULT_SCHEDULER_CONFIG } from "./scheduler-state.js";

/** A submit being admitted in slices (Scheduler.beginSubmit). */
export interface SubmitInProgress {
  /** Runs the next slice at `now`; done after the slice that admitted the last node. */
  step(now: number): { done: boolean; effects: Effect[] };
}

/** Schedules derivation builds of many jobs over many workers. */
export class Scheduler {
  private readonly s: SchedulerState;

  /**
   * An empty scheduler. Policies default to memory-fit placement, upward-rank
   * priority and a LearnedEstimator with the built-in heavy table; pass
   * `{ estimator }` (or any policy) as the second argument to replace one,
   * e.g. an estimator loaded with stored estimates and the operator's table.
   */
  constructor(
    config: Partial<SchedulerConfig> = {},
    placementOrPolicies?: PlacementPolicy | Partial<SchedulerPolicies>,
    priority?: PriorityPolicy,
    estimator?: Estimator,
  ) {
    const policies: Partial<SchedulerPolicies> =
      placementOrPolicies !== undefined && "place" in placementOrPolicies
        ? { placement: placementOrPolicies as PlacementPolicy, priority, estimator }
        : { priority, estimator, ...placementOrPolicies };
    this.s = createState(config, policies);
  }

  /**
   * Rebuilds a scheduler from stored state. Derivations that were building
   * wait for their worker until now + restoreGraceMs; call `advanceTo` next
   * (it dispatches and persists any repairs made here).
   */
  static restore(
    now: number,
    snapshot: Snapshot,
    config: Partial<SchedulerConfig> = {},
    placementOrPolicies?: PlacementPolicy | Partial<SchedulerPolicies>,
    priority?: PriorityPolicy,
    estimator?: Estimator,
  ): Scheduler {
    const scheduler = new Scheduler(config, placementOrPolicies, priority, estimator);
    restoreState(scheduler.s, now, snapshot);
    return scheduler;
  }

  /** Effective configuration. */
  get config(): Readonly<SchedulerConfig> {
    return this.s.config;
  }

  /** The policies in use (e.g. the estimator, to export what it learned). */
  get policies(): Readonly<SchedulerPolicies> {
    return { placement: this.s.placement, priority: this.s.priority, estimator: this.s.estimator };
  }

  // ------------------------------------------------------------------ events

  /**
   * Submits a job (throws InvalidInputError, changing nothing, when the DAG is
   * malformed). Replies with a `jobAccepted` effect; a known idempotency key
   * answers with that job and changes nothing.
   */
  submitJob(now: number, submission: Submission): Effect[] {
    runAll(submitSteps(this.s, { now }, submission, 0));
    return finishEvent(this.s, now);
  }

  /**
   * The same submit in slices of about `sliceSize` nodes and edges, for the
   * live coordinator: call `step(now)` until it says done, letting other
   * events run in between. Each step is an event of its own (its effects end
   * with a dispatch); the last one carries the `jobAccepted` reply. A
   * malformed DAG throws from a step before anything changed.
   */
  beginSubmit(submission: Submission, sliceSize = 5000): SubmitInProgress {
    const at = { now: 0 };
    const steps = submitSteps(this.s, at, submission, sliceSize);
    return {
      step: (now) => {
        at.now = now;
        const done = steps.next().done === true;
        return { done, effects: finishEvent(this.s, now) };
      },
    };
  }

  /** A worker (re)joined; current running leases are adopted, stale ones aborted. */
  workerJoined(now: number, info: WorkerInfo, runningLeases: Lease[] = []): Effect[] {
    workerJoined(this.s, now, info, runningLeases);
    return finishEvent(this.s, now);
  }

  /** A heartbeat; the new deadline comes back in a `heartbeatAck` effect. */
  heartbeat(now: number, workerId: string, hb: HeartbeatInfo): Effect[] {
    heartbeat(this.s, now, workerId, hb);
    return finishEvent(this.s, now);
  }

  /** A build result; always answered with an `ack` effect (accepted or not, with the reason). */
  buildReported(now: number, workerId: string, report: BuildReport, outputsVerified: boolean, trust?: TrustVerdict): Effect[] {
    buildReported(this.s, now, workerId, report, outputsVerified, trust);
    return finishEvent(this.s, now);
  }

  /** The builder of `lease` on `workerId` is done and it uploads: its slot is free for the next build (then dispatch). */
  buildStepDone(now: number, workerId: string, lease: Lease): Effect[] {
    buildStepDone(this.s, workerId, lease);
    return finishEvent(this.s, now);
  }

  /** The worker's stream closed; it keeps its leases until its deadline. */
  workerDisconnected(now: number, workerId: string): Effect[] {
    workerDisconnected(this.s, now, workerId);
    return finishEvent(this.s, now);
  }

  /** The worker's token was revoked: it is lost now and its builds requeue at once, uncounted. */
  workerRevoked(now: number, workerId: string): Effect[] {
    workerRevoked(this.s, now, workerId);
    return finishEvent(this.s, now);
  }

  /** The worker drains: no new work; handed-back leases requeue uncounted. */
  workerDraining(now: number, workerId: string, notice: DrainNotice): Effect[] {
    workerDraining(this.s, now, workerId, notice);
    return finishEvent(this.s, now);
  }

  /** Cancels a running job (no-op when already finished). */
  cancelJob(now: number, jobId: string): Effect[] {
    cancelJob(this.s, now, jobId);
    return finishEvent(this.s, now);
  }

  /** Outputs of these done derivations were unpublished: they count as failed (`reason`) until a job wants them again. */
  outputsWithdrawn(now: number, drvPaths: readonly DrvPath[], reason: string): Effect[] {
    for (const p of drvPaths) {
      const rec = this.s.dag.records.get(p);
      if (rec?.state === "done") this.s.dag.apply(rec, now, () => withdraw(rec, now, reason));
    }
    return finishEvent(this.s, now);
  }

  /** Time passed: overdue workers are lost (their builds requeue); then dispatch. */
  advanceTo(now: number): Effect[] {
    loseOverdueWorkers(this.s, now);
    return finishEvent(this.s, now);
  }

  // ----------------------------------------------------------------- queries

  /** A job's record (a copy), if known. */
  job(jobId: string): JobRecord | undefined {
    const e = this.s.book.get(jobId);
    return e === undefined ? undefined : { ...e.record, roots: [...e.record.roots] };
  }

  /** Every job's record (copies), in submission order. */
  jobs(): JobRecord[] {
    return [...this.s.book.all()].map((e) => ({ ...e.record, roots: [...e.record.roots] }));
  }

  /** Status of a job: counts, state, failures, outputs, ETA, and per-drv rows if asked. */
  jobStatus(jobId: string, now: number, opts: { derivations: boolean } = { derivations: false }): JobStatusView | undefined {
    return jobStatus(this.s, jobId, now, opts);
  }

  /** Every known worker with its running builds. */
  workers(now: number): WorkerView[] {
    return workerViews(this.s, now);
  }

  /** A derivation's node and record (a copy), if known. */
  drv(drvPath: DrvPath): { node: DrvNode; record: DrvRecord } | undefined {
    const rec = this.s.dag.records.get(drvPath);
    return rec === undefined ? undefined : { node: this.s.dag.node(drvPath), record: copyDrvRecord(rec) };
  }

  /** How many derivations are in each state (for gauges): kept at every change, so O(states). */
  stateCounts(): Record<DrvState, number> {
    return this.s.dag.stateCounts();
  }

  /** How many jobs are in each state (for gauges): kept at every change, so O(states). */
  jobStateCounts(): Record<JobState, number> {
    return this.s.book.stateCounts();
  }

  /** Workers by state and the memory reserved on each (for gauges): O(workers), no per-build rows. */
  workerLoads(): { byState: Record<string, number>; reservedMemoryBytes: Record<string, number> } {
    const byState: Record<string, number> = {};
    const reservedMemoryBytes: Record<string, number> = {};
    for (const w of this.s.pool.values()) {
      byState[w.state] = (byState[w.state] ?? 0) + 1;
      reservedMemoryBytes[w.info.workerId] = this.s.pool.candidate(w).reservedMemoryBytes;
    }
    return { byState, reservedMemoryBytes };
  }

  /** Number of derivations ready and waiting for a worker. */
  readyCount(): number {
    return this.s.dag.ready.size;
  }

  /** The state storage should hold now (what the persist effects have written so far). */
  snapshot(): Snapshot {
    return takeSnapshot(this.s);
  }
}
