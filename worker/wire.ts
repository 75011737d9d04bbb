// Worker-side conversion between gRPC messages (proto/gen) and domain types.
// Everything the worker receives is checked here; nothing past this file sees
// a protobuf type.
import { InvalidInputError } from "../coordinator/core/errors.js";
import type { AssignmentSpec, BuildOutcome, BuildReport, Lease, WorkerInfo } from "../coordinator/core/types.js";
import { BuildStatus, type Assignment, type BuildResult, type Lease as WireLease, type WorkerMessage } from "../proto/gen/farm.js";

/** Protocol version this worker speaks. */
export const PROTOCOL_VERSION = 1;

const OUTCOME_TO_STATUS: Record<BuildOutcome, BuildStatus> = {
  succeeded: BuildStatus.BUILD_STATUS_SUCCEEDED,
  failed: BuildStatus.BUILD_STATUS_FAILED,
  "out-of-memory": BuildStatus.BUILD_STATUS_OUT_OF_MEMORY,
  "inputs-unavailable": BuildStatus.BUILD_STATUS_INPUTS_UNAVAILABLE,
  "disk-full": BuildStatus.BUILD_STATUS_DISK_FULL,
  aborted: BuildStatus.BUILD_STATUS_ABORTED,
  "upload-failed": BuildStatus.BUILD_STATUS_UPLOAD_FAILED,
  "timed-out": BuildStatus.BUILD_STATUS_TIMED_OUT,
  "worker-error": BuildStatus.BUILD_STATUS_WORKER_ERROR,
};

/** The wire status of an outcome. */
export function outcomeToStatus(o: BuildOutcome): BuildStatus {
  return OUTCOME_TO_STATUS[o];
}

/** A lease for the wire. */
export function leaseToWire(l: Lease): WireLease {
  return { drvPath: l.drvPath, epoch: l.epoch };
}

/** A lease from the wire; throws InvalidInputError when missing or empty. */
export function leaseFromWire(l: WireLease | undefined, what: string): Lease {
  if (!l || !l.drvPath) throw new InvalidInputError(`${what} without a lease`);
  if (!l.drvPath.startsWith("/") || !l.drvPath.endsWith(".drv")) throw new InvalidInputError(`${what}: '${l.drvPath}' is not a .drv store path`);
  return { drvPath: l.drvPath, epoch: Number(l.epoch) };
}

/** Checks and converts an Assignment. */
export function assignmentFromWire(a: Assignment): AssignmentSpec {
  const lease = leaseFromWire(a.lease, "assignment");
  const outputs = { ...a.outputs };
  const storeDir = lease.drvPath.slice(0, lease.drvPath.lastIndexOf("/"));
  const bad = [...Object.values(outputs), ...a.inputPaths].filter((p) => !p.startsWith(`${storeDir}/`));
  if (Object.keys(outputs).length === 0) throw new InvalidInputError(`assignment of ${lease.drvPath} names no outputs`);
  if (bad.length) throw new InvalidInputError(`assignment of ${lease.drvPath}: paths outside ${storeDir}: ${bad.slice(0, 3).join(", ")}`);
  return {
    lease,
    name: a.name || lease.drvPath.slice(storeDir.length + 34, -4),
    outputs,
    inputPaths: [...a.inputPaths],
    cores: Math.max(1, a.cores),
    memoryLimitBytes: a.memoryLimitBytes,
    timeoutMs: a.timeoutMs,
    estimatedDurationMs: a.estimatedDurationMs,
  };
}

/** A build report as a BuildResult message. */
export function resultToWire(r: BuildReport): WorkerMessage {
  const result: BuildResult = {
    lease: leaseToWire(r.lease),
    status: outcomeToStatus(r.outcome),
    outputs: r.outputs.map((o) => ({ name: o.name, path: o.path, narHash: o.narHash, narSize: o.narSize })),
    durationMs: Math.round(r.durationMs),
    peakMemoryBytes: Math.round(r.peakMemoryBytes),
    cores: r.cores,
    error: r.error,
  };
  return { msg: { $case: "result", value: result } };
}

/** The first message of a connection. */
export function joinToWire(info: WorkerInfo, running: Lease[]): WorkerMessage {
  return {
    msg: {
      $case: "join",
      value: {
        protocolVersion: PROTOCOL_VERSION,
        workerId: info.workerId,
        softwareVersion: info.softwareVersion,
        systems: info.systems,
        features: info.features,
        cores: info.cores,
        memoryBytes: info.memoryBytes,
        freeDiskBytes: info.freeDiskBytes,
        storeDir: info.storeDir,
        uptimeSeconds: info.uptimeSeconds,
        maxLifetimeSeconds: info.maxLifetimeSeconds,
        maxBuilds: info.maxBuilds,
        running: running.map(leaseToWire),
      },
    },
  };
}

/** Memory use of one running build, for heartbeats. */
export interface RunningUsage {
  lease: Lease;
  memoryBytes: number;
  peakMemoryBytes: number;
}

/** A heartbeat message. */
export function heartbeatToWire(h: { freeMemoryBytes: number; freeDiskBytes: number; uptimeSeconds: number; running: RunningUsage[] }): WorkerMessage {
  return {
    msg: {
      $case: "heartbeat",
      value: {
        freeMemoryBytes: h.freeMemoryBytes,
        freeDiskBytes: h.freeDiskBytes,
        uptimeSeconds: h.uptimeSeconds,
        running: h.running.map((u) => leaseToWire(u.lease)),
        usage: h.running.map((u) => ({ lease: leaseToWire(u.lease), memoryBytes: u.memoryBytes, peakMemoryBytes: u.peakMemoryBytes })),
      },
    },
  };
}

/** A batch of log lines. */
export function logToWire(lease: Lease, lines: string[]): WorkerMessage {
  return { msg: { $case: "log", value: { lease: leaseToWire(lease), lines } } };
}

/** The goodbye of a worker going away. */
export function drainToWire(reason: string, deadlineUnixMs: number, handedBack: Lease[]): WorkerMessage {
  return { msg: { $case: "drain", value: { reason, deadlineUnixMs, handedBack: handedBack.map(leaseToWire) } } };
}
