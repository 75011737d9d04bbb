// Domain types shared by the coordinator core, its stores, the simulator and
// the CLI. Nothing here knows about protobuf, NATS or HTTP: proto/convert.ts
// turns wire messages into these values and validates them.

/** Absolute store path of a `.drv` file, e.g. /tmp/nix/store/<hash>-hello-2.10.drv */
export type DrvPath = string;
/** Absolute store path of a build output or source. */
export type StorePath = string;

/** The `system` of derivations that Nix runs inside itself (builtin:fetchurl). */
export const BUILTIN_SYSTEM = "builtin";

/** One derivation of a DAG, as read from its .drv file. Immutable once submitted. */
export interface DrvNode {
  drvPath: DrvPath;
  name: string;
  /** Package name without version; keys learned estimates across rebuilds. */
  pname: string;
  version: string;
  /** x86_64-linux, i686-linux, or `builtin`. */
  system: string;
  /** Output name -> output path. */
  outputs: Record<string, StorePath>;
  /** Input derivations and which of their outputs this one uses. */
  inputDrvs: InputDrv[];
  inputSrcs: StorePath[];
  /** Fixed-output (fetch) derivation: its output hash is known in advance. */
  fixedOutput: boolean;
  requiredSystemFeatures: string[];
  preferLocalBuild: boolean;
  allowSubstitutes: boolean;
  enableParallelBuilding: boolean;
}

export interface InputDrv {
  drvPath: DrvPath;
  outputs: string[];
}

/**
 * A derivation's life. Transitions live in drv-state.ts, nowhere else.
 *  waiting   - some input is not built yet
 *  ready     - every input is in the cache; queued for a worker
 *  building  - leased to a worker
 *  done      - every output verified in the cache (built here or found there)
 *  failed    - its build failed for good, or a dependency failed
 *  cancelled - no job wants it any more
 */
export type DrvState = "waiting" | "ready" | "building" | "done" | "failed" | "cancelled";

/**
 * A worker's life. Transitions live in worker-state.ts.
 *  active       - connected and heartbeating; takes work
 *  disconnected - stream closed; its leases are kept until the heartbeat deadline
 *  draining     - announced it is going away; takes no new work
 *  lost         - missed its deadline; its builds were requeued
 */
export type WorkerState = "active" | "disconnected" | "draining" | "lost";

export type JobState = "running" | "succeeded" | "failed" | "cancelled";

/** What a worker says about itself when it joins. */
export interface WorkerInfo {
  workerId: string;
  softwareVersion: string;
  systems: string[];
  features: string[];
  cores: number;
  memoryBytes: number;
  freeDiskBytes: number;
  storeDir: string;
  uptimeSeconds: number;
  /** 0 when the platform sets no lifetime. */
  maxLifetimeSeconds: number;
  maxBuilds: number;
}

/** The right to build one derivation; `epoch` fences stale results. */
export interface Lease {
  drvPath: DrvPath;
  epoch: number;
}

/** Outcome kinds of one build attempt; maps one-to-one onto proto BuildStatus. */
export type BuildOutcome =
  | "succeeded"
  | "failed"
  | "out-of-memory"
  | "inputs-unavailable"
  | "disk-full"
  | "aborted"
  | "upload-failed"
  | "timed-out"
  | "worker-error";

export interface BuiltOutput {
  name: string;
  path: StorePath;
  narHash: string;
  narSize: number;
}

/** A worker's report of one build attempt. */
export interface BuildReport {
  lease: Lease;
  outcome: BuildOutcome;
  outputs: BuiltOutput[];
  durationMs: number;
  peakMemoryBytes: number;
  cores: number;
  error: string;
}

/** What the coordinator asks a worker to do. */
export interface AssignmentSpec {
  lease: Lease;
  name: string;
  outputs: Record<string, StorePath>;
  /** Input output-paths to substitute from the cache before building. */
  inputPaths: StorePath[];
  cores: number;
  memoryLimitBytes: number;
  timeoutMs: number;
  /** Expected wall time at the granted cores, from the estimator; 0 or absent = unknown (a draining worker uses it). */
  estimatedDurationMs?: number;
}

/** The durable part of a job; which derivations it wants is recorded on each DrvRecord (`jobs`). */
export interface JobRecord {
  jobId: string;
  description: string;
  /** What was asked for (drv paths). */
  roots: DrvPath[];
  /** Same key from the same owner => same job; "" means none. */
  idempotencyKey: string;
  /** Name of the token that submitted it; only it and admins see or cancel the job ("" in records from before owners: admins only). */
  owner?: string;
  state: JobState;
  createdAtMs: number;
  /** null while running. */
  finishedAtMs: number | null;
}
