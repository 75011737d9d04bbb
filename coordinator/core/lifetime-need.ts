// How much remaining lifetime a worker needs to take a build. Normally the
// expected duration plus slack. But when not even a brand-new worker could
// give that (the build is nearly as long as the platform lets containers
// live, or a pessimistic guess says longer), waiting for such a worker would
// wait forever: then the freshest workers there are will do.
import { remainingLifetimeMs, type WorkerRecord } from "./worker-state.js";

/** What a build of some duration asks of a worker's remaining lifetime. */
export interface LifetimeNeed {
  /** Remaining lifetime (ms) a worker must have to take the build. */
  needMs: number;
  /** True when no worker, however fresh, could give duration + slack. */
  beyondFleet: boolean;
}

/** The longest lifetime a fresh one of `workers` has (Infinity when one sets none or there are none). */
export function fleetLifetimeMs(workers: Iterable<WorkerRecord>): number {
  let longest = 0;
  let any = false;
  for (const w of workers) {
    any = true;
    const s = w.info.maxLifetimeSeconds;
    if (!(s > 0)) return Infinity;
    longest = Math.max(longest, s * 1000);
  }
  return any ? longest : Infinity;
}

/**
 * Remaining lifetime needed for a build of `durationMs` on a platform whose
 * fresh workers live `fleetMs`. Beyond the fleet: a nearly fresh worker,
 * within half the slack of its full lifetime (every minute of uptime spent is
 * margin lost; demanding the full lifetime would wait forever, as a worker
 * has been up a little by the time it is offered work).
 */
export function lifetimeNeed(durationMs: number, fleetMs: number, slackFraction: number): LifetimeNeed {
  const withSlack = durationMs * (1 + slackFraction);
  if (withSlack <= fleetMs) return { needMs: withSlack, beyondFleet: false };
  return { needMs: fleetMs * (1 - slackFraction / 2), beyondFleet: true };
}

/**
 * What a build that has waited for a long-lived worker longer than the slack
 * would buy it (slack x duration) settles for: a worker that outlives the
 * estimate by half the slack. Waiting hours for a fresh worker of the right
 * size costs more than the margin saves, and backup copies insure the rest.
 * A build beyond the fleet never settles: only a nearly fresh worker can
 * finish it at all.
 */
export function patientNeed(need: LifetimeNeed, durationMs: number, waitedMs: number, slackFraction: number): LifetimeNeed {
  if (need.beyondFleet || waitedMs < durationMs * slackFraction) return need;
  return { needMs: Math.min(need.needMs, durationMs * (1 + slackFraction / 2)), beyondFleet: false };
}

/** The most remaining lifetime among `workers` at `now` (0 when none). */
export function longestRemainingMs(workers: Iterable<WorkerRecord>, now: number): number {
  let longest = 0;
  for (const w of workers) longest = Math.max(longest, remainingLifetimeMs(w, now));
  return longest;
}
