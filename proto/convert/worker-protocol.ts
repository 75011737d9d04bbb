// The worker protocol (WorkerService.Connect) in both directions. The worker
// builds join, heartbeat, log, result and drain messages and reads assignments
// and leases; the coordinator reads the former and builds assignments. Every
// inbound value is validated against the farm's store dir and rejected with
// InvalidInputError, so nothing past this file sees a protobuf type.
import { InvalidInputError } from "../errors.js";
import { BuildStatus, type Assignment, type BuildOutput, type BuildResult, type DrainNotice, type Heartbeat, type Lease as WireLease, type WorkerJoin, type WorkerMessage } from "../gen/farm.js";
import type { AssignmentSpec, BuildOutcome, BuildReport, BuiltOutput, HeartbeatInfo, Lease, RunningUsage, WorkerInfo } from "../types.js";
import { isStoreBaseName } from "../nix/mod.js";
import { requireDrvPath, requireStorePath, isStorePath, SYSTEM, truncate } from "./store-paths.js";

/** Version of the worker protocol; a join or Welcome with another version is refused. 2: outputs may come inline. */
export const PROTOCOL_VERSION = 2;

/**
 * The largest NAR a worker sends inside its build report instead of uploading it, and the most a report
 * carries in all. Most of a graph's outputs are this small (wrappers, hooks, scripts); an upload of each
 * was an HTTP request, an authorization and a staged record more than the report itself.
 */
export const INLINE_NAR_MAX_BYTES = 64 << 10;
export const INLINE_NARS_MAX_BYTES = 1 << 20;

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
  declined: BuildStatus.BUILD_STATUS_DECLINED,
};
const STATUS_TO_OUTCOME = new Map(Object.entries(OUTCOME_TO_STATUS).map(([o, s]) => [s, o as BuildOutcome]));

/** The wire status of an outcome. */
export function outcomeToStatus(o: BuildOutcome): BuildStatus {
  return OUTCOME_TO_STATUS[o];
}

// ------------------------------------------------------------------ leases

/** A lease for the wire. */
function leaseToWire(l: Lease): WireLease {
  return { drvPath: l.drvPath, epoch: l.epoch };
}

/** Validates a lease: a .drv under `storeDir` and an epoch >= 1; `what` names the message it came in. */
export function leaseFromWire(l: WireLease | undefined, storeDir: string, what = "message"): Lease {
  if (!l || !l.drvPath) throw new InvalidInputError(`${what} without a lease`);
  requireDrvPath(l.drvPath, storeDir, what);
  if (!Number.isSafeInteger(l.epoch) || l.epoch < 1) throw new InvalidInputError(`${what}: lease has bad epoch ${l.epoch}`);
  return { drvPath: l.drvPath, epoch: l.epoch };
}

// -------------------------------------------------------------------- join

/** The first message of a connection (the worker's side). */
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
        nixVersion: info.nixVersion ?? "",
        nixSource: info.nixSource ?? "",
      },
    },
  };
}

/** A worker's free-text self-description, made safe to show: one line, no control characters, bounded. */
function plainText(s: string, max: number): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f]/g, " ").slice(0, max);
}

/** Validates a worker's join message (the coordinator's side). */
export function workerInfoFromJoin(j: WorkerJoin, storeDir: string): { info: WorkerInfo; running: Lease[] } {
  if (j.protocolVersion !== PROTOCOL_VERSION) {
    throw new InvalidInputError(`worker speaks protocol ${j.protocolVersion}, coordinator speaks ${PROTOCOL_VERSION}: upgrade one of them`);
  }
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(j.workerId)) throw new InvalidInputError(`bad worker id '${truncate(j.workerId)}'`);
  if (j.storeDir !== storeDir) throw new InvalidInputError(`worker store dir ${j.storeDir} differs from the farm's ${storeDir}`);
  if (j.systems.length === 0 || !j.systems.every((s) => SYSTEM.test(s))) throw new InvalidInputError("worker names no valid system");
  if (j.cores < 1 || j.maxBuilds < 1 || j.memoryBytes < 1) throw new InvalidInputError("worker reports no cores, slots or memory");
  return {
    info: {
      workerId: j.workerId,
      softwareVersion: j.softwareVersion,
      systems: [...j.systems],
      features: [...j.features],
      cores: j.cores,
      memoryBytes: j.memoryBytes,
      freeDiskBytes: j.freeDiskBytes,
      storeDir: j.storeDir,
      uptimeSeconds: j.uptimeSeconds,
      maxLifetimeSeconds: j.maxLifetimeSeconds,
      maxBuilds: j.maxBuilds,
      nixVersion: plainText(j.nixVersion, 40),
      nixSource: plainText(j.nixSource, 400),
    },
    running: j.running.map((l) => leaseFromWire(l, storeDir, "join")),
  };
}

// -------------------------------------------------------------- assignment

/** An assignment as a wire message (the coordinator's side). */
export function assignmentToWire(a: AssignmentSpec): Assignment {
  return { ...a, lease: a.lease, estimatedDurationMs: Math.max(0, Math.round(a.estimatedDurationMs ?? 0)), uploadCredential: a.uploadCredential ?? "" };
}

/** Checks and converts an assignment (the worker's side); an empty name is filled from the drv path. */
export function assignmentFromWire(a: Assignment, storeDir: string): AssignmentSpec {
  const lease = leaseFromWire(a.lease, storeDir, "assignment");
  const outputs = { ...a.outputs };
  const bad = [...Object.values(outputs), ...a.inputPaths].filter((p) => !isStorePath(p, storeDir));
  if (Object.keys(outputs).length === 0) throw new InvalidInputError(`assignment of ${lease.drvPath} names no outputs`);
  if (bad.length) throw new InvalidInputError(`assignment of ${lease.drvPath}: paths outside ${storeDir} (or not store paths): ${bad.slice(0, 3).map(truncate).join(", ")}`);
  return {
    lease,
    name: a.name || lease.drvPath.slice(storeDir.length + 34, -4),
    outputs,
    inputPaths: [...a.inputPaths],
    cores: Math.max(1, a.cores),
    memoryLimitBytes: a.memoryLimitBytes,
    timeoutMs: a.timeoutMs,
    estimatedDurationMs: a.estimatedDurationMs,
    ...(a.uploadCredential ? { uploadCredential: a.uploadCredential } : {}),
  };
}

// ------------------------------------------------------------------ result

/** A build report as a BuildResult message (the worker's side). */
export function resultToWire(r: BuildReport): WorkerMessage {
  checkMeasured(r.memoryNotMeasured === true, r.peakMemoryBytes);
  const result: BuildResult = {
    lease: leaseToWire(r.lease),
    status: outcomeToStatus(r.outcome),
    outputs: r.outputs.map((o) => ({ name: o.name, path: o.path, narHash: o.narHash, narSize: o.narSize, nar: o.inline ? Buffer.from(o.inline.nar.buffer, o.inline.nar.byteOffset, o.inline.nar.byteLength) : Buffer.alloc(0), references: o.inline?.references ?? [] })),
    durationMs: Math.round(r.durationMs),
    peakMemoryBytes: Math.round(r.peakMemoryBytes),
    cores: r.cores,
    error: r.error,
    memoryNotMeasured: r.memoryNotMeasured === true,
  };
  return { msg: { $case: "result", value: result } };
}

/** Validates a worker's build result (the coordinator's side). */
export function reportFromWire(r: BuildResult, storeDir: string): BuildReport {
  const outcome = STATUS_TO_OUTCOME.get(r.status);
  if (!outcome) throw new InvalidInputError(`build result has unknown status ${r.status}`);
  checkMeasured(r.memoryNotMeasured, r.peakMemoryBytes);
  return {
    lease: leaseFromWire(r.lease, storeDir, "result"),
    outcome,
    outputs: outputsFromWire(r.outputs, storeDir),
    durationMs: r.durationMs,
    peakMemoryBytes: r.peakMemoryBytes,
    ...(r.memoryNotMeasured ? { memoryNotMeasured: true } : {}),
    cores: r.cores,
    // Shown in `farm status` and logs: one line, no escape sequences, as the worker's other free text.
    error: truncate(plainText(r.error.split("\n")[0] ?? "", 1000)),
  };
}

/** Validates a result's outputs, and the size and references of those that come inline. */
function outputsFromWire(outputs: BuildOutput[], storeDir: string): BuiltOutput[] {
  let inlineBytes = 0;
  return outputs.map((o) => {
    requireStorePath(o.path, storeDir, "build output");
    if (!/^sha256:[0-9a-z]{52}$/.test(o.narHash)) throw new InvalidInputError(`output ${o.path}: bad NAR hash`);
    const built: BuiltOutput = { name: o.name, path: o.path, narHash: o.narHash, narSize: o.narSize };
    if (o.nar.length === 0) {
      if (o.references.length > 0) throw new InvalidInputError(`output ${o.path}: references without an inline NAR`);
      return built;
    }
    inlineBytes += o.nar.length;
    if (o.nar.length > INLINE_NAR_MAX_BYTES || inlineBytes > INLINE_NARS_MAX_BYTES) {
      throw new InvalidInputError(`output ${o.path}: inline NARs may be at most ${INLINE_NAR_MAX_BYTES} bytes each and ${INLINE_NARS_MAX_BYTES} in all; upload larger ones`);
    }
    if (o.nar.length !== o.narSize) throw new InvalidInputError(`output ${o.path}: inline NAR of ${o.nar.length} bytes, reported ${o.narSize}`);
    const bad = o.references.find((r) => !isStoreBaseName(r));
    if (bad !== undefined) throw new InvalidInputError(`output ${o.path}: bad reference '${truncate(bad)}'`);
    return { ...built, inline: { nar: o.nar, references: [...new Set(o.references)].sort() } };
  });
}

/** A result either measured its peak or says it did not; never both. */
function checkMeasured(notMeasured: boolean, peakMemoryBytes: number): void {
  if (notMeasured && peakMemoryBytes !== 0) throw new InvalidInputError(`build result says memory was not measured but carries a peak of ${peakMemoryBytes} bytes`);
}

// ------------------------------------------------- heartbeat, log, drain

/** A heartbeat message (the worker's side). */
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

/** Validates a heartbeat (the coordinator's side). */
export function heartbeatFromWire(hb: Heartbeat, storeDir: string): HeartbeatInfo {
  return {
    freeMemoryBytes: hb.freeMemoryBytes,
    freeDiskBytes: hb.freeDiskBytes,
    uptimeSeconds: hb.uptimeSeconds,
    running: hb.running.map((l) => leaseFromWire(l, storeDir)),
    usage: hb.usage.map((u) => ({ lease: leaseFromWire(u.lease, storeDir), memoryBytes: u.memoryBytes, peakMemoryBytes: u.peakMemoryBytes })),
  };
}

/** A batch of log lines (the worker's side). */
export function logToWire(lease: Lease, lines: string[]): WorkerMessage {
  return { msg: { $case: "log", value: { lease: leaseToWire(lease), lines } } };
}

/** A lease's builder is done and its outputs upload now (the worker's side). */
export function builtToWire(lease: Lease): WorkerMessage {
  return { msg: { $case: "built", value: { lease: leaseToWire(lease) } } };
}

/** The goodbye of a worker going away (the worker's side). */
export function drainToWire(reason: string, deadlineUnixMs: number, handedBack: Lease[]): WorkerMessage {
  return { msg: { $case: "drain", value: { reason, deadlineUnixMs, handedBack: handedBack.map(leaseToWire) } } };
}

/** Validates a drain notice (the coordinator's side). */
export function drainFromWire(d: DrainNotice, storeDir: string): { reason: string; deadlineUnixMs: number; handedBack: Lease[] } {
  return { reason: d.reason, deadlineUnixMs: d.deadlineUnixMs, handedBack: d.handedBack.map((l) => leaseFromWire(l, storeDir)) };
}
