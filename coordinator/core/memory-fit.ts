// memory-fit: the default placement. A build goes only where
//  (a) system and features match,
//  (b) the worker's unreserved memory (its memory minus the reservations of
//      its running builds, minus a safety margin) covers the estimate at the
//      cores granted: the most cores (<= its unreserved cores, <= the record's
//      OOM cap) whose estimate fits, so a small worker runs a build with fewer
//      cores rather than into an OOM kill,
//  (c) its free disk, minus the estimated disk of its running builds, covers
//      the estimated disk,
//  (d) it lives long enough to finish (remaining lifetime >= duration + slack),
//      unless no worker does (see lifetimePolicy).
// Among those, the build finishes soonest there (most useful cores); ties go
// to the tightest memory fit (big holes stay free for big builds), then workerId.
import { memoryAt, durationAt, type Estimate, type ResourceModel } from "./estimator.js";
import { DEFAULT_PRIORS, modelOf } from "./estimate-priors.js";
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
import { remainingLifetimeMs } from "./worker-state.js";

/** What to do when no worker lives long enough for a build. */
export type LifetimePolicy = "wait-for-fresh" | "start-anyway";

/** Tunables of memory-fit. */
export interface MemoryFitConfig {
  /** Memory kept free on every worker: the larger of this fraction of its memory ... */
  memorySafetyMarginFraction: number;
  /** ... and this many bytes. */
  memorySafetyMarginMinBytes: number;
  /** Reserve this much above the estimate when it fits (the worker kills a build at its reservation). */
  memoryHeadroomFraction: number;
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
  memoryHeadroomFraction: 0.2,
  guessedMemoryFactor: 2,
  lifetimePolicy: "wait-for-fresh",
  lifetimeSlackFraction: 0.1,
};

const MAX_CORES_TRIED = 256;

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

type Miss = { kind: "memory"; unreserved: number } | { kind: "disk"; freeDisk: number };

/** Megabytes (MiB), rounded, as status shows them. */
export function mb(bytes: number): number {
  return Math.round(bytes / 2 ** 20);
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
  if (est.memoryBytes !== null) Object.assign(m, { baseBytes: est.memoryBytes, perCoreBytes: 0 });
  if (est.durationMs !== null) Object.assign(m, { serialMs: est.durationMs, parallelMs: 0 });
  return m;
}

/** Places builds by memory, disk and remaining lifetime, with cores chosen to fit. */
export class MemoryFit implements PlacementPolicy {
  readonly name = "memory-fit";
  readonly config: MemoryFitConfig;

  constructor(config: Partial<MemoryFitConfig> = {}) {
    this.config = { ...DEFAULT_MEMORY_FIT, ...config };
  }

  /** Memory a worker never hands out. */
  marginOf(info: WorkerInfo): number {
    return Math.max(info.memoryBytes * this.config.memorySafetyMarginFraction, this.config.memorySafetyMarginMinBytes);
  }

  /** Places `req.node` or says why it waits. */
  place(req: PlacementRequest): PlacementDecision {
    const model = placementModel(req.estimate);
    const coreCap = req.record.coreLimit > 0 ? req.record.coreLimit : MAX_CORES_TRIED;
    const fits: Fit[] = [];
    const misses: Miss[] = [];
    for (const c of req.candidates) {
      const w = c.worker;
      if (!hasFreeSlot(w) || !platformMatches(w.info, req.node.system, req.node.requiredSystemFeatures)) continue;
      const r = this.fitOn(c, model, coreCap, req.now);
      if ("kind" in r) misses.push(r);
      else fits.push(r);
    }
    if (fits.length === 0 && misses.length === 0) return { ok: false, reason: noFitReason(req.node, req.candidates) };
    if (fits.length === 0) return { ok: false, reason: this.missReason(req, model, misses) };

    const slack = 1 + this.config.lifetimeSlackFraction;
    const lasting = fits.filter((f) => f.durationMs * slack <= f.remainingMs);
    if (lasting.length > 0) return grant(lasting.sort(bySoonestThenTightest)[0]);

    // No free worker lives long enough. Wait for a busy one that does, if any.
    const soonest = Math.min(...fits.map((f) => f.durationMs));
    for (const b of req.busy ?? []) {
      const info = b.worker.info;
      if (memoryAt(model, 1) > info.memoryBytes - this.marginOf(info)) continue;
      const rem = remainingLifetimeMs(b.worker, req.now);
      if (durationAt(model, Math.min(info.cores, coreCap)) * slack <= rem) {
        return { ok: false, reason: `needs ~${shortDuration(soonest)}; waiting for worker ${info.workerId} (${shortDuration(rem)} left) to free a slot` };
      }
    }
    if (this.config.lifetimePolicy === "start-anyway") {
      return grant(fits.sort((a, b) => b.remainingMs - a.remainingMs || bySoonestThenTightest(a, b))[0]);
    }
    const all = [...req.candidates, ...(req.busy ?? [])].filter((c) => c.worker.state === "active");
    const longest = Math.max(0, ...all.map((c) => remainingLifetimeMs(c.worker, req.now)));
    return {
      ok: false,
      reason: `needs ~${shortDuration(soonest)}, longest remaining worker lifetime is ${shortDuration(longest)}; waiting for a fresh worker`,
    };
  }

  private fitOn(c: WorkerCandidate, model: ResourceModel, coreCap: number, now: number): Fit | Miss {
    const info = c.worker.info;
    const margin = this.marginOf(info);
    const unreserved = info.memoryBytes - c.reservedMemoryBytes - margin;
    const maxCores = Math.min(coreCap, Math.max(1, info.cores - c.reservedCores));
    let cores = 0;
    let need = 0;
    for (let k = maxCores; k >= 1; k--) {
      need = memoryAt(model, k);
      if (need <= unreserved) {
        cores = k;
        break;
      }
    }
    if (cores === 0) return { kind: "memory", unreserved };
    // 0 means not reported (the wire cannot tell unset from 0); the worker still refuses a build that finds its disk full.
    const freeDisk = c.worker.freeDiskBytes - (c.reservedDiskBytes ?? 0);
    if (c.worker.freeDiskBytes > 0 && model.diskBytes > freeDisk) return { kind: "disk", freeDisk };
    // A guessed need gets more room (up to guessedMemoryFactor x the guess,
    // within the worker's per-slot share): guesses are often low, and an OOM
    // kill costs a rebuild. Measured needs get just the headroom.
    const share = (info.memoryBytes - margin) / Math.max(1, info.maxBuilds);
    const generous = model.measured ? 0 : Math.min(share, need * this.config.guessedMemoryFactor);
    const reservation = Math.floor(Math.min(unreserved, Math.max(need * (1 + this.config.memoryHeadroomFraction), generous)));
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
    let largest: WorkerInfo | null = null;
    for (const c of [...req.candidates, ...(req.busy ?? [])]) {
      const info = c.worker.info;
      if (c.worker.state !== "active" || !platformMatches(info, req.node.system, req.node.requiredSystemFeatures)) continue;
      if (largest === null || info.memoryBytes - this.marginOf(info) > largest.memoryBytes - this.marginOf(largest)) largest = info;
    }
    if (largest !== null && need1 > largest.memoryBytes - this.marginOf(largest)) {
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

function grant(f: Fit): PlacementDecision {
  return {
    ok: true,
    workerId: f.c.worker.info.workerId,
    cores: f.cores,
    memoryReservationBytes: f.reservation,
    diskReservationBytes: f.disk,
  };
}
