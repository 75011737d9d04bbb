// The one place where wire messages become domain values and back. Every
// inbound message is validated here and rejected with InvalidInputError, so the
// core never sees generated proto types or unchecked input.
import type { BuildOutcome, BuildReport, AssignmentSpec, DrvNode, Lease, WorkerInfo } from "../coordinator/core/types.js";
import { BUILTIN_SYSTEM } from "../coordinator/core/types.js";
import { InvalidInputError } from "../coordinator/core/errors.js";
import * as wire from "./gen/farm.js";
import type { DrvStatusRow, JobStatusView, WorkerView } from "../coordinator/core/job-status.js";

/** Version of the worker protocol; a join with another version is refused. */
export const PROTOCOL_VERSION = 1;

const HASH = "[0123456789abcdfghijklmnpqrsvwxyz]{32}";
const NAME = "[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]*";

/** Whether `p` is a store path directly under `storeDir`. */
export function isStorePath(p: string, storeDir: string): boolean {
  return p.startsWith(storeDir + "/") && new RegExp(`^${HASH}-${NAME}$`).test(p.slice(storeDir.length + 1)) && p.length - storeDir.length < 220;
}

function requireStorePath(p: string, storeDir: string, what: string): string {
  if (!isStorePath(p, storeDir)) throw new InvalidInputError(`${what}: '${truncate(p)}' is not a store path under ${storeDir}`);
  return p;
}

function requireDrvPath(p: string, storeDir: string, what: string): string {
  requireStorePath(p, storeDir, what);
  if (!p.endsWith(".drv")) throw new InvalidInputError(`${what}: '${truncate(p)}' is not a .drv path`);
  return p;
}

const truncate = (s: string) => (s.length > 120 ? `${s.slice(0, 117)}...` : s);
const OUTPUT_NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;
const SYSTEM = /^[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*$/;

/** Validates one submitted DAG node against the farm's store dir. */
export function nodeFromWire(n: wire.DerivationNode, storeDir: string): DrvNode {
  const where = `derivation ${truncate(n.drvPath)}`;
  requireDrvPath(n.drvPath, storeDir, "derivation");
  if (!n.name) throw new InvalidInputError(`${where}: empty name`);
  if (n.system !== BUILTIN_SYSTEM && !SYSTEM.test(n.system)) throw new InvalidInputError(`${where}: bad system '${truncate(n.system)}'`);
  const outputs = Object.entries(n.outputs);
  if (outputs.length === 0) throw new InvalidInputError(`${where}: no outputs`);
  for (const [name, p] of outputs) {
    if (!OUTPUT_NAME.test(name)) throw new InvalidInputError(`${where}: bad output name '${truncate(name)}'`);
    requireStorePath(p, storeDir, `${where} output ${name}`);
  }
  return {
    drvPath: n.drvPath,
    name: n.name,
    pname: n.pname || n.name,
    version: n.version,
    system: n.system,
    outputs: { ...n.outputs },
    inputDrvs: n.inputDrvs.map((i) => {
      requireDrvPath(i.drvPath, storeDir, `${where} input`);
      if (i.outputs.length === 0 || !i.outputs.every((o) => OUTPUT_NAME.test(o))) {
        throw new InvalidInputError(`${where}: input ${truncate(i.drvPath)} names no valid output`);
      }
      return { drvPath: i.drvPath, outputs: [...i.outputs] };
    }),
    inputSrcs: n.inputSrcs.map((s) => requireStorePath(s, storeDir, `${where} source`)),
    fixedOutput: n.fixedOutput,
    requiredSystemFeatures: [...n.requiredSystemFeatures],
    preferLocalBuild: n.preferLocalBuild,
    allowSubstitutes: n.allowSubstitutes,
    enableParallelBuilding: n.enableParallelBuilding,
  };
}

/** A domain node as a wire message (the CLI's side of Submit). */
export function nodeToWire(n: DrvNode): wire.DerivationNode {
  return { ...n, inputDrvs: n.inputDrvs.map((i) => ({ drvPath: i.drvPath, outputs: i.outputs })) };
}

/** Validates a worker's join message. */
export function workerInfoFromJoin(j: wire.WorkerJoin, storeDir: string): { info: WorkerInfo; running: Lease[] } {
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
    },
    running: j.running.map((l) => leaseFromWire(l, storeDir)),
  };
}

/** Validates a lease. */
export function leaseFromWire(l: wire.Lease | undefined, storeDir: string): Lease {
  if (!l) throw new InvalidInputError("missing lease");
  requireDrvPath(l.drvPath, storeDir, "lease");
  if (!Number.isSafeInteger(l.epoch) || l.epoch < 1) throw new InvalidInputError(`lease has bad epoch ${l.epoch}`);
  return { drvPath: l.drvPath, epoch: l.epoch };
}

const OUTCOMES: Record<wire.BuildStatus, BuildOutcome | undefined> = {
  [wire.BuildStatus.BUILD_STATUS_UNSPECIFIED]: undefined,
  [wire.BuildStatus.BUILD_STATUS_SUCCEEDED]: "succeeded",
  [wire.BuildStatus.BUILD_STATUS_FAILED]: "failed",
  [wire.BuildStatus.BUILD_STATUS_OUT_OF_MEMORY]: "out-of-memory",
  [wire.BuildStatus.BUILD_STATUS_INPUTS_UNAVAILABLE]: "inputs-unavailable",
  [wire.BuildStatus.BUILD_STATUS_DISK_FULL]: "disk-full",
  [wire.BuildStatus.BUILD_STATUS_ABORTED]: "aborted",
  [wire.BuildStatus.BUILD_STATUS_UPLOAD_FAILED]: "upload-failed",
  [wire.BuildStatus.BUILD_STATUS_TIMED_OUT]: "timed-out",
  [wire.BuildStatus.BUILD_STATUS_WORKER_ERROR]: "worker-error",
  [wire.BuildStatus.UNRECOGNIZED]: undefined,
};

/** Wire status for a domain outcome (the worker's side). */
export function outcomeToWire(outcome: BuildOutcome): wire.BuildStatus {
  const entry = Object.entries(OUTCOMES).find(([, o]) => o === outcome);
  return Number(entry![0]) as wire.BuildStatus;
}

/** Validates a worker's build result. */
export function reportFromWire(r: wire.BuildResult, storeDir: string): BuildReport {
  const outcome = OUTCOMES[r.status];
  if (!outcome) throw new InvalidInputError(`build result has unknown status ${r.status}`);
  return {
    lease: leaseFromWire(r.lease, storeDir),
    outcome,
    outputs: r.outputs.map((o) => {
      requireStorePath(o.path, storeDir, "build output");
      if (!/^sha256:[0-9a-z]{52}$/.test(o.narHash)) throw new InvalidInputError(`output ${o.path}: bad NAR hash`);
      return { name: o.name, path: o.path, narHash: o.narHash, narSize: o.narSize };
    }),
    durationMs: r.durationMs,
    peakMemoryBytes: r.peakMemoryBytes,
    cores: r.cores,
    error: truncate(r.error.split("\n")[0] ?? ""),
  };
}

/** A domain build report as a wire message (the worker's side). */
export function reportToWire(r: BuildReport): wire.BuildResult {
  return { ...r, lease: r.lease, status: outcomeToWire(r.outcome) };
}

/** An assignment as a wire message. */
export function assignmentToWire(a: AssignmentSpec): wire.Assignment {
  return { ...a, lease: a.lease, estimatedDurationMs: Math.max(0, Math.round(a.estimatedDurationMs ?? 0)) };
}

/** The worker's view of an assignment. */
export function assignmentFromWire(a: wire.Assignment, storeDir: string): AssignmentSpec {
  return {
    lease: leaseFromWire(a.lease, storeDir),
    name: a.name,
    outputs: { ...a.outputs },
    inputPaths: a.inputPaths.map((p) => requireStorePath(p, storeDir, "assignment input")),
    cores: Math.max(1, a.cores),
    memoryLimitBytes: a.memoryLimitBytes,
    timeoutMs: a.timeoutMs,
    estimatedDurationMs: a.estimatedDurationMs,
  };
}

// ------------------------------------------------------------ status views


/** A derivation row as sent to the CLI. */
export function drvRowToWire(r: DrvStatusRow): wire.DerivationStatus {
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
  };
}
