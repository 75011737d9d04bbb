// Build results and job cancellation.
import { complete, fail, holderOn, isTerminal, leaseHolders, startUpload, type DrvRecord } from "./drv-state.js";
import { InvalidInputError } from "./errors.js";
import { memoryAt } from "./estimator.js";
import { mb, safetyMargin } from "./memory-fit.js";
import { platformMatches } from "./placement.js";
import { abortHolders, cancelDrv, endAttempt, takeBack, type SchedulerState } from "./scheduler-state.js";
import type { BuildOutcome, BuildReport, DrvNode, Lease } from "./types.js";
import { declineWork, type WorkerRecord } from "./worker-state.js";

/** How much more free disk than it filled a build that ran out of disk needs next time. */
const DISK_FLOOR_FACTOR = 1.25;

/** How the scheduler treats a reported outcome. */
export type OutcomeClass = "done" | "failed" | "transient" | "oom" | "aborted" | "declined";

/**
 * What the shell found of a success it could not publish on its own word: an
 * untrusted worker's build waits for a second one elsewhere ("unconfirmed"),
 * and two builds that disagree are rebuilt on a trusted worker ("mismatch").
 */
export type TrustVerdict = "unconfirmed" | "mismatch";

/** Classifies an outcome; a success whose outputs are not verified in the cache counts as upload-failed. */
export function classifyOutcome(outcome: BuildOutcome, outputsVerified: boolean): OutcomeClass {
  switch (outcome) {
    case "succeeded":
      return outputsVerified ? "done" : "transient";
    case "failed":
      return "failed";
    case "out-of-memory":
      return "oom";
    case "aborted":
      return "aborted";
    case "declined":
      return "declined";
    case "inputs-unavailable":
    case "upload-failed":
    case "worker-error":
    case "disk-full":
    case "timed-out":
      return "transient";
  }
}

/** Why a worker's word on `lease` (its result, its build step done) cannot be taken, or null when its lease is current. */
function staleness(s: SchedulerState, workerId: string, lease: Lease): string | null {
  if (s.pool.get(workerId) === undefined) return `unknown worker ${workerId}`;
  const rec = s.dag.records.get(lease.drvPath);
  if (rec === undefined) return "unknown derivation";
  if (rec.state !== "building") return `derivation is ${rec.state}, not building`;
  if (rec.epoch !== lease.epoch) return `stale lease: epoch ${lease.epoch}, current is ${rec.epoch}`;
  if (holderOn(rec, workerId) === undefined) return `leased to another worker`;
  return null;
}

function describe(report: BuildReport): string {
  return report.error === "" ? report.outcome : `${report.outcome}: ${report.error}`;
}

/**
 * A worker's builder of `lease` ended well and it now uploads the outputs: the
 * lease stays held (the result follows), but its slot, cores and memory are
 * free for the next build (LeaseHolder.uploading). A notice for a lease that is
 * no longer its own changes nothing: the result will say what happened.
 */
export function buildStepDone(s: SchedulerState, workerId: string, lease: Lease): void {
  if (staleness(s, workerId, lease) !== null) return;
  const rec = s.dag.records.get(lease.drvPath)!;
  if (holderOn(rec, workerId)!.uploading) return;
  s.dag.applyToHolders(rec, () => startUpload(rec, workerId));
}

/**
 * A worker's report of one attempt. Stale reports are rejected and change
 * nothing; accepted ones complete, fail (with dependents), or requeue the
 * derivation under the transient / OOM budgets. Always acknowledged.
 */
export function buildReported(
  s: SchedulerState,
  now: number,
  workerId: string,
  report: BuildReport,
  outputsVerified: boolean,
  trust?: TrustVerdict,
): void {
  const lease = report.lease;
  const stale = staleness(s, workerId, report.lease);
  if (stale !== null) {
    s.sink.send({ kind: "ack", workerId, lease, accepted: false, reason: stale });
    s.sink.emit({ type: "build.rejected", atMs: now, workerId, lease, reason: stale });
    return;
  }
  const rec = s.dag.records.get(lease.drvPath)!;
  const w = s.pool.get(workerId)!;
  w.lastSeenMs = now;
  if (report.outcome === "declined") return assignmentDeclined(s, rec, w, report, now);
  const node = s.dag.node(rec.drvPath);
  const holder = holderOn(rec, workerId)!;
  rec.durationMs = report.durationMs;
  rec.peakMemoryBytes = report.peakMemoryBytes;
  if (report.memoryNotMeasured) rec.peakMemoryNotMeasured = true;
  else if (rec.peakMemoryNotMeasured) delete rec.peakMemoryNotMeasured;
  const cores = report.cores > 0 ? report.cores : holder.cores;
  const learned = s.estimator.observe(node, {
    outcome: report.outcome,
    durationMs: report.durationMs,
    peakMemoryBytes: report.peakMemoryBytes,
    ...(report.memoryNotMeasured ? { memoryNotMeasured: true } : {}),
    cores,
    memoryLimitBytes: holder.reservedMemoryBytes,
    outputBytes: report.outputs.reduce((n, o) => n + o.narSize, 0),
    atMs: now,
  });
  if (learned) s.sink.estimateChanged(learned);
  if (report.outcome === "succeeded" && trust !== undefined) {
    awaitConfirmation(s, rec, workerId, report, now, trust);
    s.sink.send({ kind: "ack", workerId, lease, accepted: true, reason: "" });
    return;
  }
  const kind = classifyOutcome(report.outcome, outputsVerified);
  if (kind !== "done" && kind !== "failed" && leaseHolders(rec).length > 1) {
    // A build with a backup copy: the other copy carries on; this attempt costs no retry.
    if (kind === "oom") w.oomKills++;
    endAttempt(s, rec, workerId, now, describe(report));
    s.sink.send({ kind: "ack", workerId, lease, accepted: true, reason: "" });
    return;
  }
  // The lease ends here: the other copies of a build with a backup copy are no longer wanted.
  if (kind === "done" || kind === "failed") abortHolders(s, rec, kind === "done" ? `built on ${workerId}` : `failed on ${workerId}`, workerId);
  s.liveUsage.delete(rec.drvPath);
  switch (kind) {
    case "done":
      s.dag.apply(rec, now, () => complete(rec, now));
      w.buildsDone++;
      s.stats.builds++;
      s.stats.totalDurationMs += report.durationMs;
      break;
    case "failed":
      w.buildsFailed++;
      s.dag.apply(rec, now, () => fail(rec, now, report.error === "" ? "build failed" : report.error));
      break;
    case "oom":
      w.oomKills++;
      outOfMemory(s, rec, node, now, cores, Math.max(report.peakMemoryBytes, rec.reservedMemoryBytes));
      break;
    case "transient": {
      // Only an unverified success is transient among the "succeeded" reports.
      const what = report.outcome === "succeeded" ? "upload-failed: outputs not verified in the cache" : describe(report);
      rec.transientFailures++;
      // It filled that worker's disk: it needs more than the worker had free at best, so placement looks elsewhere.
      // A quarter more: garbage collection after the failure can leave that worker a little more room than it
      // had, and a retry there would only fill it again.
      if (report.outcome === "disk-full") rec.diskFloorBytes = Math.max(rec.diskFloorBytes ?? 0, Math.ceil(Math.max(w.info.freeDiskBytes, w.freeDiskBytes) * DISK_FLOOR_FACTOR) + 1);
      if (rec.transientFailures > s.config.maxTransientRetries) {
        s.dag.apply(rec, now, () => fail(rec, now, `gave up after ${rec.transientFailures} transient failures; last: ${what}`));
      } else {
        takeBack(s, rec, now, `retrying after ${what}`);
      }
      break;
    }
    case "aborted":
      takeBack(s, rec, now, "aborted by the worker");
      break;
  }
  s.sink.send({ kind: "ack", workerId, lease, accepted: true, reason: "" });
}

/**
 * The worker refused the assignment: it never ran, so it costs the derivation
 * nothing and teaches the estimator nothing. The worker and the coordinator
 * disagree about its free slots (an abort it never got, say), so it gets no
 * new work until its next heartbeat, whose running builds are reconciled
 * first (stale ones get an abort); the worker sends one at once.
 */
function assignmentDeclined(s: SchedulerState, rec: DrvRecord, w: WorkerRecord, report: BuildReport, now: number): void {
  const workerId = w.info.workerId;
  const reason = `declined by ${workerId}: ${report.error === "" ? "no reason given" : report.error}`;
  endAttempt(s, rec, workerId, now, reason);
  declineWork(w);
  s.sink.emit({ type: "assignment.declined", atMs: now, workerId, lease: report.lease, reason: report.error });
  s.sink.send({ kind: "ack", workerId, lease: report.lease, accepted: true, reason: "" });
}

/**
 * A success nothing may be signed for yet. Unconfirmed: it is remembered and
 * another worker builds it again (a backup copy already running carries on as
 * that second build). Mismatch: the two builds disagreed, so neither counts and
 * only a trusted worker may build it. Neither costs a retry.
 */
function awaitConfirmation(s: SchedulerState, rec: DrvRecord, workerId: string, report: BuildReport, now: number, trust: TrustVerdict): void {
  let reason: string;
  if (trust === "unconfirmed") {
    const owner = s.pool.get(workerId)?.info.owner ?? workerId;
    const otherOwnerRequired = [...s.pool.values()].some((w) => w.state !== "lost" && (w.info.owner ?? w.info.workerId) !== owner);
    rec.unconfirmed = { workerId, narHashes: Object.fromEntries(report.outputs.map((o) => [o.path, o.narHash])), owner, ...(otherOwnerRequired ? { otherOwnerRequired } : {}) };
    reason = `built on untrusted ${workerId}; waiting for another worker's build to confirm it`;
    s.sink.emit({ type: "drv.unconfirmed", atMs: now, drvPath: rec.drvPath, workerId });
  } else {
    const other = rec.unconfirmed?.workerId ?? "a trusted build";
    delete rec.unconfirmed;
    rec.needsTrustedWorker = true;
    reason = `outputs built on ${workerId} disagree with ${other}'s; nothing signed, rebuilding on a trusted worker`;
    s.sink.emit({ type: "drv.trust-mismatch", atMs: now, drvPath: rec.drvPath, workerId });
  }
  endAttempt(s, rec, workerId, now, reason);
  rec.reason = reason;
}

/** Memory of the largest worker (not lost) that runs `node`'s platform, or of any worker if none does; 0 if none is known. */
function largestWorkerMemory(s: SchedulerState, node: DrvNode): number {
  let matching = 0;
  let any = 0;
  for (const w of s.pool.values()) {
    if (w.state === "lost") continue;
    any = Math.max(any, w.info.memoryBytes);
    if (platformMatches(w.info, node.system, node.requiredSystemFeatures)) matching = Math.max(matching, w.info.memoryBytes);
  }
  return matching > 0 ? matching : any;
}

/** What a worker of `memoryBytes` can hand to builds (memory-fit's safety margin taken off). */
function usableMemory(s: SchedulerState, memoryBytes: number): number {
  return memoryBytes - safetyMargin(memoryBytes, s.config);
}

// An OOM kill is not a build failure: the estimator has raised the memory
// estimate (>= 1.25x the memory at the kill), and the next attempt gets at
// most half the cores, so placement reserves more memory, runs fewer parallel
// jobs, or picks a bigger worker. It has its own budget, not the transient
// one; and when even one core needs more than the largest worker can give,
// no retry can succeed, so it fails at once.
function outOfMemory(s: SchedulerState, rec: DrvRecord, node: DrvNode, now: number, cores: number, killedAtBytes: number): void {
  rec.oomKills++;
  rec.coreLimit = Math.max(1, Math.floor(cores / 2));
  const largest = largestWorkerMemory(s, node);
  const model = s.estimator.estimate(node).model;
  const hopeless = model !== undefined && largest > 0 && memoryAt(model, 1) > usableMemory(s, largest);
  if (rec.oomKills > s.config.maxOomRetries || hopeless) {
    const why = `needs more than ${mb(killedAtBytes)} MB; largest worker has ${mb(largest)} MB (out of memory ${rec.oomKills} times, last with ${cores} cores)`;
    s.dag.apply(rec, now, () => fail(rec, now, why));
  } else {
    takeBack(s, rec, now, `out of memory at ${mb(killedAtBytes)} MB with ${cores} cores; memory estimate raised, next attempt gets at most ${rec.coreLimit}`);
  }
}

/** Cancels a job: derivations no other running job wants are cancelled, running ones aborted. */
export function cancelJob(s: SchedulerState, now: number, jobId: string): void {
  const entry = s.book.get(jobId);
  if (entry === undefined) throw new InvalidInputError(`unknown job ${jobId}`);
  if (entry.record.state !== "running") return;
  s.book.finish(entry, "cancelled", now, s.sink);
  for (const p of entry.drvs) {
    const rec = s.dag.records.get(p)!;
    if (isTerminal(rec.state) || s.book.wantedByRunningJob(rec, jobId)) continue;
    cancelDrv(s, rec, now, `job ${jobId} cancelled`);
  }
}
