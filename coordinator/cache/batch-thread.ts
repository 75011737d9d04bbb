// A thread of the coordinator's own that takes the calls made in one turn of
// the loop as one message and answers them as one. Handing each call to a
// thread on its own costs the main thread a wake-up and a callback per call
// (about 30 µs on a 2-core VM); a turn's calls together cost one of each.
//
// The thread's code is one self-contained function run with `eval`: it needs
// no compiled file of its own, so it runs alike from the build and from the
// TypeScript sources under the tests. It receives `{ id, calls }` and posts
// `{ id, results }`, one BatchResult per call, in order.
import { Worker } from "node:worker_threads";

/** One call's outcome, as the thread posts it. */
export type BatchResult<Answer> = { ok: Answer } | { error: { message: string; code?: string; syscall?: string; path?: string } };

interface Queued<Call, Answer> {
  call: Call;
  resolve: (a: Answer) => void;
  reject: (err: Error) => void;
}

export interface BatchThreadSpec<Call> {
  /** The thread's name (in errors, and in a profile). */
  name: string;
  /** The thread's code: self-contained, no imports, no closures (it runs from its source text). */
  main: () => void;
  /** Given to the thread as `workerData` (structured-cloned: a KeyObject may go, a function may not). */
  workerData?: unknown;
  /** Buffers a call moves to the thread rather than copies. */
  transferOf?: (call: Call) => ArrayBuffer[];
}

/** Runs calls on a thread, those of one turn of the loop as one group; started on first use, unref'd when idle. */
export class BatchThread<Call, Answer> {
  private thread: Worker | null = null;
  /** Groups sent and not yet answered, by id: each call's caller, in order. */
  private readonly inFlight = new Map<number, Queued<Call, Answer>[]>();
  private nextGroup = 0;
  private queued: Queued<Call, Answer>[] = [];
  private sendScheduled = false;

  constructor(private readonly spec: BatchThreadSpec<Call>) {}

  call(call: Call): Promise<Answer> {
    return new Promise((resolve, reject) => {
      this.queued.push({ call, resolve, reject });
      if (!this.sendScheduled) {
        this.sendScheduled = true;
        setImmediate(() => this.send());
      }
    });
  }

  private send(): void {
    this.sendScheduled = false;
    const group = this.queued;
    this.queued = [];
    const id = this.nextGroup++;
    this.inFlight.set(id, group);
    const thread = (this.thread ??= this.startThread());
    thread.ref(); // unref'd once nothing is in flight: an idle thread keeps no process alive
    const transfer = this.spec.transferOf ? group.flatMap((q) => this.spec.transferOf!(q.call)) : [];
    thread.postMessage({ id, calls: group.map((q) => q.call) }, transfer);
  }

  private startThread(): Worker {
    const { name, main, workerData } = this.spec;
    const thread = new Worker(`(${main.toString()})()`, { eval: true, name, workerData });
    thread.on("message", ({ id, results }: { id: number; results: BatchResult<Answer>[] }) => {
      const group = this.inFlight.get(id) ?? [];
      this.inFlight.delete(id);
      if (this.inFlight.size === 0) thread.unref();
      group.forEach((q, i) => this.settle(q, results[i]));
    });
    thread.on("error", (err) => this.lose(thread, err));
    thread.on("exit", (code) => this.lose(thread, new Error(`${name} thread exited (code ${code})`)));
    return thread;
  }

  private settle(q: Queued<Call, Answer>, r: BatchResult<Answer> | undefined): void {
    if (r === undefined) return q.reject(new Error(`${this.spec.name} returned no result`));
    if ("error" in r) return q.reject(Object.assign(new Error(r.error.message), r.error));
    q.resolve(r.ok);
  }

  /** A thread that died fails what it held (what it did of it is unknown); the next group starts a new one. */
  private lose(thread: Worker, err: Error): void {
    if (this.thread !== thread) return;
    this.thread = null;
    const groups = [...this.inFlight.values()];
    this.inFlight.clear();
    for (const q of groups.flat()) q.reject(err);
  }
}
