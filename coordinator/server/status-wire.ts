// The coordinator's status views (core/job-status.ts) as the messages that
// `farm status` and `farm workers` read. Outbound only, so nothing to validate;
// it lives here rather than in proto/convert because its input is the core's
// read model, which the shared contract must not depend on.
import type { DrvStatusRow, JobStatusView, WorkerView } from "../core/job-status.js";
import type * as wire from "../../proto/gen/farm.js";

/** A derivation row as sent to the CLI. */
function drvRowToWire(r: DrvStatusRow): wire.DerivationStatus {
  return {
    drvPath: r.drvPath,
    name: r.name,
    state: r.cached ? "cached" : r.state,
    workerId: r.workerId ?? "",
    epoch: r.epoch,
    attempts: r.attempts,
    oomKills: r.oomKills,
    reason: r.reason,
    durationMs: r.durationMs,
    peakMemoryBytes: r.peakMemoryBytes,
    peakMemoryNotMeasured: r.peakMemoryNotMeasured,
    cores: r.cores,
    reservedMemoryBytes: r.reservedMemoryBytes,
    estimatedMemoryBytes: r.estimatedMemoryBytes ?? 0,
    estimatedDurationMs: r.estimatedDurationMs ?? 0,
    holdReason: r.holdReason,
    estimateSource: r.estimateSource ?? "",
    currentMemoryBytes: r.currentMemoryBytes,
    currentPeakMemoryBytes: r.currentPeakMemoryBytes,
    backupWorkerIds: [...r.backupWorkerIds],
    backupCopy: r.backupCopy,
  };
}

/** A job's status as sent to the CLI; `logTail` supplies the end of each failed build's log. */
export function jobStatusToWire(v: JobStatusView, logTail: (drvPath: string) => string[]): wire.JobStatus {
  return {
    jobId: v.jobId,
    description: v.description,
    state: v.state,
    counts: { ...v.counts },
    createdUnixMs: v.createdAtMs,
    finishedUnixMs: v.finishedAtMs ?? 0,
    etaMs: Math.round(v.etaMs),
    roots: v.roots,
    outputs: v.outputs.map((o) => ({ drvPath: o.drvPath, outputs: { ...o.outputs } })),
    failures: v.failures.map((f) => ({ drvPath: f.drvPath, name: f.name, reason: f.reason, logTail: logTail(f.drvPath) })),
    derivations: v.derivations.map(drvRowToWire),
  };
}

/** A worker as sent to the CLI. */
export function workerViewToWire(w: WorkerView): wire.WorkerStatus {
  return {
    workerId: w.workerId,
    state: w.state,
    systems: w.systems,
    features: w.features,
    cores: w.cores,
    memoryBytes: w.memoryBytes,
    freeMemoryBytes: w.freeMemoryBytes,
    freeDiskBytes: w.freeDiskBytes,
    uptimeSeconds: w.uptimeSeconds,
    remainingLifetimeSeconds: w.remainingLifetimeSeconds,
    lastSeenUnixMs: w.lastSeenMs,
    running: w.running.map(drvRowToWire),
    buildsDone: w.buildsDone,
    buildsFailed: w.buildsFailed,
    oomKills: w.oomKills,
    unreservedMemoryBytes: w.unreservedMemoryBytes,
    reservedMemoryBytes: w.reservedMemoryBytes,
    reservedCores: w.reservedCores,
    maxBuilds: w.maxBuilds,
    nixVersion: w.nixVersion,
    nixSource: w.nixSource,
  };
}
