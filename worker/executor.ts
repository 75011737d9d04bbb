// The seam between the worker's session (gRPC) and whatever runs a build: the
// real Nix executor, or the fake one used for load tests without Nix.
import { FarmError } from "../proto/errors.js";
import type { AssignmentSpec, BuildOutcome, BuildReport, Lease } from "../proto/types.js";

/** What a build needs from its surroundings. */
export interface ExecutorContext {
  /** The farm binary cache: inputs come from it, outputs go to it. */
  cacheUrl: string;
  /** Public key narinfos from the cache must be signed with ("name:base64"). */
  cachePublicKey: string;
  /** Aborts the build (kills its process tree); the report then says `aborted`. */
  signal: AbortSignal;
  /** Receives build log lines in batches (already capped and rate-limited). */
  onLog(lines: string[]): void;
  /** Receives the build's current memory use now and then. */
  onUsage?(bytes: number): void;
  /** The builder ended well and `narBytes` of outputs upload next: from now on the build needs no build slot. */
  onBuilt?(narBytes: number): void;
  /**
   * The lease and upload credential the build holds now: a coordinator may
   * re-assign a running build under a newer epoch (it is adopted), and the
   * cache accepts its outputs only under that one. Absent: the assignment's.
   */
  grant?(): UploadGrant;
}

/** What outputs are uploaded under. */
export interface UploadGrant {
  lease: Lease;
  uploadCredential?: string;
}

/** Runs one assignment. */
export interface Executor {
  /**
   * Runs the build and reports how it went. Never throws for build problems:
   * every failure maps onto a BuildOutcome with a one-line `error`.
   */
  run(assignment: AssignmentSpec, ctx: ExecutorContext): Promise<BuildReport>;
}

/** A report for an attempt that ended before or without producing outputs; no `peakMemoryBytes` = not measured. */
export function failureReport(a: AssignmentSpec, outcome: BuildOutcome, error: string, startedAt: number, peakMemoryBytes?: number): BuildReport {
  return {
    lease: a.lease,
    outcome,
    outputs: [],
    durationMs: Math.max(0, Date.now() - startedAt),
    ...memoryOf(peakMemoryBytes),
    cores: a.cores,
    error: oneLine(error),
  };
}

/** A report's memory fields for a peak that may not have been measured. */
export function memoryOf(peakMemoryBytes: number | undefined): Pick<BuildReport, "peakMemoryBytes" | "memoryNotMeasured"> {
  return peakMemoryBytes === undefined ? { peakMemoryBytes: 0, memoryNotMeasured: true } : { peakMemoryBytes };
}

/** Squeezes a message into one line of at most `max` characters. */
export function oneLine(text: string, max = 500): string {
  const line = text.replace(/\x1b\[[0-9;]*m/g, "").replace(/\s*\n\s*/g, " ").trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** A failure with a known outcome, thrown inside executors and caught at their edge. */
export class BuildStepError extends FarmError {
  constructor(readonly outcome: BuildOutcome, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
