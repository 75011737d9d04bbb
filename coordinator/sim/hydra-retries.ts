// Emulates Hydra's step retries for the "hydra-like" baseline: an OOM kill
// or a lost builder uses one of 5 retries, each after a backoff (60 s, x3);
// when they run out the step fails for good. The core has no such budget
// (it requeues lost work uncounted), so the simulator carries it: it tells
// this object about failures, a placement wrapper holds steps back until
// their backoff ends, and the shell fails a step whose budget is spent.
import type { PlacementDecision, PlacementPolicy, PlacementRequest } from "../core/placement.js";
import type { DrvPath } from "../core/types.js";

/** Hydra's retry settings. */
export interface HydraRetrySettings {
  maxRetries: number;
  firstBackoffMs: number;
  backoffFactor: number;
}

/** As the field notes describe Hydra: 5 retries, 60 s, x3. */
export const HYDRA_RETRIES: HydraRetrySettings = { maxRetries: 5, firstBackoffMs: 60_000, backoffFactor: 3 };

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
    const at = now + this.settings.firstBackoffMs * this.settings.backoffFactor ** (n - 1);
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

  constructor(
    private readonly inner: PlacementPolicy,
    private readonly retries: HydraRetries,
  ) {
    this.name = `${inner.name}+hydra-backoff`;
  }

  /** Defers to the inner policy unless the step is backing off. */
  place(req: PlacementRequest): PlacementDecision {
    if (this.retries.backingOff(req.node.drvPath, req.now)) return { ok: false, reason: "backing off after a failed attempt" };
    return this.inner.place(req);
  }
}
