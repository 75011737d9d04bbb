// Deciding what a worker that is going away does with its running builds, and
// when a worker with a known lifetime starts going away. Pure: times come in.
import type { Lease } from "../proto/types.js";

/** A running build as the drain decision sees it. */
export interface DrainCandidate {
  lease: Lease;
  startedAtMs: number;
  /** Expected duration from the assignment; 0 = unknown. */
  estimatedDurationMs: number;
}

/** Which builds may finish before the deadline and which go back at once. */
export interface DrainSplit {
  keep: Lease[];
  handBack: Lease[];
}

/**
 * A build expected to end after `deadlineMs` is handed back now, so another
 * worker starts it without waiting; one expected to end in time (or with no
 * estimate: the deadline decides) keeps running. A build already past its
 * estimate is expected to need as long again as it has overrun, at least a
 * tenth of the estimate, so a badly underestimated build is not kept forever.
 */
export function splitForDrain(builds: readonly DrainCandidate[], now: number, deadlineMs: number): DrainSplit {
  const split: DrainSplit = { keep: [], handBack: [] };
  for (const b of builds) {
    if (!(b.estimatedDurationMs > 0)) {
      split.keep.push(b.lease);
      continue;
    }
    const elapsed = Math.max(0, now - b.startedAtMs);
    const remaining = elapsed <= b.estimatedDurationMs ? b.estimatedDurationMs - elapsed : Math.max(elapsed - b.estimatedDurationMs, b.estimatedDurationMs / 10);
    (now + remaining <= deadlineMs ? split.keep : split.handBack).push(b.lease);
  }
  return split;
}

/** When a worker with a platform lifetime drains, and when it is gone. */
export interface PlannedEnd {
  /** Start draining here (ms, same clock as `now`). */
  drainAtMs: number;
  /** The platform ends the machine here. */
  endAtMs: number;
}

/**
 * The end of a machine that lives `maxLifetimeSeconds` and has been up
 * `uptimeSeconds` at `now`; draining starts `graceMs` (plus `marginMs` for the
 * last messages) before it. Null when the platform sets no lifetime.
 */
export function plannedEnd(opts: { now: number; uptimeSeconds: number; maxLifetimeSeconds: number; graceMs: number; marginMs?: number }): PlannedEnd | null {
  if (!(opts.maxLifetimeSeconds > 0)) return null;
  const endAtMs = opts.now + (opts.maxLifetimeSeconds - opts.uptimeSeconds) * 1000;
  return { endAtMs, drainAtMs: Math.max(opts.now, endAtMs - opts.graceMs - (opts.marginMs ?? 5000)) };
}
