// The effect runner: core events run one at a time, in arrival order. Each
// event's effects are persisted before any of them is delivered, so no worker
// ever holds a lease (or an accepted result) the store doesn't know.
//
// Group commit: the events that queue up while one persist is in flight are
// computed one after another and persisted together in one write of each kind,
// then delivered in order. A busy coordinator pays the store's round trips once
// per batch rather than once per event; a quiet one runs each event alone.
//
// An event's prepare decides in its turn and may start writes that outlast it
// (an accepted result's files in the cache): the next event's prepare runs at
// once, and the batch's writes are awaited together before it persists. A
// turn is then as long as a decision, not as long as an fsync.
//
// Pipelined: while one batch waits for its writes and its persist, the next
// is computed (up to MAX_BATCHES_IN_FLIGHT). Batches still persist and deliver
// strictly in order, each after the one before it, so what a worker hears is
// always stored, and in the order it was decided. A result no longer waits in
// the queue for the fsyncs of the batch before it (most of its latency on the
// full nixpkgs graph). A failed persist only comes at shutdown or when fenced,
// and fails the batches computed after it too.
import type { Clock } from "../core/clock.js";
import type { Effect } from "../core/effects.js";
import { assignmentToWire } from "../../proto/convert/mod.js";
import type { CoordinatorMessage } from "../../proto/gen/farm.js";

/** Where an event's effects are stored before delivery (the Persister). */
export interface EffectStore {
  persist(what: string, effects: readonly Effect[]): Promise<void>;
}

/** One queued event and who waits for it. */
interface QueuedEvent {
  what: string;
  prepare: () => Promise<unknown>;
  event: (now: number, prepared: unknown) => Effect[];
  first?: (effects: Effect[]) => Effect[];
  writes?: (prepared: unknown) => Promise<void> | undefined;
  resolve: (effects: Effect[]) => void;
  reject: (err: unknown) => void;
}

/** Runs core events serially: compute, persist (a batch at a time), deliver. */
export class EffectRunner {
  private queued: QueuedEvent[] = [];
  private running: Promise<void> | null = null;
  /** Set while a drain with nothing queued waits on its oldest batch: a new event wakes it. */
  private wake: (() => void) | null = null;

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
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** Runs one core event; `first` sees the stored effects before delivery and returns what is left to deliver. */
  step(what: string, event: (now: number) => Effect[], first?: (effects: Effect[]) => Effect[]): Promise<Effect[]> {
    return this.stepAfter(what, async () => undefined, (now) => event(now), { first });
  }

  /**
   * Like step, with an async `prepare` in the same turn: no other event runs between it and the event that
   * gets its answer. `writes` names what the prepare started and the effects must not outrun: awaited, with
   * the rest of the batch's, before the batch persists.
   */
  stepAfter<T>(
    what: string,
    prepare: () => Promise<T>,
    event: (now: number, prepared: T) => Effect[],
    opts: { first?: (effects: Effect[]) => Effect[]; writes?: (prepared: T) => Promise<void> | undefined } = {},
  ): Promise<Effect[]> {
    return new Promise<Effect[]>((resolve, reject) => {
      this.queued.push({ what, prepare, event: event as QueuedEvent["event"], first: opts.first, writes: opts.writes as QueuedEvent["writes"], resolve, reject });
      this.wake?.();
      this.running ??= this.drain();
    });
  }

  private async drain(): Promise<void> {
    // Batches whose writes, persist or delivery are still to come, oldest first. Each commits after the one
    // before it: stores persist in order and effects go out in order, while the next batch is computed.
    const committing: Promise<void>[] = [];
    for (;;) {
      if (this.queued.length === 0) {
        if (committing.length > 0) {
          // Whichever comes first: the oldest batch is delivered, or a new event is queued (computed at once).
          const oldest = committing[0];
          const queuedOne = new Promise<void>((resolve) => (this.wake = resolve));
          const done = await Promise.race([oldest.then(() => true, () => true), queuedOne.then(() => false)]);
          this.wake = null;
          if (done) committing.shift();
          continue;
        }
        // Cleared in the same turn the queue is found empty: an event queued by a caller resumed from this
        // drain's last delivery must start a new drain, not wait behind one that has ended.
        this.running = null;
        return;
      }
      const batch: BatchEntry[] = [];
      const writes: Promise<void>[] = [];
      const started = performance.now();
      // Take what is queued, up to a bound: the events computed first wait, unsent, for the rest of the batch
      // (their prepares included: a result's publishes its outputs), so a batch ends after YIELD_AFTER_MS.
      while (this.queued.length > 0 && batch.length < MAX_BATCH_EVENTS && performance.now() - started <= YIELD_AFTER_MS) {
        const q = this.queued.shift()!;
        try {
          const prepared = await q.prepare();
          const t = performance.now();
          const effects = q.event(this.clock.now(), prepared);
          this.timed(q.what, "compute", t);
          batch.push({ q, effects });
          const written = q.writes?.(prepared);
          if (written) writes.push(written);
        } catch (err) {
          q.reject(err);
        }
      }
      if (batch.length === 0) continue;
      const commit = this.commit(batch, writes, committing.at(-1));
      commit.catch(() => undefined); // its events were rejected; the batch after it sees the failure through `before`
      committing.push(commit);
      // The loop gets a turn after every batch: the next one would otherwise follow on a microtask, and a queue
      // that never empties (a busy farm, a big submit's slices) would hold it for one batch after another.
      await new Promise((r) => setImmediate(r));
      // Bounded: computed state may run only so far ahead of what is stored.
      if (committing.length >= MAX_BATCHES_IN_FLIGHT) await committing.shift()!.catch(() => undefined);
    }
  }

  /**
   * Stores and delivers one batch: once its writes have landed and the batch before it is delivered, it
   * persists, then delivers in order. A batch before it that failed fails it too: its state followed from that one's.
   */
  private async commit(batch: BatchEntry[], writes: Promise<void>[], before: Promise<void> | undefined): Promise<void> {
    try {
      // Retried by their writer until they land; a rejection means it stopped (shutdown), like a failed persist.
      if (writes.length > 0) await Promise.all(writes);
      if (before) await before;
      const what = batch.length === 1 ? batch[0].q.what : `${batch[0].q.what} and ${batch.length - 1} more`;
      await this.store.persist(what, batch.length === 1 ? batch[0].effects : batch.flatMap((b) => b.effects));
    } catch (err) {
      for (const b of batch) b.q.reject(err);
      throw err;
    }
    for (const { q, effects } of batch) {
      const t = performance.now();
      try {
        this.deliver(q.first ? q.first(effects) : effects);
        this.timed(q.what, "deliver", t);
        q.resolve(effects);
      } catch (err) {
        q.reject(err);
      }
    }
  }
}

/** A computed event of a batch, waiting to be stored and delivered. */
interface BatchEntry {
  q: QueuedEvent;
  effects: Effect[];
}

/** A synchronous part of an event longer than this is reported (heartbeats wait behind it). */
export const SLOW_EVENT_MS = 100;
/**
 * A batch takes no more events after this long. The loop's other work (results arriving, their staging, NATS
 * acks, deliveries) shares the turn, so the slice is kept well under the 50 ms a responsive loop stays within:
 * on the full nixpkgs graph 20 ms put the loop delay's p99 at 77–88 ms and 5 ms at 30–34 ms. Smaller batches
 * cost some CPU (4–7 % more of the coordinator's own, and the workers get their messages in smaller groups).
 */
const YIELD_AFTER_MS = 5;
/** Events persisted together at most. */
const MAX_BATCH_EVENTS = 256;
/** Batches computed but not yet stored and delivered, at most. */
const MAX_BATCHES_IN_FLIGHT = 4;

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
