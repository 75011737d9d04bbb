// memory-fit: the default placement. A build goes only where
//  (a) system and features match,
//  (b) the worker's unreserved memory (its memory minus the reservations of
//      its running builds, minus a safety margin) covers the estimate at the
//      cores granted: the most cores (<= its unreserved cores, <= the record's
//      OOM cap) whose estimate fits (a measured one with its headroom, unless
//      no worker could give that), so a small worker runs a build with fewer
//      cores rather than into an OOM kill,
//  (c) its free disk, minus the estimated disk of its running builds, covers
//      the estimated disk,
//  (d) it lives long enough to finish (remaining lifetime >= duration + slack,
//      more slack for a duration measured only a few times, half the slack
//      once it has waited longer than the slack; a nearly fresh worker when
//      even a fresh one could not give that),
//      unless no worker does (see lifetimePolicy).
// A guess that fits no worker at all gets one try on an idle largest worker.
// Among those, the build finishes soonest there (most useful cores); ties go
// to the tightest memory fit (big holes stay free for big builds), or the
// roomiest after an OOM kill, then workerId.
import { memoryAt, durationAt, type ResourceModel } from "./estimator.js";
import { fleetLifetimeMs, lifetimeNeed, longestRemainingMs, patientNeed } from "./lifetime-need.js";
import { DEFAULT_MEMORY_FIT, mb, placementModel, safetyMargin, shortDuration, withHeadroom, type MemoryFitConfig } from "./memory-fit-config.js";
import {
  hasFreeSlot,
  noFitReason,
  platformMatches,
  type PlacementDecision,
  type PlacementPolicy,
  type PlacementRequest,
  type WorkerCandidate,
} from "./placement.js";
import type { WorkerInfo } from "./types.js";
import { remainingLifetimeMs, type WorkerRecord } from "./worker-state.js";

export { DEFAULT_MEMORY_FIT, mb, placementModel, safetyMargin, shortDuration, withHeadroom, type LifetimePolicy, type MemoryFitConfig } from "./memory-fit-config.js";

const MAX_CORES_TRIED = 256;
/** A build lost with its worker after running t is expected to need this times t (it had not finished). */
const LOST_ATTEMPT_FACTOR = 1.5;

/** How one worker would take the build. */
interface Fit {
  c: WorkerCandidate;
  cores: number;
  reservation: number;
  disk: number;
  durationMs: number;
  remainingMs: number;
  /** Unreserved memory left after this reservation. */
  leftover: number;
}

/** How fitOn judges every worker for one build. */
interface FitTerms {
  coreCap: number;
  now: number;
  /** This build was OOM-killed before. */
  afterOom: boolean;
  /** The need plus its headroom must fit the unreserved memory (else the bare need). */
  padded: boolean;
  /** This build filled a worker's disk before (it has a disk floor). */
  filledADisk: boolean;
}

/**
 * Whether `c`'s free disk can't hold `diskBytes`. 0 means not reported (the
 * wire can't tell unset from 0) and passes: the worker still refuses a build
 * that finds its disk full. Not for a build that already filled a disk: a
 * worker whose disk is full right now reports 0 too, so it needs known room.
 */
function lacksDisk(c: WorkerCandidate, diskBytes: number, filledADisk: boolean): boolean {
  if (c.worker.freeDiskBytes <= 0) return filledADisk;
  return diskBytes > c.worker.freeDiskBytes - (c.reservedDiskBytes ?? 0);
}

type Miss = { kind: "memory"; unreserved: number } | { kind: "disk"; freeDisk: number };

/** The active workers of the build's platform, free or busy: the dispatcher's list, or read off the candidates. */
function fleetOf(req: PlacementRequest): readonly WorkerRecord[] {
  if (req.fleet !== undefined) return req.fleet;
  return [...req.candidates, ...(req.busy ?? [])]
    .filter((c) => c.worker.state === "active" && platformMatches(c.worker.info, req.node.system, req.node.requiredSystemFeatures))
    .map((c) => c.worker);
}

/** What placement asks of a whole fleet. */
interface FleetFacts {
  largest: WorkerInfo | null;
  lifetimeMs: number;
}

/** Places builds by memory, disk and remaining lifetime, with cores chosen to fit. */
export class MemoryFit implements PlacementPolicy {
  readonly name = "memory-fit";
  readonly config: MemoryFitConfig;
  private readonly fleetFacts = new WeakMap<readonly WorkerRecord[], FleetFacts>();

  constructor(config: Partial<MemoryFitConfig> = {}) {
    this.config = { ...DEFAULT_MEMORY_FIT, ...config };
  }

  /** Memory a worker never hands out. */
  marginOf(info: WorkerInfo): number {
    return safetyMargin(info.memoryBytes, this.config);
  }

  /** Places `req.node` or says why it waits. */
  place(req: PlacementRequest): PlacementDecision {
    const estimated = placementModel(req.estimate);
    // A build that filled a worker's disk needs more than that worker had free, whatever the estimate says.
    const floor = req.record.diskFloorBytes ?? 0;
    const withDisk = floor > estimated.diskBytes ? { ...estimated, diskBytes: floor } : estimated;
    // An attempt lost with its worker ran that long unfinished: expect more (else it is lost again and again).
    const ranMs = (req.record.lostAfterMs ?? 0) * LOST_ATTEMPT_FACTOR;
    const model = ranMs > durationAt(withDisk, 1) ? { ...withDisk, serialMs: ranMs, parallelMs: 0 } : withDisk;
    const largest = this.largestWorker(req);
    // A measured need goes only where its headroom fits too (the worker kills a build at its
    // reservation, so a bare fit is an OOM coin flip), unless no worker could ever give it:
    // then it runs bare at one core, its smallest need, leaving whatever margin there is.
    const cramped = model.measured && largest !== null && this.withHeadroom(memoryAt(model, 1), model) > this.usable(largest);
    const coreCap = cramped ? 1 : req.record.coreLimit > 0 ? req.record.coreLimit : MAX_CORES_TRIED;
    const how: FitTerms = { coreCap, now: req.now, afterOom: req.record.oomKills > 0, padded: model.measured && !cramped, filledADisk: floor > 0 };
    const fits: Fit[] = [];
    const misses: Miss[] = [];
    for (const c of req.candidates) {
      const w = c.worker;
      if (!hasFreeSlot(c) || !platformMatches(w.info, req.node.system, req.node.requiredSystemFeatures)) continue;
      const r = this.fitOn(c, model, how);
      if ("kind" in r) misses.push(r);
      else fits.push(r);
    }
    if (fits.length === 0 && misses.length === 0) return { ok: false, reason: noFitReason(req.node, req.candidates) };
    let trial = false;
    if (fits.length === 0) {
      const t = this.guessTrial(req, model);
      if (t === null) return { ok: false, reason: this.missReason(req, model, misses) };
      if (typeof t === "string") return { ok: false, reason: t };
      fits.push(...t);
      trial = true;
    }
    return this.byLifetime(req, model, how, fits, trial, cramped);
  }

  /**
   * A guessed (never measured) need that fits no worker at all gets one try
   * on an idle worker of the largest size, at 1 core, with all that worker
   * can give: the guess may be pessimistic, and a build never tried never
   * learns. Its OOM kill (if any) is a measurement, and a measured need
   * beyond every worker fails. Null when this does not apply.
   */
  private guessTrial(req: PlacementRequest, model: ResourceModel): Fit[] | string | null {
    const largest = this.largestWorker(req);
    const need1 = memoryAt(model, 1);
    if (model.measured || largest === null || need1 <= this.usable(largest)) return null;
    const out: Fit[] = [];
    for (const c of req.candidates) {
      const info = c.worker.info;
      if (!hasFreeSlot(c) || !platformMatches(info, req.node.system, req.node.requiredSystemFeatures)) continue;
      if (this.usable(info) < this.usable(largest) || c.running > 0 || c.reservedMemoryBytes > 0) continue;
      if (lacksDisk(c, model.diskBytes, (req.record.diskFloorBytes ?? 0) > 0)) continue;
      const reservation = Math.floor(this.usable(info));
      const durationMs = durationAt(model, 1);
      out.push({ c, cores: 1, reservation, disk: model.diskBytes, durationMs, remainingMs: remainingLifetimeMs(c.worker, req.now), leftover: 0 });
    }
    if (out.length > 0) return out;
    return `needs ~${mb(need1)} MB at 1 core by a guess; largest worker has ${mb(largest.memoryBytes)} MB; waiting for one to be idle to try there`;
  }

  /** Picks among `fits` by remaining lifetime, or says what it waits for. */
  private byLifetime(req: PlacementRequest, model: ResourceModel, how: FitTerms, fits: Fit[], trial: boolean, cramped: boolean): PlacementDecision {
    const coreCap = how.coreCap;
    const slackFraction = this.config.lifetimeSlackFraction;
    const active = fleetOf(req);
    const fleetMs = this.factsOf(active).lifetimeMs;
    // A duration measured n times is known to about slack/n more: one draw may have been a short one,
    // and losing a long build with its worker costs far more than waiting for a fresher one.
    const n = model.successes ?? 0;
    const waitedMs = req.passedOverSinceMs === undefined ? 0 : req.now - req.passedOverSinceMs;
    const needOf = (durationMs: number) =>
      patientNeed(lifetimeNeed(n > 0 ? durationMs * (1 + slackFraction / n) : durationMs, fleetMs, slackFraction), durationMs, waitedMs, slackFraction);
    const soonest = Math.min(...fits.map((f) => f.durationMs));
    const need = needOf(soonest);
    const lasting = fits.filter((f) => needOf(f.durationMs).needMs <= f.remainingMs);
    // Beyond the fleet: the freshest. After an OOM kill (the need above the kill is unknown),
    // or with no room for headroom anywhere: the most room.
    const order = need.beyondFleet ? byFreshest : req.record.oomKills > 0 || cramped ? bySoonestThenRoomiest : bySoonestThenTightest;
    if (lasting.length > 0) return grant(lasting.sort(order)[0]);

    // No free worker lives long enough. Wait for a busy one that does, if any.
    const largest = trial ? this.largestWorker(req) : null;
    for (const b of req.busy ?? []) {
      const info = b.worker.info;
      // Only a worker that could take the build once free (with headroom where a free one would need it) is worth waiting for.
      const need1 = how.padded ? this.withHeadroom(memoryAt(model, 1), model) : memoryAt(model, 1);
      if (largest !== null ? this.usable(info) < this.usable(largest) : need1 > this.usable(info)) continue;
      const rem = remainingLifetimeMs(b.worker, req.now);
      if (needOf(durationAt(model, trial ? 1 : Math.min(info.cores, coreCap))).needMs <= rem) {
        return { ok: false, reason: `needs ~${shortDuration(soonest)}; waiting for worker ${info.workerId} (${shortDuration(rem)} left) to free a slot` };
      }
    }
    if (this.config.lifetimePolicy === "start-anyway") {
      return grant(fits.sort((a, b) => b.remainingMs - a.remainingMs || bySoonestThenTightest(a, b))[0]);
    }
    const longest = longestRemainingMs(active, req.now);
    if (need.beyondFleet) {
      return {
        ok: false,
        reason:
          `needs ~${shortDuration(soonest)}, more than a fresh worker's ${shortDuration(fleetMs)} allows with ${Math.round(slackFraction * 100)}% to spare; ` +
          `waiting for a worker with ${shortDuration(need.needMs)} left to start on the freshest (longest remaining now ${shortDuration(longest)})`,
      };
    }
    return {
      ok: false,
      reason: `needs ~${shortDuration(soonest)}, longest remaining worker lifetime is ${shortDuration(longest)}; waiting for a fresh worker`,
    };
  }

  /** `need` plus the headroom reserved above a measured need (see withHeadroom). */
  private withHeadroom(need: number, model: ResourceModel): number {
    return withHeadroom(need, model.successes, this.config);
  }

  /** What a worker can hand to builds: its memory minus the safety margin. */
  private usable(info: WorkerInfo): number {
    return info.memoryBytes - this.marginOf(info);
  }

  /** The active worker of the build's platform that can hand out the most memory, free or busy. */
  private largestWorker(req: PlacementRequest): WorkerInfo | null {
    return this.factsOf(fleetOf(req)).largest;
  }

  /**
   * The largest worker and the fleet's lifetime, once per fleet list: the worker pool keeps one list until
   * a worker joins, leaves or changes, and these were two walks of the whole fleet on every placement.
   */
  private factsOf(fleet: readonly WorkerRecord[]): FleetFacts {
    let facts = this.fleetFacts.get(fleet);
    if (facts === undefined) {
      let largest: WorkerInfo | null = null;
      let most = 0;
      for (const w of fleet) {
        const usable = this.usable(w.info);
        if (largest === null || usable > most) [largest, most] = [w.info, usable];
      }
      facts = { largest, lifetimeMs: fleetLifetimeMs(fleet) };
      this.fleetFacts.set(fleet, facts);
    }
    return facts;
  }

  private fitOn(c: WorkerCandidate, model: ResourceModel, { coreCap, now, afterOom, padded, filledADisk }: FitTerms): Fit | Miss {
    const info = c.worker.info;
    const margin = this.marginOf(info);
    const unreserved = info.memoryBytes - c.reservedMemoryBytes - margin;
    const maxCores = Math.min(coreCap, Math.max(1, info.cores - c.reservedCores));
    let cores = 0;
    let need = 0;
    for (let k = maxCores; k >= 1; k--) {
      need = memoryAt(model, k);
      if ((padded ? this.withHeadroom(need, model) : need) <= unreserved) {
        cores = k;
        break;
      }
    }
    if (cores === 0) return { kind: "memory", unreserved };
    if (lacksDisk(c, model.diskBytes, filledADisk)) return { kind: "disk", freeDisk: c.worker.freeDiskBytes - (c.reservedDiskBytes ?? 0) };
    // More room (up to guessedMemoryFactor x the need, within the worker's
    // per-slot share) for a guess (guesses are often low, and an OOM kill
    // costs a rebuild), after an OOM kill of this build (it was killed AT its
    // limit: how far above that it needs is unknown), and on a one-slot worker
    // (no other build could use the rest; the reservation is only the kill
    // limit there, and peaks vary). Other measured needs get just the
    // headroom, leaving room to pack other builds beside them.
    const share = (info.memoryBytes - margin) / Math.max(1, info.maxBuilds);
    const roomy = !model.measured || afterOom || info.maxBuilds <= 1;
    const generous = roomy ? Math.min(share, need * this.config.guessedMemoryFactor) : 0;
    const reservation = Math.floor(Math.min(unreserved, Math.max(this.withHeadroom(need, model), generous)));
    return {
      c,
      cores,
      reservation,
      disk: model.diskBytes,
      durationMs: durationAt(model, cores),
      remainingMs: remainingLifetimeMs(c.worker, now),
      leftover: unreserved - reservation,
    };
  }

  private missReason(req: PlacementRequest, model: ResourceModel, misses: readonly Miss[]): string {
    const need1 = memoryAt(model, 1);
    const largest = this.largestWorker(req);
    if (largest !== null && need1 > this.usable(largest)) {
      return `needs ~${mb(need1)} MB at 1 core; largest worker has ${mb(largest.memoryBytes)} MB; waiting for a bigger worker`;
    }
    const mem = misses.filter((m): m is Extract<Miss, { kind: "memory" }> => m.kind === "memory");
    if (mem.length === misses.length) {
      const most = Math.max(...mem.map((m) => m.unreserved));
      return `waiting for memory: needs ~${mb(need1)} MB at 1 core; most unreserved on a free worker is ${mb(Math.max(0, most))} MB`;
    }
    const disk = misses.filter((m): m is Extract<Miss, { kind: "disk" }> => m.kind === "disk");
    const most = Math.max(...disk.map((m) => m.freeDisk));
    return `waiting for disk: needs ~${mb(model.diskBytes)} MB; most free on a free worker is ${mb(Math.max(0, most))} MB`;
  }
}

function bySoonestThenTightest(a: Fit, b: Fit): number {
  if (a.durationMs !== b.durationMs) return a.durationMs - b.durationMs;
  if (a.leftover !== b.leftover) return a.leftover - b.leftover;
  return a.c.worker.info.workerId < b.c.worker.info.workerId ? -1 : 1;
}

function bySoonestThenRoomiest(a: Fit, b: Fit): number {
  if (a.durationMs !== b.durationMs) return a.durationMs - b.durationMs;
  if (a.reservation !== b.reservation) return b.reservation - a.reservation;
  return a.c.worker.info.workerId < b.c.worker.info.workerId ? -1 : 1;
}

function byFreshest(a: Fit, b: Fit): number {
  return b.remainingMs - a.remainingMs || bySoonestThenTightest(a, b);
}

function grant(f: Fit): PlacementDecision {
  return {
    ok: true,
    workerId: f.c.worker.info.workerId,
    cores: f.cores,
    memoryReservationBytes: f.reservation,
    diskReservationBytes: f.disk,
  };
}
