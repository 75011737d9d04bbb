// Provenance records (who built or uploaded each published path) in one
// append-only file rather than a file each: a file each was a create, a write,
// an fsync and a rename per published output, a quarter of the cache's file
// work. A record is read only to withdraw a worker's outputs (and by tests),
// so memory holds where each record's line is, not the record. A line is
// {"n":name,"d":text} (recorded) or {"n":name} (removed); the latest wins.
// Appends that queue while one is written go together, with one fdatasync.
import { open, readdir, readFile, rm, stat, truncate } from "node:fs/promises";
import { join } from "node:path";
import { AppendLog, parseRecordLine, replayRecords } from "./append-log.js";

const LOG = "log";

/** Where a record's line is in the log. */
interface Place {
  offset: number;
  length: number;
}

/** Every live record of a provenance log's text, by name. */
export const parseProvenanceLog = (text: string): Map<string, string> => replayRecords(text);

/** The provenance records of one cache directory. */
export class ProvenanceLog {
  private readonly places = new Map<string, Place>();

  private constructor(private readonly log: AppendLog) {}

  /**
   * Opens the log in `dir`: drops a torn last line (a crash mid-append), indexes the records, and takes in
   * the one-file-per-record layout of older versions (appended to the log, then removed).
   */
  static async open(dir: string): Promise<ProvenanceLog> {
    const path = join(dir, LOG);
    let bytes = await readFile(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return Buffer.alloc(0);
      throw err;
    });
    const whole = bytes.lastIndexOf(0x0a) + 1;
    if (whole < bytes.length) {
      await truncate(path, whole);
      bytes = bytes.subarray(0, whole);
    }
    const p = new ProvenanceLog(new AppendLog(path, whole));
    for (let offset = 0; offset < whole; ) {
      const end = bytes.indexOf(0x0a, offset) + 1;
      const entry = parseRecordLine(bytes.toString("utf8", offset, end - 1));
      if (entry?.d !== undefined) p.places.set(entry.n, { offset, length: end - 1 - offset });
      else if (entry) p.places.delete(entry.n);
      offset = end;
    }
    for (const name of await readdir(dir)) {
      if (name === LOG) continue;
      const file = join(dir, name);
      if (!(await stat(file)).isFile()) continue;
      if (!p.places.has(name)) await p.put(name, await readFile(file, "utf8"));
      await rm(file, { force: true });
    }
    return p;
  }

  /** The record of `name`, or undefined. */
  async get(name: string): Promise<string | undefined> {
    const at = this.places.get(name);
    if (!at) return undefined;
    const fh = await open(this.log.path, "r");
    try {
      const buf = Buffer.alloc(at.length);
      await fh.read(buf, 0, at.length, at.offset);
      return parseRecordLine(buf.toString("utf8"))?.d;
    } finally {
      await fh.close();
    }
  }

  has(name: string): boolean {
    return this.places.has(name);
  }

  names(): string[] {
    return [...this.places.keys()];
  }

  /** Records `data` under `name` (replacing what was); resolves once it is on disk. */
  put(name: string, data: string): Promise<void> {
    const line = JSON.stringify({ n: name, d: data });
    return this.log.append(line + "\n", (offset) => this.places.set(name, { offset, length: Buffer.byteLength(line) }));
  }

  /** Removes `name`'s record; resolves once that is on disk. */
  async remove(name: string): Promise<void> {
    if (!this.places.has(name)) return;
    await this.log.append(JSON.stringify({ n: name }) + "\n", () => this.places.delete(name));
  }
}
