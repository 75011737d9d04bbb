// Writing the scheduler's state changes to the FarmStore, for the coordinator
// shell. While the store is away (NATS restarting) a write is retried until it
// lands, and the shell's serial queue waits behind it: no transition is lost or
// reordered, and no message leaves before its state is stored. The one thing a
// stall must not do is make workers look dead: their heartbeats were queued
// behind it, not missing. So after a stall, `holdsLosses` tells the shell to
// let workers catch up before it declares any of them lost.
import type { Logger } from "pino";
import type { Clock } from "../core/clock.js";
import type { Effect } from "../core/effects.js";
import { StoreConflictError } from "../core/errors.js";
import { applyEffects, type FarmStore } from "../store/farm-store.js";

/** How persistence retries; times in ms. */
export interface PersisterOptions {
  /** First wait after a failed write; doubles up to maxWaitMs. */
  minWaitMs?: number;
  maxWaitMs?: number;
  /** After a stall ends, no worker is declared lost for this long (the heartbeat timeout). */
  lossHoldMs: number;
}

/** Persists effects with retries and remembers when the store last stalled. */
export class Persister {
  private holdUntil = 0;
  /** Writes being retried now: the runner computes ahead of the store, so a tick may come while one is. */
  private retrying = 0;
  private stopped = false;

  constructor(
    private readonly store: FarmStore,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly opts: PersisterOptions,
    /** Called when the store says another coordinator wrote behind our back. */
    private readonly onFenced?: (err: Error) => void,
  ) {}

  /** Applies the persist effects and publishes the events; retries forever unless fenced. */
  async persist(what: string, effects: readonly Effect[]): Promise<void> {
    const started = this.clock.now();
    let retried = false; // counted in `retrying` from its first failure until it lands or gives up
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          await applyEffects(this.store, effects);
          if (attempt > 1) {
            const stalledMs = this.clock.now() - started;
            this.holdUntil = this.clock.now() + this.opts.lossHoldMs;
            this.logger.warn({ what, attempts: attempt, stalledMs, holdLossesMs: this.opts.lossHoldMs }, "state persisted again after a store outage");
          }
          return;
        } catch (err) {
          if (err instanceof StoreConflictError) {
            this.logger.fatal({ err, what }, "another coordinator changed the farm state; stopping");
            this.onFenced?.(err);
            throw err;
          }
          // Shutting down: a write that fails now would be retried against a closed store forever.
          if (this.stopped) throw err;
          if (!retried) this.retrying++;
          retried = true;
          const waitMs = Math.min(this.opts.maxWaitMs ?? 1000, (this.opts.minWaitMs ?? 100) * 2 ** Math.min(attempt - 1, 10));
          this.logger.warn({ err: (err as Error).message, what, attempt, waitMs }, "persisting state failed; retrying");
          await new Promise((r) => setTimeout(r, waitMs));
        }
      }
    } finally {
      if (retried) this.retrying--;
    }
  }

  /** From now on a failed write fails its event instead of being retried (the coordinator is stopping). */
  stop(): void {
    this.stopped = true;
  }

  /** True once stop() was called. */
  get isStopped(): boolean {
    return this.stopped;
  }

  /** True while workers' deadlines should not count: during a store stall, and just after it (it held their heartbeats back). */
  holdsLosses(now: number): boolean {
    return this.retrying > 0 || now < this.holdUntil;
  }
}
