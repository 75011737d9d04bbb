// Estimates of what a build will need. Placement reads memory and disk as
// functions of the cores it grants, priority reads durations; the scheduler
// feeds every reported attempt back through `observe`. The learned
// implementation lives in learned-estimator.ts.
import type { BuildOutcome, DrvNode } from "./types.js";

/** Where an estimate came from, most trustworthy first. */
export type EstimateSource = "history" | "heavy-table" | "big-parallel" | "fetch" | "local" | "default";

/** Evidence from an OOM kill: the build needs more than `bytes` at `cores`. */
export interface MemoryFloor {
  cores: number;
  bytes: number;
}

/**
 * Needs of a build as functions of its cores.
 *  memory(c)   = baseBytes + perCoreBytes * c   (each parallel job holds its own compiler)
 *  duration(c) = serialMs + parallelMs / c      (Amdahl: only part of the work spreads over cores)
 * OOM floors lift memory(c) further, scaled along the same line (see memoryAt).
 */
export interface ResourceModel {
  baseBytes: number;
  perCoreBytes: number;
  serialMs: number;
  parallelMs: number;
  /** Build directory plus outputs. */
  diskBytes: number;
  floors: MemoryFloor[];
  source: EstimateSource;
  /** True when memory comes from measurements (successes or OOM kills) rather than a guess. */
  measured: boolean;
  /** Successful builds the fit rests on (absent or 0: none). One measurement is one draw, so fewer widen memory headroom and lifetime slack. */
  successes?: number;
}

/** What a build is expected to need; null when unknown. Scalars are at the estimator's reference cores. */
export interface Estimate {
  memoryBytes: number | null;
  durationMs: number | null;
  /** The full model, when the estimator has one. */
  model?: ResourceModel;
}

/** One reported build attempt, as the estimator learns from it. */
export interface BuildObservation {
  outcome: BuildOutcome;
  durationMs: number;
  /** Peak memory of the build's process tree (at kill time for an OOM). */
  peakMemoryBytes: number;
  /** The worker did not measure the peak (a build shorter than its /proc sampling): memory teaches nothing. */
  memoryNotMeasured?: boolean;
  cores: number;
  /** The memory limit the build ran under; 0 or absent when none. */
  memoryLimitBytes?: number;
  /** Total NAR size of the outputs (successes only). */
  outputBytes?: number;
  /** When the attempt was reported (ms). */
  atMs?: number;
}

/** Learned needs at one core count (exponentially weighted). */
export interface CoreSample {
  cores: number;
  peakBytes: number;
  durationMs: number;
  /** Observations folded in. */
  n: number;
}

/** The durable, plain-JSON learned state of one estimate key (pname + version family). */
export interface LearnedEstimate {
  format: 1;
  key: string;
  samples: CoreSample[];
  oomFloors: MemoryFloor[];
  /** Weighted mean of output NAR bytes; 0 when unknown. */
  outputBytes: number;
  observations: number;
  updatedAtMs: number;
}

/** What importEstimates took and what it refused (with why). */
export interface ImportResult {
  imported: number;
  rejected: { index: number; reason: string }[];
}

/** Source of per-derivation estimates; must be pure (no I/O, no clock). */
export interface Estimator {
  /** Expected needs of a build of `node`. */
  estimate(node: DrvNode): Estimate;
  /** Learns from one reported attempt of `node`; returns the learned state to persist when it changed. */
  observe(node: DrvNode, observation: BuildObservation): LearnedEstimate | null | void;
  /** Everything learned, as plain data (estimators that learn). */
  exportEstimates?(): LearnedEstimate[];
  /** Loads stored learned state; malformed entries are skipped and reported (estimators that learn). */
  importEstimates?(values: readonly unknown[]): ImportResult;
}

/** The trivial estimator: knows nothing, learns nothing. */
export class NoEstimates implements Estimator {
  /** Always unknown. */
  estimate(): Estimate {
    return { memoryBytes: null, durationMs: null };
  }
  /** Ignores the observation. */
  observe(): null {
    return null;
  }
}

function lineAt(m: ResourceModel, cores: number): number {
  return m.baseBytes + m.perCoreBytes * cores;
}

/**
 * Peak memory expected at `cores`: the line, lifted by OOM floors. One floor
 * is scaled along the line (fewer cores, proportionally less memory); once
 * a second OOM shows the line's shape was wrong, floors hold as-is below
 * their core count (and still scale up above it: more cores never need less).
 */
export function memoryAt(m: ResourceModel, cores: number): number {
  const c = Math.max(1, cores);
  let need = lineAt(m, c);
  const distrustShape = m.floors.length >= 2;
  for (const f of m.floors) {
    const at = lineAt(m, f.cores);
    const scaled = at > 0 && !(distrustShape && c < f.cores) ? (f.bytes * lineAt(m, c)) / at : f.bytes;
    if (scaled > need) need = scaled;
  }
  // Ceil for safety, but not over float noise (1e-3 of a byte).
  return Math.ceil(need - 1e-3);
}

/** Wall time expected at `cores`. */
export function durationAt(m: ResourceModel, cores: number): number {
  return Math.round(m.serialMs + m.parallelMs / Math.max(1, cores));
}
