// Domain types that cross the wire: what the worker, the coordinator and the
// CLI say to each other, in the form the code works with. Nothing here knows
// about protobuf; proto/convert/ turns wire messages into these values (and
// back) and validates them. The coordinator's core re-exports them from
// coordinator/core/types.ts; the worker imports them from here.

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
  /** The Nix it builds with ("2.8.0"; "" from workers that don't say). */
  nixVersion?: string;
  /** Where that Nix came from: `host /usr/bin/nix-store`, or the farm cache's store path. */
  nixSource?: string;
  /**
   * Whether its outputs are signed on acceptance alone. Set by the coordinator
   * from the worker's token (never taken from the worker); absent = trusted.
   */
  trusted?: boolean;
  /** Who runs it, also from the token (absent = the worker itself). */
  owner?: string;
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
  | "worker-error"
  /** The worker refused the assignment and never started it. */
  | "declined";

export interface BuiltOutput {
  name: string;
  path: StorePath;
  narHash: string;
  narSize: number;
  /** A small output's NAR, sent in the report instead of uploaded (see INLINE_NAR_MAX_BYTES). */
  inline?: InlineNar;
}

/** An output's NAR carried in its build report, and what an upload's headers would have said of it. */
export interface InlineNar {
  nar: Uint8Array;
  /** Store base names. */
  references: string[];
}

/** A worker's report of one build attempt. */
export interface BuildReport {
  lease: Lease;
  outcome: BuildOutcome;
  outputs: BuiltOutput[];
  durationMs: number;
  /** Peak memory of the build's process tree; 0 when memoryNotMeasured. */
  peakMemoryBytes: number;
  /** True when nothing measured the build's memory (it ended between two /proc samples, or never ran): peakMemoryBytes means nothing. */
  memoryNotMeasured?: boolean;
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
  /** Lets the holder upload this lease's outputs only (minted by the coordinator's shell; absent inside the core). */
  uploadCredential?: string;
}

/** Memory use of one running build, as the worker reports it in heartbeats. */
export interface RunningUsage {
  lease: Lease;
  memoryBytes: number;
  peakMemoryBytes: number;
}

/** What a heartbeat tells the coordinator. */
export interface HeartbeatInfo {
  freeMemoryBytes: number;
  freeDiskBytes: number;
  uptimeSeconds: number;
  running: Lease[];
  /** Per running build, its memory now and its peak so far (optional: a worker may not measure). */
  usage?: RunningUsage[];
}
