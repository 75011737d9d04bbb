// The worker's one way of going away, whatever asked for it (SIGTERM from a
// platform recycling the container, or the worker's own planned end of life):
// a single drain with a single deadline, which every session honours, and a
// stop after the deadline so the worker stops reconnecting and exits.
import type { Logger } from "pino";
import { plannedEnd } from "./drain-plan.js";

/** Time after the drain deadline for the last notice and acks before the connect loop stops. */
const STOP_MARGIN_MS = 5000;

/** Drain and stop signals for the session and the connect loop. */
export class DrainControl {
  private readonly drainController = new AbortController();
  private readonly stopController = new AbortController();
  private deadlineMs = 0;
  private endOfLife?: NodeJS.Timeout;

  constructor(
    private readonly graceMs: number,
    private readonly logger: Logger,
    /** True when no build runs and no result awaits an ack: nothing to wait for. */
    private readonly idle: () => boolean = () => false,
  ) {}

  /** Aborted when draining starts; its reason says why. */
  get drain(): AbortSignal {
    return this.drainController.signal;
  }

  /** Aborted when the worker should stop reconnecting. */
  get stop(): AbortSignal {
    return this.stopController.signal;
  }

  /** When the worker will be gone (unix ms); only meaningful once draining. */
  deadline(): number {
    return this.deadlineMs;
  }

  /** Starts draining (the first call wins): builds that end by `deadlineMs` may finish. */
  begin(reason: string, deadlineMs = Date.now() + this.graceMs): void {
    if (this.drainController.signal.aborted) return;
    clearTimeout(this.endOfLife);
    this.deadlineMs = deadlineMs;
    this.logger.info({ reason, deadline: new Date(deadlineMs).toISOString() }, `${reason}: taking no more work; builds that finish in time may, the rest are handed back`);
    this.drainController.abort(reason);
    // A live session still delivers its notice (stop only ends waits between connections).
    if (this.idle()) this.stopController.abort(reason);
    else setTimeout(() => this.stopController.abort(reason), Math.max(0, deadlineMs - Date.now()) + STOP_MARGIN_MS).unref();
  }

  /**
   * A platform that ends the machine after `maxLifetimeSeconds`: start draining
   * one grace period before that, with the end as the deadline. No-op without a lifetime.
   */
  scheduleEndOfLife(uptimeSeconds: number, maxLifetimeSeconds: number, now = Date.now()): void {
    const plan = plannedEnd({ now, uptimeSeconds, maxLifetimeSeconds, graceMs: this.graceMs });
    if (!plan) return;
    this.logger.info({ endsAt: new Date(plan.endAtMs).toISOString(), drainsAt: new Date(plan.drainAtMs).toISOString() }, "platform lifetime known: will drain ahead of it");
    this.endOfLife = setTimeout(() => this.begin("end of the machine's lifetime", plan.endAtMs), plan.drainAtMs - now);
    this.endOfLife.unref();
  }
}
