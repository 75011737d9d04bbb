// Emulates Hydra's step retries for the "hydra-like" baseline: an OOM kill
// or a lost builder uses one of 5 retries, each after a backoff (60 s, x3);
// when they run out the step fails for good. The core has no such budget
// (it requeues lost work uncounted), so the simulator carries it: it tells
// this object about failures, a placement wrapper holds steps back until
// their backoff ends, and the shell fails a step whose budget is spent.
import { hasFreeSlot, platformMatches, type PlacementDecision, type PlacementPolicy, type PlacementRequest, type WorkerCandidate } from "../core/placement.js";
import { keyedRandom } from "./sim-random.js";
import type { DrvPath } from "../core/types.js";

/** Hydra's retry settings. */
export interface HydraRetrySettings {
  maxRetries: number;
  firstBackoffMs: number;
  backoffFactor: number;
  /** Longest backoff (Hydra has none; the patient variant caps it at the 5th retry's). */
  maxBackoffMs: number;
  /**
   * Among equally loaded idle machines, pick at random rather than the first
   * by name (else a retried step lands on the same too-small machine forever).
   */
  randomTieBreak: boolean;
}

/** As the field notes describe Hydra: 5 retries, 60 s, x3. */
export const HYDRA_RETRIES: HydraRetrySettings = { maxRetries: 5, firstBackoffMs: 60_000, backoffFactor: 3, maxBackoffMs: Infinity, randomTieBreak: false };

/**
 * A more generous baseline than Hydra: retries never run out (backoff capped
 * at 81 min, the 5th retry's). Where the faithful one gives up, this one
 * still gives a makespan to compare against.
 */
export const PATIENT_RETRIES: HydraRetrySettings = { maxRetries: Infinity, firstBackoffMs: 60_000, backoffFactor: 3, maxBackoffMs: 60_000 * 3 ** 4, randomTieBreak: true };

/** Per-step retry counts and backoff deadlines. */
export class HydraRetries {
  private readonly used = new Map<DrvPath, number>();
  private readonly notBefore = new Map<DrvPath, number>();

  constructor(readonly settings: HydraRetrySettings = HYDRA_RETRIES) {}

  /** A failed attempt at `now`; returns when the step may run again (null when out of retries). */
  failed(drvPath: DrvPath, now: number): number | null {
    const n = (this.used.get(drvPath) ?? 0) + 1;
    this.used.set(drvPath, n);
    if (n > this.settings.maxRetries) return null;
    const at = now + Math.min(this.settings.maxBackoffMs, this.settings.firstBackoffMs * this.settings.backoffFactor ** (n - 1));
    this.notBefore.set(drvPath, at);
    return at;
  }

  /** True when the step has no retries left. */
  exhausted(drvPath: DrvPath): boolean {
    return (this.used.get(drvPath) ?? 0) > this.settings.maxRetries;
  }

  /** True while the step waits out its backoff. */
  backingOff(drvPath: DrvPath, now: number): boolean {
    return now < (this.notBefore.get(drvPath) ?? 0);
  }

  /** Retries used by `drvPath`. */
  retriesUsed(drvPath: DrvPath): number {
    return this.used.get(drvPath) ?? 0;
  }
}

/** Wraps a placement policy: steps in backoff are not placed yet. */
export class BackoffPlacement implements PlacementPolicy {
  readonly name: string;

  /** `seed` keys the random tie-break (per step and attempt), when the settings ask for one. */
  constructor(
    private readonly inner: PlacementPolicy,
    private readonly retries: HydraRetries,
    private readonly seed = 0,
  ) {
    this.name = `${inner.name}+hydra-backoff`;
  }

  /** Defers to the inner policy unless the step is backing off. */
  place(req: PlacementRequest): PlacementDecision {
    if (this.retries.backingOff(req.node.drvPath, req.now)) return { ok: false, reason: "backing off after a failed attempt" };
    if (!this.retries.settings.randomTieBreak || req.candidates.length < 2) return this.inner.place(req);
    const load = (c: WorkerCandidate) => c.running / Math.max(1, c.worker.info.maxBuilds);
    const usable = req.candidates.filter((c) => hasFreeSlot(c) && platformMatches(c.worker.info, req.node.system, req.node.requiredSystemFeatures));
    if (usable.length < 2) return this.inner.place(req);
    const least = Math.min(...usable.map(load));
    const ties = usable.filter((c) => load(c) === least);
    const pick = ties[Math.floor(keyedRandom(this.seed, `${req.node.drvPath}#${req.record.attempts}`).next() * ties.length)];
    return this.inner.place({ ...req, candidates: [pick] });
  }
}
