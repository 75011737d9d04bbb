// Build results and job cancellation.
import { complete, fail, isTerminal, type DrvRecord } from "./drv-state.js";
import { InvalidInputError } from "./errors.js";
import { cancelDrv, takeBack, type SchedulerState } from "./scheduler-state.js";
import type { BuildOutcome, BuildReport } from "./types.js";

/** How the scheduler treats a reported outcome. */
export type OutcomeClass = "done" | "failed" | "transient" | "oom" | "aborted";

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
    case "inputs-unavailable":
    case "upload-failed":
    case "worker-error":
    case "disk-full":
    case "timed-out":
      return "transient";
  }
}

/** Why a report cannot be accepted, or null when its lease is current. */
function staleness(s: SchedulerState, workerId: string, report: BuildReport): string | null {
  if (s.pool.get(workerId) === undefined) return `unknown worker ${workerId}`;
  const rec = s.dag.records.get(report.lease.drvPath);
  if (rec === undefined) return "unknown derivation";
  if (rec.state !== "building") return `derivation is ${rec.state}, not building`;
  if (rec.epoch !== report.lease.epoch) return `stale lease: epoch ${report.lease.epoch}, current is ${rec.epoch}`;
  if (rec.workerId !== workerId) return `leased to another worker`;
  return null;
}

function describe(report: BuildReport): string {
  return report.error === "" ? report.outcome : `${report.outcome}: ${report.error}`;
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
): void {
  const lease = report.lease;
  const stale = staleness(s, workerId, report);
  if (stale !== null) {
    s.sink.send({ kind: "ack", workerId, lease, accepted: false, reason: stale });
    s.sink.emit({ type: "build.rejected", atMs: now, workerId, lease, reason: stale });
    return;
  }
  const rec = s.dag.records.get(lease.drvPath)!;
  const w = s.pool.get(workerId)!;
  const node = s.dag.node(rec.drvPath);
  w.lastSeenMs = now;
  rec.durationMs = report.durationMs;
  rec.peakMemoryBytes = report.peakMemoryBytes;
  s.estimator.observe(node, {
    outcome: report.outcome,
    durationMs: report.durationMs,
    peakMemoryBytes: report.peakMemoryBytes,
    cores: report.cores,
  });
  s.pool.releaseLease(rec);
  const kind = classifyOutcome(report.outcome, outputsVerified);
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
      outOfMemory(s, rec, now, report.cores > 0 ? report.cores : rec.cores);
      break;
    case "transient": {
      // Only an unverified success is transient among the "succeeded" reports.
      const what = report.outcome === "succeeded" ? "upload-failed: outputs not verified in the cache" : describe(report);
      rec.transientFailures++;
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

// OOM retries do not use the transient budget: they halve cores, which usually lowers peak memory.
function outOfMemory(s: SchedulerState, rec: DrvRecord, now: number, cores: number): void {
  rec.oomKills++;
  rec.coreLimit = Math.max(1, Math.floor(cores / 2));
  if (rec.oomKills > s.config.maxOomRetries) {
    s.dag.apply(rec, now, () => fail(rec, now, `out of memory ${rec.oomKills} times (last with ${cores} cores)`));
  } else {
    takeBack(s, rec, now, `out of memory with ${cores} cores; next attempt gets at most ${rec.coreLimit}`);
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
