// Estimates of what a build will need, learned from history by smarter
// implementations (per pname). Placement and priority policies read them;
// the scheduler feeds every reported attempt back through `observe`.
import type { BuildOutcome, DrvNode } from "./types.js";

/** What a build is expected to need; null when unknown. */
export interface Estimate {
  memoryBytes: number | null;
  durationMs: number | null;
}

/** One reported build attempt, as the estimator learns from it. */
export interface BuildObservation {
  outcome: BuildOutcome;
  durationMs: number;
  peakMemoryBytes: number;
  cores: number;
}

/** Source of per-derivation estimates; must be pure (no I/O, no clock). */
export interface Estimator {
  /** Expected needs of a build of `node`. */
  estimate(node: DrvNode): Estimate;
  /** Learns from one reported attempt of `node`. */
  observe(node: DrvNode, observation: BuildObservation): void;
}

/** The trivial estimator: knows nothing, learns nothing. */
export class NoEstimates implements Estimator {
  /** Always unknown. */
  estimate(): Estimate {
    return { memoryBytes: null, durationMs: null };
  }
  /** Ignores the observation. */
  observe(): void {}
}
