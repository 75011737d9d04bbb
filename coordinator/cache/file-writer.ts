// The cache's small file writes, done by a thread of their own. Every accepted
// output creates three files (its NAR, its narinfo's temp file, its build log),
// flushes two and renames one. Through libuv's threadpool that is seven
// hand-offs of the main thread a derivation, each waking a pool thread and then
// the loop: measured on a 2-core VM, about 110-150 µs of the main thread's time
// per derivation. Here the operations queued in one turn of the loop go to a writer
// thread as one message and come back as one. The thread opens, writes,
// closes and renames with synchronous calls and leaves only the flushes to
// libuv's threadpool, where they overlap as before: the hand-offs are its, not
// the main thread's. Measured alone (2-core VM, 6,000 derivations' files): the
// main thread's share 110-150 µs -> 14-17 µs a derivation, the process's CPU
// 2.0 -> 1.6 s, the wall time about the same.
//
// The thread's code is one self-contained function run with `eval`: it needs
// no compiled file of its own, so it runs alike from the build and from the
// TypeScript sources under the tests.
import { Worker } from "node:worker_threads";

/** One file operation. */
export type FileOp =
  /** Creates `path` (it must not exist) holding `data`, fsynced before it is closed when `flush`. */
  | { kind: "create"; path: string; data: string | Uint8Array; flush: boolean }
  /** Renames `from` to `to`, replacing it. */
  | { kind: "rename"; from: string; to: string };

/** What one operation did: a create finds the name taken ("exists", nothing written); an error is the call's own. */
type OpResult = { ok: "done" } | { ok: "exists" } | { error: { message: string; code?: string; syscall?: string; path?: string } };

interface Queued {
  op: FileOp;
  resolve: (r: "done" | "exists") => void;
  reject: (err: Error) => void;
}

/** Runs FileOps on a writer thread, the operations of one turn of the loop as one group. */
export class FileWriter {
  private thread: Worker | null = null;
  /** Groups sent and not yet answered, by id: each operation's caller, in order. */
  private readonly inFlight = new Map<number, Queued[]>();
  private nextGroup = 0;
  private queued: Queued[] = [];
  private sendScheduled = false;

  /**
   * Creates `path` with `data`; "exists" if the name is taken (then nothing is written). On a failure after
   * the create, the partial file is removed before the error is thrown.
   */
  create(path: string, data: string | Uint8Array, flush: boolean): Promise<"done" | "exists"> {
    // A view is cloned with its whole buffer (a pooled Buffer's 8 KiB, a gRPC frame's): send an exact copy, moved.
    const exact = typeof data === "string" ? data : new Uint8Array(data);
    return this.run({ kind: "create", path, data: exact, flush });
  }

  async rename(from: string, to: string): Promise<void> {
    await this.run({ kind: "rename", from, to });
  }

  private run(op: FileOp): Promise<"done" | "exists"> {
    return new Promise((resolve, reject) => {
      this.queued.push({ op, resolve, reject });
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
    thread.ref(); // unref'd once nothing is in flight: an idle writer keeps no process alive
    const transfer = group.flatMap((q) => (q.op.kind === "create" && typeof q.op.data !== "string" ? [q.op.data.buffer as ArrayBuffer] : []));
    thread.postMessage({ id, ops: group.map((q) => q.op) }, transfer);
  }

  private startThread(): Worker {
    const thread = new Worker(`(${writerThreadMain.toString()})()`, { eval: true, name: "cache file writer" });
    thread.on("message", ({ id, results }: { id: number; results: OpResult[] }) => {
      const group = this.inFlight.get(id) ?? [];
      this.inFlight.delete(id);
      if (this.inFlight.size === 0) thread.unref();
      group.forEach((q, i) => settle(q, results[i]));
    });
    thread.on("error", (err) => this.lose(thread, err));
    thread.on("exit", (code) => this.lose(thread, new Error(`cache file writer thread exited (code ${code})`)));
    return thread;
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

function settle(q: Queued, r: OpResult | undefined): void {
  if (r === undefined) return q.reject(new Error("cache file writer returned no result"));
  if ("error" in r) return q.reject(Object.assign(new Error(r.error.message), r.error));
  q.resolve(r.ok);
}

/**
 * The writer thread. Self-contained (run from its source text): no imports, no closures. A group's creates are
 * opened and written and its renames made at once, with synchronous calls; each flushed file's fsync goes to the
 * threadpool (flushes overlap), and it is closed once flushed; the group is answered when all are.
 */
function writerThreadMain(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fs = require("node:fs") as typeof import("node:fs");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { parentPort } = require("node:worker_threads") as typeof import("node:worker_threads");
  // Types only (FileOp, OpResult): erased from the source text the thread runs.
  const failure = (err: unknown): OpResult => {
    const e = err as NodeJS.ErrnoException;
    return { error: { message: e.message, code: e.code, syscall: e.syscall, path: e.path } };
  };
  // Closes once, whatever happened (a second close could hit a descriptor another thread has been given since).
  const closeOnce = (fd: number): unknown => {
    try {
      fs.closeSync(fd);
      return undefined;
    } catch (err) {
      return err;
    }
  };
  const removePartial = (path: string) => {
    try {
      fs.rmSync(path, { force: true });
    } catch {
      // the error the caller hears is the write's; a leftover NAR is rewritten, a leftover temp file swept at start
    }
  };
  /** Closes a written file (after its flush, if any) and records the outcome; a failure removes it. */
  const finish = (results: OpResult[], i: number, fd: number, path: string, flushErr: unknown) => {
    const closeErr = closeOnce(fd);
    const err = flushErr ?? closeErr;
    results[i] = err === undefined || err === null ? { ok: "done" } : failure(err);
    if (err !== undefined && err !== null) removePartial(path);
  };
  parentPort!.on("message", ({ id, ops }: { id: number; ops: FileOp[] }) => {
    const results: OpResult[] = new Array(ops.length);
    let flushing = 1; // this call's own share, released at its end
    const flushed = () => {
      if (--flushing === 0) parentPort!.postMessage({ id, results });
    };
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i];
      if (op.kind === "rename") {
        try {
          fs.renameSync(op.from, op.to);
          results[i] = { ok: "done" };
        } catch (err) {
          results[i] = failure(err);
        }
        continue;
      }
      let fd: number;
      try {
        fd = fs.openSync(op.path, "wx", 0o644);
      } catch (err) {
        results[i] = (err as NodeJS.ErrnoException).code === "EEXIST" ? { ok: "exists" } : failure(err);
        continue;
      }
      try {
        const bytes = typeof op.data === "string" ? Buffer.from(op.data) : op.data;
        for (let offset = 0; offset < bytes.length; ) offset += fs.writeSync(fd, bytes, offset, bytes.length - offset);
      } catch (err) {
        finish(results, i, fd, op.path, err);
        continue;
      }
      if (!op.flush) {
        finish(results, i, fd, op.path, undefined);
        continue;
      }
      flushing++;
      const path = op.path;
      fs.fsync(fd, (err) => {
        finish(results, i, fd, path, err);
        flushed();
      });
    }
    flushed();
  });
}
