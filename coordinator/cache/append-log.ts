// An append-only file written in groups: lines that queue while one group is
// written go together, with one fdatasync, and each caller hears once its line
// is on disk. The file is opened per group, so no descriptor stays open. The
// staged journal and the provenance log keep records in such files, a JSON
// line each, the latest line of a name winning.
import { closeSync, fdatasync as fdatasyncCallback, open as openCallback, writeSync } from "node:fs";
import { truncate } from "node:fs/promises";
import { promisify } from "node:util";

const openForAppend = (path: string) => promisify(openCallback)(path, "a");
const fdatasync = promisify(fdatasyncCallback);

/** Writes all of `bytes` to `fd` at its current position (a short write is continued). */
function writeAllSync(fd: number, bytes: Uint8Array): void {
  for (let offset = 0; offset < bytes.length; ) offset += writeSync(fd, bytes, offset, bytes.length - offset);
}

interface Pending {
  line: string;
  /** What the line changes in memory, once it is on disk (given where it starts in the file). */
  apply: (offset: number) => void;
  done: () => void;
  fail: (err: unknown) => void;
}

/** Appends lines to one file, a group at a time. */
export class AppendLog {
  private pending: Pending[] = [];
  private flushing: Promise<void> | null = null;

  /**
   * `size`: the file's length now (where the next line starts). `afterGroup` runs between groups, with no
   * group in flight (a rewrite of the file goes there, and sets `size`).
   */
  constructor(
    readonly path: string,
    public size: number,
    private readonly afterGroup?: () => Promise<void>,
  ) {}

  /** Appends `line` (newline included); resolves once it is on disk, after `apply` ran for it. */
  append(line: string, apply: (offset: number) => void = () => {}): Promise<void> {
    return new Promise<void>((done, fail) => {
      this.pending.push({ line, apply, done, fail });
      this.flushing ??= this.flush();
    });
  }

  /** Resolves when everything appended so far is on disk. */
  async flushed(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  private async flush(): Promise<void> {
    while (this.pending.length > 0) {
      const group = this.pending.splice(0);
      try {
        const bytes = group.map((p) => Buffer.from(p.line));
        const data = Buffer.concat(bytes);
        // Written and closed synchronously (a page-cache copy of some microseconds, where an async write was a
        // threadpool hand-off and a wait for a turn of a busy loop), opened and flushed in the threadpool.
        const fd = await openForAppend(this.path);
        try {
          writeAllSync(fd, data);
          await fdatasync(fd);
        } finally {
          closeSync(fd);
        }
        for (const [i, p] of group.entries()) {
          p.apply(this.size);
          this.size += bytes[i].length;
        }
        for (const p of group) p.done();
        await this.afterGroup?.();
      } catch (err) {
        // Back to where the group started: a part-written line would run into the next group's first.
        await truncate(this.path, this.size).catch(() => {});
        for (const p of group) p.fail(err);
      }
    }
    this.flushing = null;
  }
}

/** A line of a record log: {"n":name,"d":text} records, {"n":name} removes. */
export function parseRecordLine(line: string): { n: string; d?: string } | null {
  try {
    const entry = JSON.parse(line) as { n?: unknown; d?: unknown };
    if (typeof entry.n !== "string") return null;
    return typeof entry.d === "string" ? { n: entry.n, d: entry.d } : { n: entry.n };
  } catch {
    return null; // a torn line, from a crash mid-append
  }
}

/** The live records of a record log's text, by name: the latest line of each name wins. */
export function replayRecords(text: string, into = new Map<string, string>()): Map<string, string> {
  for (const line of text.split("\n")) {
    const entry = parseRecordLine(line);
    if (entry === null) continue;
    if (entry.d === undefined) into.delete(entry.n);
    else into.set(entry.n, entry.d);
  }
  return into;
}
