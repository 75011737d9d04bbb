// memory-fit's tunables and the small pure helpers it shares with the
// scheduler (OOM handling) and status: safety margin, placement model, units.
import type { Estimate, ResourceModel } from "./estimator.js";
import { DEFAULT_PRIORS, modelOf } from "./estimate-priors.js";

/** What to do when no worker lives long enough for a build. */
export type LifetimePolicy = "wait-for-fresh" | "start-anyway";

/** Tunables of memory-fit. */
export interface MemoryFitConfig {
  /** Memory kept free on every worker: the larger of this fraction of its memory ... */
  memorySafetyMarginFraction: number;
  /** ... and this many bytes, ... */
  memorySafetyMarginMinBytes: number;
  /**
   * ... but no more than this: a worker already offers only what its own
   * processes leave free, so the margin absorbs overshoot between memory
   * samples, which does not grow with RAM (10% of a 4 GiB worker would keep
   * a 3.7 GiB build off the largest worker of a small fleet).
   */
  memorySafetyMarginMaxBytes: number;
  /** Reserve this much above the estimate when it fits (the worker kills a build at its reservation), ... */
  memoryHeadroomFraction: number;
  /** ... and at least this many bytes (a fraction of a tiny need is no margin at all). */
  memoryHeadroomMinBytes: number;
  /** A guessed (unmeasured) need may reserve up to this times the guess, within the per-slot share. */
  guessedMemoryFactor: number;
  lifetimePolicy: LifetimePolicy;
  /** A build must fit in the remaining lifetime with this much to spare. */
  lifetimeSlackFraction: number;
}

/** Defaults of memory-fit. */
export const DEFAULT_MEMORY_FIT: MemoryFitConfig = {
  memorySafetyMarginFraction: 0.1,
  memorySafetyMarginMinBytes: 64 * 2 ** 20,
  memorySafetyMarginMaxBytes: 128 * 2 ** 20,
  memoryHeadroomFraction: 0.2,
  memoryHeadroomMinBytes: 32 * 2 ** 20,
  guessedMemoryFactor: 2,
  lifetimePolicy: "wait-for-fresh",
  lifetimeSlackFraction: 0.1,
};

/** Megabytes (MiB), rounded, as status shows them. */
export function mb(bytes: number): number {
  return Math.round(bytes / 2 ** 20);
}

/** Memory never handed out on a worker of `memoryBytes`: a fraction of it, within [min, max] bytes. */
export function safetyMargin(
  memoryBytes: number,
  c: Pick<MemoryFitConfig, "memorySafetyMarginFraction" | "memorySafetyMarginMinBytes" | "memorySafetyMarginMaxBytes">,
): number {
  const fraction = memoryBytes * c.memorySafetyMarginFraction;
  return Math.max(c.memorySafetyMarginMinBytes, Math.min(fraction, c.memorySafetyMarginMaxBytes));
}

/**
 * `need` plus the headroom reserved above a measured need: the configured
 * fraction times (1 + 1/n) for a need measured n times (a peak seen once may
 * have been a low draw, so twice the headroom; it settles to the fraction as
 * observations accumulate), and at least the minimum.
 */
export function withHeadroom(need: number, successes: number | undefined, c: Pick<MemoryFitConfig, "memoryHeadroomFraction" | "memoryHeadroomMinBytes">): number {
  const n = successes ?? 0;
  const fraction = c.memoryHeadroomFraction * (n > 0 ? 1 + 1 / n : 1);
  return need + Math.max(need * fraction, c.memoryHeadroomMinBytes);
}

/** A short human duration: 45s, 12m, 3h, 3h20m. */
export function shortDuration(ms: number): string {
  if (!Number.isFinite(ms)) return "unlimited";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.round(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
}

/** The model placement uses: the estimator's, else a flat one from its scalar, else the default prior. */
export function placementModel(est: Estimate): ResourceModel {
  if (est.model !== undefined) return est.model;
  const m = modelOf(DEFAULT_PRIORS.default, "default");
  // Another estimator's number is taken at its word (not a guess to try beyond every worker).
  if (est.memoryBytes !== null) Object.assign(m, { baseBytes: est.memoryBytes, perCoreBytes: 0, measured: true });
  if (est.durationMs !== null) Object.assign(m, { serialMs: est.durationMs, parallelMs: 0 });
  return m;
}
