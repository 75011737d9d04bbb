// What the scheduler asks its shell to do. The core never does I/O: each event
// method returns a list of Effects, and the live coordinator (or the
// simulator) carries them out in order.
import { copyDrvRecord, type DrvRecord } from "./drv-state.js";
import type { LearnedEstimate } from "./estimator.js";
import type { AssignmentSpec, DrvNode, DrvPath, DrvState, JobRecord, JobState, Lease } from "./types.js";

/** A typed event for NATS; `type` is the subject suffix (farm.events.<type>). */
export type FarmEvent =
  | { type: "job.submitted"; atMs: number; jobId: string; description: string; roots: DrvPath[]; total: number }
  | { type: "job.finished"; atMs: number; jobId: string; state: JobState }
  | {
      type: "drv.state";
      atMs: number;
      drvPath: DrvPath;
      from: DrvState | null;
      to: DrvState;
      epoch: number;
      workerId: string | null;
      reason: string;
    }
  | { type: "worker.joined"; atMs: number; workerId: string; adopted: number; aborted: number }
  | { type: "worker.disconnected"; atMs: number; workerId: string }
  | { type: "worker.draining"; atMs: number; workerId: string; deadlineMs: number; handedBack: number }
  | { type: "worker.lost"; atMs: number; workerId: string; requeued: DrvPath[] }
  | { type: "build.rejected"; atMs: number; workerId: string; lease: Lease; reason: string }
  /** A worker refused an assignment (it said its slots were taken): requeued at no cost, the worker waits for its next heartbeat. */
  | { type: "assignment.declined"; atMs: number; workerId: string; lease: Lease; reason: string }
  /** A backup copy of a long build started on another worker, under the same lease. */
  | { type: "drv.backup-copy-started"; atMs: number; drvPath: DrvPath; epoch: number; workerId: string; backupCopies: number }
  /** A backup copy gave its worker up to a derivation that had nowhere else to go. */
  | { type: "drv.backup-copy-preempted"; atMs: number; drvPath: DrvPath; epoch: number; workerId: string; forDrvPath: DrvPath }
  /** An untrusted worker's build succeeded; nothing is signed until another worker's build agrees. */
  | { type: "drv.unconfirmed"; atMs: number; drvPath: DrvPath; workerId: string }
  /** Two builds of it disagreed: nothing signed, a trusted worker builds it next. */
  | { type: "drv.trust-mismatch"; atMs: number; drvPath: DrvPath; workerId: string };

/** Every FarmEvent type string. */
export type FarmEventType = FarmEvent["type"];

/**
 * One thing for the shell to do. Within a returned list, persist effects come
 * first: apply them before sending messages, so a worker never holds a lease
 * (or an accepted result) the store does not know about.
 */
export type Effect =
  | { kind: "persistNodes"; nodes: DrvNode[] }
  | { kind: "persistDrvs"; records: DrvRecord[] }
  | { kind: "persistJob"; job: JobRecord }
  /** A learned estimate changed: store it (e.g. NATS KV, key = estimateStoreKey(estimate.key)). Advisory: losing one costs accuracy, not correctness. */
  | { kind: "persistEstimate"; estimate: LearnedEstimate }
  | { kind: "assign"; workerId: string; spec: AssignmentSpec }
  | { kind: "abort"; workerId: string; lease: Lease; reason: string }
  | { kind: "ack"; workerId: string; lease: Lease; accepted: boolean; reason: string }
  | { kind: "heartbeatAck"; workerId: string; deadlineMs: number }
  | { kind: "jobAccepted"; jobId: string; existing: boolean }
  | { kind: "event"; event: FarmEvent };

/** Effect of one kind, e.g. EffectOf<"assign">. */
export type EffectOf<K extends Effect["kind"]> = Extract<Effect, { kind: K }>;

/** Filters effects by kind (handy for shells and tests). */
export function effectsOf<K extends Effect["kind"]>(effects: readonly Effect[], kind: K): EffectOf<K>[] {
  return effects.filter((e): e is EffectOf<K> => e.kind === kind);
}

/**
 * Collects the effects of one event call: persists are batched (each record
 * once, copied at flush time so later mutation cannot leak into the shell).
 */
export class EffectSink {
  private nodes: DrvNode[] = [];
  private readonly drvs = new Map<DrvPath, DrvRecord>();
  private readonly jobs = new Map<string, JobRecord>();
  private readonly estimates = new Map<string, LearnedEstimate>();
  private messages: Effect[] = [];
  private events: Effect[] = [];

  /** New static nodes to store. */
  nodesAdded(nodes: DrvNode[]): void {
    for (const n of nodes) this.nodes.push(n);
  }

  /** A record changed; it will be persisted once at flush. */
  drvChanged(rec: DrvRecord): void {
    this.drvs.set(rec.drvPath, rec);
  }

  /** A job changed; it will be persisted once at flush. */
  jobChanged(job: JobRecord): void {
    this.jobs.set(job.jobId, job);
  }

  /** A learned estimate changed; the latest per key is persisted at flush. */
  estimateChanged(estimate: LearnedEstimate): void {
    this.estimates.set(estimate.key, estimate);
  }

  /** A message to a worker or a reply to the caller. */
  send(effect: Effect): void {
    this.messages.push(effect);
  }

  /** A FarmEvent to publish. */
  emit(event: FarmEvent): void {
    this.events.push({ kind: "event", event });
  }

  /** Returns everything collected, in apply order, and starts afresh. */
  flush(): Effect[] {
    const out: Effect[] = [];
    if (this.nodes.length > 0) out.push({ kind: "persistNodes", nodes: this.nodes });
    if (this.drvs.size > 0) out.push({ kind: "persistDrvs", records: [...this.drvs.values()].map(copyDrvRecord) });
    for (const job of this.jobs.values()) out.push({ kind: "persistJob", job: { ...job, roots: [...job.roots] } });
    for (const estimate of this.estimates.values()) out.push({ kind: "persistEstimate", estimate });
    // Loops, not push(...spread): a failure cascade can emit 100k events.
    for (const m of this.messages) out.push(m);
    for (const e of this.events) out.push(e);
    this.nodes = [];
    this.drvs.clear();
    this.jobs.clear();
    this.estimates.clear();
    this.messages = [];
    this.events = [];
    return out;
  }
}
