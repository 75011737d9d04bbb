// Worker lifecycle events: join (with lease adoption), heartbeat, disconnect,
// drain, and loss when a deadline passes.
import { holderOn, holdsLease, type DrvRecord } from "./drv-state.js";
import { InvalidInputError } from "./errors.js";
import { endAttempt, type SchedulerState } from "./scheduler-state.js";
import type { DrvPath, Lease, WorkerInfo } from "./types.js";
import {
  disconnect,
  drain,
  markLost,
  newWorkerRecord,
  rejoin,
  touch,
  type HeartbeatInfo,
  type WorkerRecord,
} from "./worker-state.js";

/** A worker's drain notice. */
export interface DrainNotice {
  /** Leases handed back unfinished. */
  handedBack: Lease[];
  /** When the worker will be gone (ms, same clock as `now`). */
  deadlineMs: number;
}

function knownWorker(s: SchedulerState, workerId: string): WorkerRecord {
  const w = s.pool.get(workerId);
  if (w === undefined) throw new InvalidInputError(`unknown worker ${workerId}: it must join first`);
  return w;
}

/** True when `lease` is the current lease of a building derivation and `workerId` runs an attempt under it. */
function isCurrent(s: SchedulerState, workerId: string, lease: Lease): boolean {
  const rec = s.dag.records.get(lease.drvPath);
  return rec !== undefined && holdsLease(rec, workerId, lease.epoch);
}

/** The records whose lease `w` holds, in the order it was granted them (a copy: ending an attempt changes the index). */
function heldRecords(s: SchedulerState, w: WorkerRecord): DrvRecord[] {
  return [...s.pool.leasesOf(w).keys()].map((p) => s.dag.records.get(p)!);
}

function leaseKey(l: Lease): string {
  return `${l.epoch}:${l.drvPath}`;
}

function checkInfo(info: WorkerInfo): void {
  if (typeof info.workerId !== "string" || info.workerId === "") throw new InvalidInputError("worker id is empty");
  if (!Array.isArray(info.systems) || !Array.isArray(info.features)) throw new InvalidInputError("systems/features must be lists");
  if (!(info.maxBuilds >= 0) || !(info.cores >= 0) || !(info.memoryBytes >= 0)) {
    throw new InvalidInputError(`worker ${info.workerId}: cores, memory and maxBuilds must be >= 0`);
  }
}

/**
 * A new or returning worker. Running leases that are still current are
 * adopted (the build carries on there); stale ones get an abort; leases we
 * thought it held but it no longer reports are requeued without counting.
 */
export function workerJoined(s: SchedulerState, now: number, info: WorkerInfo, running: Lease[]): void {
  checkInfo(info);
  const deadline = now + s.config.heartbeatTimeoutMs;
  let w = s.pool.get(info.workerId);
  if (w === undefined) {
    w = newWorkerRecord(info, now, deadline);
    s.pool.add(w);
  } else {
    rejoin(w, info, now, deadline);
  }
  const reported = new Set(running.map(leaseKey));
  for (const rec of heldRecords(s, w)) {
    if (reported.has(leaseKey({ drvPath: rec.drvPath, epoch: rec.epoch }))) continue;
    noteLostAttempt(rec, w.info.workerId, now);
    endAttempt(s, rec, w.info.workerId, now, `worker ${w.info.workerId} rejoined without it`);
  }
  let adopted = 0;
  let aborted = 0;
  for (const lease of running) {
    // A current lease is already held (the records say so): the build carries on there.
    if (isCurrent(s, w.info.workerId, lease)) {
      adopted++;
    } else {
      s.sink.send({ kind: "abort", workerId: w.info.workerId, lease, reason: "stale lease" });
      aborted++;
    }
  }
  s.sink.emit({ type: "worker.joined", atMs: now, workerId: w.info.workerId, adopted, aborted });
}

/** A heartbeat: moves the deadline (replied in a heartbeatAck effect); stale running leases get aborts. */
export function heartbeat(s: SchedulerState, now: number, workerId: string, hb: HeartbeatInfo): void {
  const w = knownWorker(s, workerId);
  if (w.state !== "active" && w.state !== "draining") {
    throw new InvalidInputError(`worker ${workerId} is ${w.state}: it must join again`);
  }
  let deadline = now + s.config.heartbeatTimeoutMs;
  // A draining worker is gone at its announced deadline, whatever it says after.
  if (w.drainDeadlineMs !== null) deadline = Math.min(deadline, w.drainDeadlineMs + s.config.heartbeatTimeoutMs);
  touch(w, now, deadline, hb);
  for (const lease of hb.running) {
    if (!isCurrent(s, workerId, lease)) s.sink.send({ kind: "abort", workerId, lease, reason: "stale lease" });
  }
  // Live memory of running builds, for status only (estimate vs measured).
  for (const u of hb.usage ?? []) {
    // The primary attempt's (a copy's memory would overwrite it).
    if (isCurrent(s, workerId, u.lease) && s.dag.records.get(u.lease.drvPath)!.workerId === workerId) {
      s.liveUsage.set(u.lease.drvPath, { epoch: u.lease.epoch, memoryBytes: u.memoryBytes, peakMemoryBytes: u.peakMemoryBytes });
    }
  }
  s.sink.send({ kind: "heartbeatAck", workerId, deadlineMs: deadline });
}

/** The worker's stream closed: it keeps its leases until its deadline (it may reconnect). */
export function workerDisconnected(s: SchedulerState, now: number, workerId: string): void {
  const w = knownWorker(s, workerId);
  if (w.state === "lost" || w.state === "disconnected") return; // already handled
  disconnect(w, now);
  s.sink.emit({ type: "worker.disconnected", atMs: now, workerId });
}

/** The worker is going away: no new work; handed-back leases requeue at once, uncounted. */
export function workerDraining(s: SchedulerState, now: number, workerId: string, notice: DrainNotice): void {
  const w = knownWorker(s, workerId);
  if (w.state !== "active" && w.state !== "draining") {
    throw new InvalidInputError(`worker ${workerId} is ${w.state}: it must join again`);
  }
  const deadline = Math.min(w.deadlineMs, notice.deadlineMs + s.config.heartbeatTimeoutMs);
  drain(w, now, notice.deadlineMs, deadline);
  let handedBack = 0;
  for (const lease of notice.handedBack) {
    if (!isCurrent(s, workerId, lease)) continue;
    endAttempt(s, s.dag.records.get(lease.drvPath)!, workerId, now, `handed back by draining worker ${workerId}`);
    handedBack++;
  }
  s.sink.emit({ type: "worker.draining", atMs: now, workerId, deadlineMs: notice.deadlineMs, handedBack });
}

/** Workers past their deadline become lost; their builds requeue at once (epoch++, no retry counted). */
export function loseOverdueWorkers(s: SchedulerState, now: number): void {
  for (const w of s.pool.overdue(now)) lose(s, now, w, "lost");
}

/** The worker's token was revoked: it is lost now (no waiting for its deadline) and its builds requeue at once. */
export function workerRevoked(s: SchedulerState, now: number, workerId: string): void {
  const w = s.pool.get(workerId);
  if (w === undefined || w.state === "lost") return;
  lose(s, now, w, "revoked");
}

/** The attempt on `workerId` ran until at least `aliveAtMs` unfinished: placement then expects it to take longer (see memory-fit). */
function noteLostAttempt(rec: DrvRecord, workerId: string, aliveAtMs: number): void {
  const holder = holderOn(rec, workerId);
  if (holder === undefined || rec.startedAtMs === null) return;
  rec.lostAfterMs = Math.max(rec.lostAfterMs ?? 0, aliveAtMs - holder.startedAtMs);
}

function lose(s: SchedulerState, now: number, w: WorkerRecord, why: "lost" | "revoked"): void {
  markLost(w);
  const requeued: DrvPath[] = [];
  for (const rec of heldRecords(s, w)) {
    noteLostAttempt(rec, w.info.workerId, w.lastSeenMs);
    if (endAttempt(s, rec, w.info.workerId, now, `worker ${w.info.workerId} ${why}`)) requeued.push(rec.drvPath);
  }
  s.sink.emit({ type: "worker.lost", atMs: now, workerId: w.info.workerId, requeued });
}
