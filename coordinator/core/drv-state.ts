// The derivation state machine: one transition table and one named verb per
// move. Every state change of a DrvRecord goes through a verb here, so an
// illegal move (a scheduler bug) throws instead of silently corrupting state.
// Verbs mutate the record in place: at 100k derivations, copying on every
// change would cost more than it protects.
import { InvalidTransitionError } from "./errors.js";
import type { DrvPath, DrvState } from "./types.js";

/** Dynamic state of one derivation; the static facts live in its DrvNode. */
export interface DrvRecord {
  drvPath: DrvPath;
  state: DrvState;
  /** Fences results: grows on every lease and whenever a lease is taken back (requeue, cancel). */
  epoch: number;
  /** Worker holding (or that last held) the lease; null when never leased or requeued. */
  workerId: string | null;
  /** Leases granted so far (never reset). */
  attempts: number;
  /** Transient failures since the last revival; counted against maxTransientRetries. */
  transientFailures: number;
  /** OOM kills since the last revival; counted against maxOomRetries. */
  oomKills: number;
  /** Cap on cores for the next lease, set by an OOM kill; 0 = no cap. */
  coreLimit: number;
  /** Set by a disk-full attempt: the build needs more free disk than this (absent = no such evidence). */
  diskFloorBytes?: number;
  /** Longest an attempt ran before its worker was lost: the build takes longer than this (absent = no such evidence). */
  lostAfterMs?: number;
  /** Why it failed, was cancelled or was requeued; "" otherwise. */
  reason: string;
  /** Found in the cache rather than built here. */
  cached: boolean;
  startedAtMs: number | null;
  finishedAtMs: number | null;
  /** Measured by the worker on the last reported attempt. */
  durationMs: number;
  peakMemoryBytes: number;
  /** The last attempt's memory was not measured (peakMemoryBytes is 0 and means nothing); absent = measured. */
  peakMemoryNotMeasured?: boolean;
  /** Granted on the last lease. */
  cores: number;
  reservedMemoryBytes: number;
  /** Estimated disk reserved on the last lease (absent in records stored before it existed). */
  reservedDiskBytes?: number;
  /** Ids of every job that wants this derivation (running or finished). */
  jobs: string[];
  /** Global submission order; the last priority tie-break. */
  seq: number;
  /**
   * Backup copies: more attempts under the same lease on other workers (a backup
   * copy of a long build on an idle worker; the first success wins, and a
   * lost copy costs no retry while another runs). Absent when none.
   */
  backupCopies?: LeaseHolder[];
  /**
   * A success reported by an untrusted worker, waiting for a second build on
   * another worker to agree before anything is signed. Absent when none.
   */
  unconfirmed?: { workerId: string; narHashes: Record<string, string>; owner?: string; otherOwnerRequired?: boolean };
  /** Two builds disagreed: only a trusted worker may build it now. */
  needsTrustedWorker?: boolean;
  /** The primary holder's builder is done and it uploads the outputs (see LeaseHolder.uploading). */
  uploading?: boolean;
}

/** Whether trust rules out any worker for `rec` (when false, trustAllows is true for every worker). */
export function limitsWorkers(rec: DrvRecord): boolean {
  return rec.needsTrustedWorker === true || rec.unconfirmed !== undefined;
}

/** Whether `worker` may take `rec`: not the worker whose unconfirmed build waits for another, and a trusted one after a disagreement. */
export function trustAllows(rec: DrvRecord, worker: { workerId: string; trusted?: boolean; owner?: string }): boolean {
  if (rec.needsTrustedWorker && worker.trusted === false) return false;
  const u = rec.unconfirmed;
  if (u === undefined) return true;
  if (u.workerId === worker.workerId) return false;
  // Where the fleet had a worker of another owner, the confirming build comes from another owner.
  return !u.otherOwnerRequired || (worker.owner ?? worker.workerId) !== u.owner;
}

/** A worker running an attempt under a record's lease, with what it was granted. */
export interface LeaseHolder {
  workerId: string;
  cores: number;
  reservedMemoryBytes: number;
  reservedDiskBytes: number;
  startedAtMs: number;
  /**
   * Its builder ended well and it uploads the outputs: it holds the lease (its
   * result is still to come) but no build slot, cores or memory, so the worker
   * takes its next build beside the upload. The outputs' disk stays reserved.
   */
  uploading?: boolean;
}

/** The one table of legal derivation moves: from -> allowed targets. */
export const DRV_TRANSITIONS: Readonly<Record<DrvState, readonly DrvState[]>> = {
  waiting: ["ready", "done", "failed", "cancelled"],
  ready: ["building", "done", "cancelled"],
  building: ["ready", "done", "failed", "cancelled"],
  // Withdrawn: its outputs were unpublished (built by a worker no longer trusted).
  done: ["failed"],
  // A later job may want a failed or cancelled derivation again.
  failed: ["waiting", "ready", "done"],
  cancelled: ["waiting", "ready", "done"],
};

/** Every DrvState, in lifecycle order. */
export const DRV_STATES: readonly DrvState[] = ["waiting", "ready", "building", "done", "failed", "cancelled"];

/** True when `from -> to` is in the transition table. */
export function canTransition(from: DrvState, to: DrvState): boolean {
  return DRV_TRANSITIONS[from].includes(to);
}

/** True for states nothing moves out of without a new job (done, failed, cancelled). */
export function isTerminal(state: DrvState): boolean {
  return state === "done" || state === "failed" || state === "cancelled";
}

/** A fresh record in `waiting`; the scheduler computes its real starting state. */
export function newDrvRecord(drvPath: DrvPath, seq: number): DrvRecord {
  return {
    drvPath,
    state: "waiting",
    epoch: 0,
    workerId: null,
    attempts: 0,
    transientFailures: 0,
    oomKills: 0,
    coreLimit: 0,
    reason: "",
    cached: false,
    startedAtMs: null,
    finishedAtMs: null,
    durationMs: 0,
    peakMemoryBytes: 0,
    cores: 0,
    reservedMemoryBytes: 0,
    reservedDiskBytes: 0,
    jobs: [],
    seq,
  };
}

/**
 * A deep-enough copy for persistence (the scheduler keeps mutating its own).
 * Uploading marks are left out: after a restart a holder counts as building until its result.
 */
export function copyDrvRecord(rec: DrvRecord): DrvRecord {
  const { uploading: _primaryUploading, ...rest } = rec;
  const copy = { ...rest, jobs: [...rec.jobs] };
  if (rec.backupCopies !== undefined) copy.backupCopies = rec.backupCopies.map(({ uploading: _uploading, ...h }) => h);
  if (rec.unconfirmed !== undefined) copy.unconfirmed = { ...rec.unconfirmed, narHashes: { ...rec.unconfirmed.narHashes } };
  return copy;
}

/** The primary holder of a building record's lease (its own grant fields), or null when none. */
export function primaryHolder(rec: DrvRecord): LeaseHolder | null {
  if (rec.state !== "building" || rec.workerId === null) return null;
  return {
    workerId: rec.workerId,
    cores: rec.cores,
    reservedMemoryBytes: rec.reservedMemoryBytes,
    reservedDiskBytes: rec.reservedDiskBytes ?? 0,
    startedAtMs: rec.startedAtMs ?? 0,
    ...(rec.uploading ? { uploading: true } : {}),
  };
}

/** Every worker running an attempt under the record's lease: the primary first, then the backup copies. */
export function leaseHolders(rec: DrvRecord): LeaseHolder[] {
  const primary = primaryHolder(rec);
  return primary === null ? [] : [primary, ...(rec.backupCopies ?? [])];
}

/** The holder of the record's lease on `workerId`, if that worker runs an attempt under it. */
export function holderOn(rec: DrvRecord, workerId: string): LeaseHolder | undefined {
  return leaseHolders(rec).find((h) => h.workerId === workerId);
}

/** True when `workerId` runs an attempt under the record's current lease `epoch`. */
export function holdsLease(rec: DrvRecord, workerId: string, epoch: number): boolean {
  return rec.state === "building" && rec.epoch === epoch && holderOn(rec, workerId) !== undefined;
}

function move(rec: DrvRecord, verb: string, from: readonly DrvState[], to: DrvState): void {
  if (!from.includes(rec.state) || !canTransition(rec.state, to)) {
    throw new InvalidTransitionError("derivation", rec.drvPath, verb, rec.state);
  }
  rec.state = to;
}

/** waiting -> ready: every input is done. */
export function becomeReady(rec: DrvRecord): void {
  move(rec, "becomeReady", ["waiting"], "ready");
}

/** What a lease grants. */
export interface LeaseGrant {
  workerId: string;
  cores: number;
  memoryBytes: number;
  /** Estimated disk; 0 when unknown. */
  diskBytes?: number;
  now: number;
}

/** ready -> building under a new epoch; returns that epoch. */
export function lease(rec: DrvRecord, grant: LeaseGrant): number {
  move(rec, "lease", ["ready"], "building");
  rec.epoch += 1;
  rec.attempts += 1;
  rec.workerId = grant.workerId;
  rec.cores = grant.cores;
  rec.reservedMemoryBytes = grant.memoryBytes;
  rec.reservedDiskBytes = grant.diskBytes ?? 0;
  rec.startedAtMs = grant.now;
  rec.finishedAtMs = null;
  rec.reason = "";
  delete rec.uploading;
  return rec.epoch;
}

/** building stays building: the holder on `workerId` finished its build step and uploads (LeaseHolder.uploading). */
export function startUpload(rec: DrvRecord, workerId: string): void {
  if (rec.state !== "building" || holderOn(rec, workerId) === undefined) {
    throw new InvalidTransitionError("derivation", rec.drvPath, "startUpload", rec.state);
  }
  if (rec.workerId === workerId) rec.uploading = true;
  else rec.backupCopies = rec.backupCopies!.map((h) => (h.workerId === workerId ? { ...h, uploading: true } : h));
}

/** building stays building: another worker starts a copy under the same lease (same epoch). */
export function addBackupCopy(rec: DrvRecord, copy: LeaseHolder): void {
  if (rec.state !== "building" || rec.workerId === null || holderOn(rec, copy.workerId) !== undefined) {
    throw new InvalidTransitionError("derivation", rec.drvPath, "addBackupCopy", rec.state);
  }
  rec.backupCopies = [...(rec.backupCopies ?? []), { ...copy }];
}

/**
 * building stays building: the attempt on `workerId` ended (lost, handed
 * back, killed) while another holder carries the lease on. A lost primary
 * gives way to the oldest copy. The epoch is unchanged: the others' results stay current.
 */
export function dropHolder(rec: DrvRecord, workerId: string): void {
  const backupCopies = rec.backupCopies ?? [];
  if (rec.state !== "building" || backupCopies.length === 0 || holderOn(rec, workerId) === undefined) {
    throw new InvalidTransitionError("derivation", rec.drvPath, "dropHolder", rec.state);
  }
  if (rec.workerId === workerId) {
    const next = backupCopies[0];
    rec.workerId = next.workerId;
    rec.cores = next.cores;
    rec.reservedMemoryBytes = next.reservedMemoryBytes;
    rec.reservedDiskBytes = next.reservedDiskBytes;
    rec.startedAtMs = next.startedAtMs;
    if (next.uploading) rec.uploading = true;
    else delete rec.uploading;
    rec.backupCopies = backupCopies.slice(1);
  } else {
    rec.backupCopies = backupCopies.filter((h) => h.workerId !== workerId);
  }
  if (rec.backupCopies.length === 0) delete rec.backupCopies;
}

/** building -> done: outputs verified in the cache. */
export function complete(rec: DrvRecord, now: number): void {
  move(rec, "complete", ["building"], "done");
  delete rec.backupCopies;
  delete rec.uploading;
  delete rec.unconfirmed;
  delete rec.needsTrustedWorker;
  rec.finishedAtMs = now;
  rec.reason = "";
}

/** waiting|ready|failed|cancelled -> done: the outputs are already in the cache. */
export function markCached(rec: DrvRecord, now: number): void {
  move(rec, "markCached", ["waiting", "ready", "failed", "cancelled"], "done");
  rec.cached = true;
  rec.reason = "";
  rec.workerId = null;
  rec.finishedAtMs = now;
}

/** building -> ready: the lease is taken back (epoch++ fences the old one). Budgets are the caller's business. */
export function requeue(rec: DrvRecord, reason: string): void {
  move(rec, "requeue", ["building"], "ready");
  delete rec.backupCopies;
  delete rec.uploading;
  rec.epoch += 1;
  rec.workerId = null;
  rec.reason = reason;
}

/** building|waiting -> failed: its build failed for good, or (from waiting) a dependency failed. */
export function fail(rec: DrvRecord, now: number, reason: string): void {
  move(rec, "fail", ["building", "waiting"], "failed");
  delete rec.backupCopies;
  delete rec.uploading;
  rec.finishedAtMs = now;
  rec.reason = reason;
}

/** done -> failed: its outputs were withdrawn from the cache; a later job that wants it builds it again. */
export function withdraw(rec: DrvRecord, now: number, reason: string): void {
  move(rec, "withdraw", ["done"], "failed");
  rec.cached = false;
  rec.finishedAtMs = now;
  rec.reason = reason;
}

/** waiting|ready|building -> cancelled: no running job wants it. A building one's lease is fenced. */
export function cancel(rec: DrvRecord, now: number, reason: string): void {
  const wasBuilding = rec.state === "building";
  move(rec, "cancel", ["waiting", "ready", "building"], "cancelled");
  delete rec.backupCopies;
  delete rec.uploading;
  if (wasBuilding) rec.epoch += 1;
  rec.finishedAtMs = now;
  rec.reason = reason;
}

/** failed|cancelled -> waiting (or ready when `inputsDone`): a new job wants it; retry budgets restart. */
export function revive(rec: DrvRecord, inputsDone: boolean): void {
  move(rec, "revive", ["failed", "cancelled"], inputsDone ? "ready" : "waiting");
  rec.transientFailures = 0;
  rec.oomKills = 0;
  rec.reason = "";
  rec.workerId = null;
  rec.startedAtMs = null;
  rec.finishedAtMs = null;
}
