// The worker state machine: one transition table, one named verb per move.
// Which builds a worker runs is not kept here: the lease index derives it
// from the derivation records (see lease-index.ts).
import { InvalidTransitionError } from "./errors.js";
import type { HeartbeatInfo } from "../../proto/types.js";
import type { WorkerInfo, WorkerState } from "./types.js";

/** Dynamic state of one worker, keyed by its stable workerId. */
export interface WorkerRecord {
  info: WorkerInfo;
  state: WorkerState;
  joinedAtMs: number;
  lastSeenMs: number;
  /** The worker is lost when `now` passes this. */
  deadlineMs: number;
  /** Set by a drain notice: when the worker said it will be gone. */
  drainDeadlineMs: number | null;
  /** From the last heartbeat (join info until then). */
  freeMemoryBytes: number;
  freeDiskBytes: number;
  uptimeSeconds: number;
  /** When `uptimeSeconds` was reported. */
  uptimeAtMs: number;
  buildsDone: number;
  buildsFailed: number;
  oomKills: number;
  /**
   * It declined an assignment: it runs more than our leases say. No new work
   * until its next heartbeat (or join) has been reconciled with our leases.
   */
  declinedWork?: boolean;
}

/** The one table of legal worker moves: from -> allowed targets. */
export const WORKER_TRANSITIONS: Readonly<Record<WorkerState, readonly WorkerState[]>> = {
  // active -> active: a heartbeat, or a rejoin we had not noticed was a reconnect.
  active: ["active", "disconnected", "draining", "lost"],
  disconnected: ["active", "lost"],
  draining: ["active", "disconnected", "draining", "lost"],
  lost: ["active"],
};

/** Every WorkerState. */
export const WORKER_STATES: readonly WorkerState[] = ["active", "disconnected", "draining", "lost"];

/** True when `from -> to` is in the transition table. */
export function canWorkerTransition(from: WorkerState, to: WorkerState): boolean {
  return WORKER_TRANSITIONS[from].includes(to);
}

/**
 * Counts changes of any worker's state or info, in this process. Only caches
 * read it (WorkerPool.fleet): while it stands, no worker joined, left or changed
 * what it offers. Bumped where those fields change, so no caller can forget to.
 * Shared by every scheduler in the process: another's changes only cost a
 * relisting, never a stale answer.
 */
let workerChanges = 0;

/** See workerChanges. */
export function workerChangeCount(): number {
  return workerChanges;
}

function move(w: WorkerRecord, verb: string, from: readonly WorkerState[], to: WorkerState): void {
  if (!from.includes(w.state) || !canWorkerTransition(w.state, to)) {
    throw new InvalidTransitionError("worker", w.info.workerId, verb, w.state);
  }
  if (w.state !== to) workerChanges++;
  w.state = to;
}

/** A worker seen for the first time, active until `deadlineMs`. */
export function newWorkerRecord(info: WorkerInfo, now: number, deadlineMs: number): WorkerRecord {
  return {
    info,
    state: "active",
    joinedAtMs: now,
    lastSeenMs: now,
    deadlineMs,
    drainDeadlineMs: null,
    freeMemoryBytes: info.memoryBytes,
    freeDiskBytes: info.freeDiskBytes,
    uptimeSeconds: info.uptimeSeconds,
    uptimeAtMs: now,
    buildsDone: 0,
    buildsFailed: 0,
    oomKills: 0,
  };
}

/**
 * A worker known only from leases in a restored snapshot: disconnected until
 * it reconnects or `deadlineMs` passes. Its info is unknown (no systems, no slots).
 */
export function placeholderWorker(workerId: string, now: number, deadlineMs: number): WorkerRecord {
  const info: WorkerInfo = {
    workerId,
    softwareVersion: "",
    systems: [],
    features: [],
    cores: 0,
    memoryBytes: 0,
    freeDiskBytes: 0,
    storeDir: "",
    uptimeSeconds: 0,
    maxLifetimeSeconds: 0,
    maxBuilds: 0,
  };
  const w = newWorkerRecord(info, now, deadlineMs);
  w.state = "disconnected";
  workerChanges++;
  return w;
}

/** any -> active: the worker (re)joined with fresh info. Leases are reconciled by the caller. */
export function rejoin(w: WorkerRecord, info: WorkerInfo, now: number, deadlineMs: number): void {
  move(w, "rejoin", ["active", "disconnected", "draining", "lost"], "active");
  if (w.info !== info) workerChanges++;
  w.info = info;
  w.joinedAtMs = now;
  w.lastSeenMs = now;
  w.deadlineMs = deadlineMs;
  w.drainDeadlineMs = null;
  w.freeDiskBytes = info.freeDiskBytes;
  w.uptimeSeconds = info.uptimeSeconds;
  w.uptimeAtMs = now;
  delete w.declinedWork; // the join's running leases are reconciled in the same event
}

/** What a heartbeat reports (it crosses the wire, so it is defined with the contract). */
export type { HeartbeatInfo, RunningUsage as BuildUsage } from "../../proto/types.js";

/** Ms the worker has left before its platform ends it; Infinity when it sets no lifetime. */
export function remainingLifetimeMs(w: WorkerRecord, now: number): number {
  if (!(w.info.maxLifetimeSeconds > 0)) return Infinity;
  const aliveMs = w.uptimeSeconds * 1000 + Math.max(0, now - w.uptimeAtMs);
  return Math.max(0, w.info.maxLifetimeSeconds * 1000 - aliveMs);
}

/** active|draining stays put: a heartbeat arrived; moves the deadline. */
export function touch(w: WorkerRecord, now: number, deadlineMs: number, hb: HeartbeatInfo): void {
  move(w, "heartbeat", ["active", "draining"], w.state);
  w.lastSeenMs = now;
  w.deadlineMs = deadlineMs;
  w.freeMemoryBytes = hb.freeMemoryBytes;
  w.freeDiskBytes = hb.freeDiskBytes;
  w.uptimeSeconds = hb.uptimeSeconds;
  w.uptimeAtMs = now;
  delete w.declinedWork; // the heartbeat's running leases are reconciled in the same event
}

/** The worker declined an assignment: it takes no work until its next heartbeat or join. */
export function declineWork(w: WorkerRecord): void {
  w.declinedWork = true;
}

/** active|draining -> disconnected: the stream closed; leases are kept until the deadline. */
export function disconnect(w: WorkerRecord, now: number): void {
  move(w, "disconnect", ["active", "draining"], "disconnected");
  w.lastSeenMs = now;
}

/** active|draining -> draining: the worker announced it goes away at `drainDeadlineMs`; no new work. */
export function drain(w: WorkerRecord, now: number, drainDeadlineMs: number, deadlineMs: number): void {
  move(w, "drain", ["active", "draining"], "draining");
  w.lastSeenMs = now;
  w.drainDeadlineMs = drainDeadlineMs;
  w.deadlineMs = deadlineMs;
}

/** active|disconnected|draining -> lost: the deadline passed. The caller requeues its leases. */
export function markLost(w: WorkerRecord): void {
  move(w, "markLost", ["active", "disconnected", "draining"], "lost");
}
