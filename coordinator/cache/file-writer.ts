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
// The batching is BatchThread's (batch-thread.ts).
import { BatchThread, type BatchResult } from "./batch-thread.js";

/** One file operation. */
export type FileOp =
  /** Creates `path` (it must not exist) holding `data`, fsynced before it is closed when `flush`. */
  | { kind: "create"; path: string; data: string | Uint8Array; flush: boolean }
  /** Renames `from` to `to`, replacing it. */
  | { kind: "rename"; from: string; to: string };

/** What one operation did: a create finds the name taken ("exists", nothing written); an error is the call's own. */
type OpResult = BatchResult<"done" | "exists">;

/** Runs FileOps on a writer thread, the operations of one turn of the loop as one group. */
export class FileWriter {
  private readonly thread = new BatchThread<FileOp, "done" | "exists">({
    name: "cache file writer",
    main: writerThreadMain,
    transferOf: (op) => (op.kind === "create" && typeof op.data !== "string" ? [op.data.buffer as ArrayBuffer] : []),
  });

  /**
   * Creates `path` with `data`; "exists" if the name is taken (then nothing is written). On a failure after
   * the create, the partial file is removed before the error is thrown.
   */
  create(path: string, data: string | Uint8Array, flush: boolean): Promise<"done" | "exists"> {
    // A view is cloned with its whole buffer (a pooled Buffer's 8 KiB, a gRPC frame's): send an exact copy, moved.
    const exact = typeof data === "string" ? data : new Uint8Array(data);
    return this.thread.call({ kind: "create", path, data: exact, flush });
  }

  async rename(from: string, to: string): Promise<void> {
    await this.thread.call({ kind: "rename", from, to });
  }
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
  parentPort!.on("message", ({ id, calls: ops }: { id: number; calls: FileOp[] }) => {
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
