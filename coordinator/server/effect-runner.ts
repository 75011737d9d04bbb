// The effect runner: core events run one at a time, in arrival order. Each
// event's effects are persisted before any of them is delivered, so no worker
// ever holds a lease (or an accepted result) the store doesn't know.
import type { Clock } from "../core/clock.js";
import type { Effect } from "../core/effects.js";
import { SerialQueue } from "../store/farm-store.js";
import { assignmentToWire } from "../../proto/convert/mod.js";
import type { CoordinatorMessage } from "../../proto/gen/farm.js";

/** Where an event's effects are stored before delivery (the Persister). */
export interface EffectStore {
  persist(what: string, effects: readonly Effect[]): Promise<void>;
}

/** Runs core events serially: compute, persist, deliver. */
export class EffectRunner {
  private readonly queue = new SerialQueue();

  constructor(
    private readonly clock: Clock,
    private readonly store: EffectStore,
    private readonly deliver: (effects: Effect[]) => void,
    /** Told of an event whose synchronous part (compute, or deliver) held the event loop over SLOW_EVENT_MS. */
    private readonly onSlow?: (what: string, part: "compute" | "deliver", ms: number) => void,
  ) {}

  private timed(what: string, part: "compute" | "deliver", since: number): number {
    const ms = performance.now() - since;
    if (ms > SLOW_EVENT_MS) this.onSlow?.(what, part, ms);
    return ms;
  }

  /** Resolves once every event queued so far has run. */
  idle(): Promise<void> {
    return this.queue.run(async () => undefined);
  }

  /** Runs one core event; `first` sees the stored effects before delivery and returns what is left to deliver. */
  step(what: string, event: (now: number) => Effect[], first?: (effects: Effect[]) => Effect[]): Promise<Effect[]> {
    return this.stepAfter(what, async () => undefined, (now) => event(now), first);
  }

  /** Like step, with an async `prepare` in the same turn: nothing else runs between it and the event that gets its answer. */
  stepAfter<T>(what: string, prepare: () => Promise<T>, event: (now: number, prepared: T) => Effect[], first?: (effects: Effect[]) => Effect[]): Promise<Effect[]> {
    return this.queue.run(async () => {
      const prepared = await prepare();
      let t = performance.now();
      const effects = event(this.clock.now(), prepared);
      // A long compute (a slice of a big submit) and the start of its writes would be one long turn of the loop.
      if (this.timed(what, "compute", t) > YIELD_AFTER_MS) await new Promise((r) => setImmediate(r));
      await this.store.persist(what, effects);
      t = performance.now();
      this.deliver(first ? first(effects) : effects);
      this.timed(what, "deliver", t);
      return effects;
    });
  }
}

/** A synchronous part of an event longer than this is reported (heartbeats wait behind it). */
export const SLOW_EVENT_MS = 100;
/** After a compute this long, the loop gets a turn before the event's writes start. */
const YIELD_AFTER_MS = 20;

/** The message an effect sends to a worker, or null for effects that send none. */
export function workerMessage(e: Effect): { workerId: string; msg: CoordinatorMessage } | null {
  switch (e.kind) {
    case "assign":
      return { workerId: e.workerId, msg: { msg: { $case: "assign", value: assignmentToWire(e.spec) } } };
    case "abort":
      return { workerId: e.workerId, msg: { msg: { $case: "abort", value: { lease: e.lease, reason: e.reason } } } };
    case "ack":
      return { workerId: e.workerId, msg: { msg: { $case: "resultAck", value: { lease: e.lease, accepted: e.accepted, reason: e.reason } } } };
    default:
      return null;
  }
}
