// Staged records (an output uploaded under a lease, waiting for its build to be
// accepted) in one append-only file rather than a file each. A record lives from
// an upload to its acceptance, usually milliseconds: a file each was a create
// and a delete per output, and where ext4 runs without a journal every create
// then scans past each recently freed inode (README, "The coordinator at
// nixpkgs scale"). A line is {"n":name,"d":text} (put) or {"n":name} (removed).
// The journal is replayed when the cache opens, then rewritten with only the
// live records, and again whenever it holds many more lines than records.
// Appends that queue while one is written go together, with one fdatasync.
import { open, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { AppendLog, replayRecords } from "./append-log.js";

const JOURNAL = "journal";
/** Rewritten when it holds more lines than this plus 4 per live record. */
const COMPACT_AFTER_LINES = 10_000;

/** The staged records of one cache directory, held in memory and written to its journal. */
export class StagedJournal {
  private readonly live = new Map<string, string>();
  /** Live records that are in memory only (see `hold`). */
  private readonly held = new Set<string>();
  private lines = 0;
  private readonly log: AppendLog;

  private constructor(private readonly dir: string) {
    // A rewrite that fails (a full disk) costs nothing but size: the next group tries again.
    this.log = new AppendLog(join(dir, JOURNAL), 0, async () => {
      if (this.lines > COMPACT_AFTER_LINES + 4 * this.live.size) await this.compact().catch(() => {});
    });
  }

  /**
   * Replays the journal in `dir` (a torn last line, from a crash mid-append, is
   * dropped), takes in the one-file-per-record layout of older versions, and
   * rewrites the journal with the live records.
   */
  static async open(dir: string): Promise<StagedJournal> {
    const j = new StagedJournal(dir);
    const older: string[] = [];
    for (const name of await readdir(dir)) {
      if (name === JOURNAL || name.startsWith(`${JOURNAL}.`)) continue;
      j.live.set(name, await readFile(join(dir, name), "utf8"));
      older.push(name);
    }
    const text = await readFile(join(dir, JOURNAL), "utf8").catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return "";
      throw err;
    });
    replayRecords(text, j.live);
    await j.compact();
    for (const name of older) await rm(join(dir, name), { force: true });
    return j;
  }

  get(name: string): string | undefined {
    return this.live.get(name);
  }

  has(name: string): boolean {
    return this.live.has(name);
  }

  names(): string[] {
    return [...this.live.keys()];
  }

  /** Records `data` under `name`; resolves once it is on disk (and readable from then on). */
  async put(name: string, data: string): Promise<void> {
    await this.append(JSON.stringify({ n: name, d: data }) + "\n", () => {
      this.live.set(name, data);
      this.held.delete(name);
    });
  }

  /**
   * Records `data` under `name` in memory only: for a record whose loss costs nothing, because what it stands
   * for comes again after a restart (an output sent inside a result the worker resends until it is acknowledged).
   */
  hold(name: string, data: string): void {
    if (this.live.has(name) && !this.held.has(name)) return; // on disk already: that record stands
    this.live.set(name, data);
    this.held.add(name);
  }

  /** Forgets `name` at once; resolves once that is on disk. */
  async remove(name: string): Promise<void> {
    if (!this.live.delete(name)) return;
    if (this.held.delete(name)) return;
    await this.append(JSON.stringify({ n: name }) + "\n", () => {});
  }

  /** Resolves when everything appended so far is on disk. */
  flushed(): Promise<void> {
    return this.log.flushed();
  }

  private append(line: string, apply: () => void): Promise<void> {
    return this.log.append(line, () => {
      this.lines++;
      apply();
    });
  }

  /** Rewrites the journal with only the live records (a new file, synced, renamed over the old). */
  private async compact(): Promise<void> {
    const next = join(this.dir, `${JOURNAL}.new`);
    const text = Buffer.from([...this.live].map(([n, d]) => JSON.stringify({ n, d }) + "\n").join(""));
    const fh = await open(next, "w");
    try {
      await fh.write(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(next, join(this.dir, JOURNAL));
    this.held.clear(); // written out with the rest: a removal must now be journaled
    this.lines = this.live.size;
    this.log.size = text.length;
  }
}
