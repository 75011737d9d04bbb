// The effect runner: core events run one at a time, in arrival order. Each
// event's effects are persisted before any of them is delivered, so no worker
// ever holds a lease (or an accepted result) the store doesn't know.
//
// Group commit: the events that queue up while one persist is in flight are
// computed one after another and persisted together in one write of each kind,
// then delivered in order. A busy coordinator pays the store's round trips once
// per batch rather than once per event; a quiet one runs each event alone.
// Events are computed in slices of a few ms with a turn of the loop between
// slices (timers, heartbeats and arriving results go on); a batch gathers
// slices while the one before it is being stored, and delivers a slice at a time.
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
  /** Batches handed to commit and not yet settled. */
  private storing = 0;

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
    // The batch being computed, not yet handed to commit.
    let open: OpenBatch = { batch: [], writes: [], computedMs: 0 };
    const commitOpen = () => {
      const commit = this.commit(open.batch, open.writes, committing.at(-1));
      this.storing++;
      const stored = () => void this.storing--;
      commit.then(stored, stored); // a rejection: its events were rejected; the batch after it sees it through `before`
      committing.push(commit);
      open = { batch: [], writes: [], computedMs: 0 };
    };
    for (;;) {
      if (this.queued.length === 0) {
        if (open.batch.length > 0) {
          commitOpen();
          continue;
        }
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
      const started = performance.now();
      // Take what is queued for one slice of compute (their prepares included: a result's publishes its outputs).
      while (this.queued.length > 0 && open.batch.length < MAX_BATCH_EVENTS && performance.now() - started <= SLICE_MS) {
        const q = this.queued.shift()!;
        try {
          const prepared = await q.prepare();
          const t = performance.now();
          const effects = q.event(this.clock.now(), prepared);
          this.timed(q.what, "compute", t);
          open.batch.push({ q, effects });
          const written = q.writes?.(prepared);
          if (written) open.writes.push(written);
        } catch (err) {
          q.reject(err);
        }
      }
      open.computedMs += performance.now() - started;
      // The batch is stored now unless one before it still is and it may grow: then the next slices join it, so a
      // busy runner stores and delivers in groups (up to BATCH_COMPUTE_MS of compute) while the loop gets a turn
      // after every slice. The events computed first wait, unsent, for the rest of their batch.
      const full = open.batch.length >= MAX_BATCH_EVENTS || open.computedMs >= BATCH_COMPUTE_MS;
      if (open.batch.length > 0 && (this.storing === 0 || full || this.queued.length === 0)) commitOpen();
      // The loop gets a turn after every slice: the next one would otherwise follow on a microtask, and a queue
      // that never empties (a busy farm, a big submit's slices) would hold it for one slice after another.
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
    // Delivered a slice at a time, like the compute: a grouped batch's messages would otherwise hold one turn.
    let sliceStarted = performance.now();
    for (const { q, effects } of batch) {
      if (performance.now() - sliceStarted > SLICE_MS) {
        await new Promise((r) => setImmediate(r));
        sliceStarted = performance.now();
      }
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

/** The batch a drain is computing: its events, the writes their prepares started, and its compute time so far. */
interface OpenBatch {
  batch: BatchEntry[];
  writes: Promise<void>[];
  computedMs: number;
}

/** A computed event of a batch, waiting to be stored and delivered. */
interface BatchEntry {
  q: QueuedEvent;
  effects: Effect[];
}

/** A synchronous part of an event longer than this is reported (heartbeats wait behind it). */
export const SLOW_EVENT_MS = 100;
/**
 * Compute between two turns of the loop. The loop's other work (results arriving, their staging, NATS acks)
 * shares the turn, so a slice is kept well under the 50 ms a responsive loop stays within.
 */
const SLICE_MS = 5;
/**
 * Compute a batch may gather, over several slices, while the batch before it is being stored: storing and
 * delivering in groups is cheaper. On the full nixpkgs graph at 200 workers (README, the coordinator at scale):
 * one 20 ms slice per batch, loop delay p99 70–88 ms; a batch per 5 ms slice, 29–37 ms but 12–20 % slower, the
 * workers using 40–60 % more CPU on smaller groups of messages; 5 ms slices grouped into batches and delivered
 * a slice at a time too, 47–53 ms at the rate of 20 ms batches.
 */
const BATCH_COMPUTE_MS = 10;
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
