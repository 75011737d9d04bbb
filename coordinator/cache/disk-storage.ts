// CacheStorage on a local directory: <root>/<hash>.narinfo, <root>/nar/<file>,
// <root>/log/<drv>: the URL paths of the cache, so any static file server can
// serve the read side (deploy/nginx/). Writes go to <root>/.tmp/ first, are
// fsynced (build logs excepted), then renamed (or hard-linked, for create-if-absent
// of all but narinfos, whose absence the memo decides)
// into place, so no partial file is ever visible. Two kinds are written in place
// instead: a small NAR file, named by its bytes' hash and named by no narinfo until
// it is complete, and a derivation's first build log, as Nix writes its own logs.
// Small files are written by a thread of their own (file-writer.ts).
// Narinfos are also held in memory (narinfo-memo.ts),
// staged records live in memory and in one journal (staged-journal.ts), and provenance
// records in one log (provenance-log.ts): this process must be the directory's only writer.

import { randomBytes } from "node:crypto";
import { closeSync, fsync as fsFsync, open as fsOpen, write as fsWrite } from "node:fs";
import { link, mkdir, open, opendir, readdir, readFile, rename, rm, stat, unlink } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Readable } from "node:stream";
import { InvalidInputError } from "../core/errors.js";
import { FileWriter } from "./file-writer.js";
import { NarInfoMemo } from "./narinfo-memo.js";
import { ProvenanceLog } from "./provenance-log.js";
import { StagedJournal } from "./staged-journal.js";
import type { CacheFileKind, CacheStorage, FileReader, PreparedFile, StagedFile, StoredFile } from "./storage.js";

const NARINFO_SUFFIX = ".narinfo";
/** Read size for NAR and log streams: few, large reads (the default 64 KiB costs a read per 64 KiB). */
const STREAM_CHUNK = 1 << 20;
/** Memory for narinfo bytes by default: about 100,000 narinfos of ~500 bytes. */
const DEFAULT_NARINFO_MEMO_BYTES = 64 << 20;

/** Options of DiskStorage.open. */
export interface DiskStorageOptions {
  /** Bytes of narinfos to hold in memory (least recently used go first). */
  narinfoMemoBytes?: number;
}
/** Temp files older than this are leftovers of a crash, not writes in progress. */
const STALE_TMP_MS = 24 * 3600 * 1000;

/** A CacheStorage that keeps files under `root`. */
export class DiskStorage implements CacheStorage {
  private readonly tmpDir: string;
  private readonly tmpPrefix = randomBytes(8).toString("hex");
  private tmpCount = 0;
  private readonly memo: NarInfoMemo;
  private readonly writer = new FileWriter();
  /** Narinfos being renamed into place, by name: a second create-if-absent of one waits for it, then finds it taken. */
  private readonly narInfosCommitting = new Map<string, Promise<void>>();
  /** NAR files being written in place, by name: a second write of one waits for the first. */
  private readonly narsWriting = new Map<string, Promise<void>>();
  private staged!: StagedJournal;
  private provenance!: ProvenanceLog;

  /** Absolute and normalised, so a checked file name is appended to it without path.join (a hot path's allocations). */
  private readonly root: string;

  private constructor(root: string, opts: DiskStorageOptions) {
    this.root = resolve(root);
    this.tmpDir = join(this.root, ".tmp");
    this.memo = new NarInfoMemo(opts.narinfoMemoBytes ?? DEFAULT_NARINFO_MEMO_BYTES);
  }

  /** Opens (creating if needed) a storage root, removes stale temp files left by a crash, and lists the narinfos. */
  static async open(root: string, now: number = Date.now(), opts: DiskStorageOptions = {}): Promise<DiskStorage> {
    const s = new DiskStorage(root, opts);
    for (const d of [root, join(root, "nar"), join(root, "log"), join(root, "staged"), join(root, "provenance"), join(root, "index"), s.tmpDir]) await mkdir(d, { recursive: true });
    for (const name of await readdir(s.tmpDir)) {
      const p = join(s.tmpDir, name);
      const st = await stat(p).catch(() => null);
      if (st && now - st.mtimeMs > STALE_TMP_MS) await rm(p, { recursive: true, force: true });
    }
    for await (const name of s.list("narinfo")) s.memo.load(name);
    s.staged = await StagedJournal.open(join(root, "staged"));
    s.provenance = await ProvenanceLog.open(join(root, "provenance"));
    return s;
  }

  /** What the narinfo memo holds. */
  narinfoStats(): ReturnType<NarInfoMemo["stats"]> {
    return this.memo.stats();
  }

  private pathOf(kind: CacheFileKind, name: string): string {
    // Names come from URLs: keep them to one plain path component.
    if (!/^[A-Za-z0-9+\-._?=]+$/.test(name) || name.startsWith(".")) throw new InvalidInputError(`bad cache file name '${name}'`);
    if (kind === "narinfo") return `${this.root}/${name}${NARINFO_SUFFIX}`;
    return `${this.root}/${kind}/${name}`;
  }

  /** A fresh temp name: a random prefix for this process (another process's leftovers never collide), then a count. */
  private tmpPath(): string {
    return `${this.tmpDir}/${this.tmpPrefix}-${(this.tmpCount++).toString(36)}`;
  }

  /** Publishes a complete temp file; see StagedFile.commit. `published` runs as soon as it is in place. */
  private async publish(tmp: string, kind: CacheFileKind, name: string, ifAbsent: boolean, published?: () => void): Promise<boolean> {
    const dest = this.pathOf(kind, name);
    if (ifAbsent && kind === "narinfo") return this.publishNarInfoIfAbsent(tmp, dest, name, published);
    const done = await this.publishFile(tmp, dest, ifAbsent);
    if (done) published?.();
    return done;
  }

  /**
   * The memo knows every narinfo in the directory (listed at open, told of each write and removal), so
   * create-if-absent is decided in memory and the temp file renamed in: a rename, not a link and an unlink.
   */
  private async publishNarInfoIfAbsent(tmp: string, dest: string, name: string, published?: () => void): Promise<boolean> {
    // One being renamed in is waited for: a caller told "taken" reads the narinfo that took it. If that rename failed, the name is free again.
    for (let committing = this.narInfosCommitting.get(name); committing; committing = this.narInfosCommitting.get(name)) await committing.catch(() => undefined);
    if (this.memo.has(name)) {
      await unlinkIfPresent(tmp);
      return false;
    }
    // `published` runs before the name leaves narInfosCommitting: a check in between would find it free.
    const committing = this.publishFile(tmp, dest, false).then(() => published?.());
    this.narInfosCommitting.set(name, committing);
    try {
      await committing;
      return true;
    } finally {
      this.narInfosCommitting.delete(name);
    }
  }

  private async publishFile(tmp: string, dest: string, ifAbsent: boolean): Promise<boolean> {
    if (!ifAbsent) {
      // Renamed, the temp file is gone: nothing to clean up (a recursive rm per upload was a busy coordinator's lstat churn).
      await this.writer.rename(tmp, dest).catch(async (err: unknown) => {
        await unlinkIfPresent(tmp);
        throw err;
      });
      return true;
    }
    try {
      await link(tmp, dest); // fails with EEXIST atomically: first writer wins
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err;
    } finally {
      await unlinkIfPresent(tmp);
    }
  }

  async get(kind: CacheFileKind, name: string): Promise<StoredFile | null> {
    if (kind === "narinfo" || kind === "staged" || kind === "provenance") {
      const bytes = await this.getBytes(kind, name);
      return bytes && { stream: Readable.from([bytes], { objectMode: false }), size: bytes.length };
    }
    const path = this.pathOf(kind, name);
    try {
      const fh = await open(path, "r");
      const { size } = await fh.stat();
      // A read buffer the file's size (most are a few hundred bytes): a 1 MiB one each is a map and unmap per file.
      return { stream: fh.createReadStream({ highWaterMark: Math.max(1, Math.min(STREAM_CHUNK, size)) }), size }; // closes the handle when done or destroyed
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
  }

  async openReader(kind: CacheFileKind, name: string): Promise<FileReader | null> {
    const path = this.pathOf(kind, name);
    if (kind === "staged" || kind === "provenance") throw new Error(`${kind} records are read whole (getBytes)`);
    try {
      const fh = await open(path, "r");
      try {
        const { size } = await fh.stat();
        return { size, read: async (buf, position) => (await fh.read(buf, 0, buf.length, position)).bytesRead, close: () => fh.close() };
      } catch (err) {
        await fh.close();
        throw err;
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
  }

  async getBytes(kind: CacheFileKind, name: string): Promise<Buffer | null> {
    const path = this.pathOf(kind, name);
    if (kind === "narinfo") {
      if (!this.memo.has(name)) return null;
      const held = this.memo.get(name);
      if (held) return held;
    }
    if (kind === "staged" || kind === "provenance") {
      const record = kind === "staged" ? this.staged.get(name) : await this.provenance.get(name);
      return record === undefined ? null : Buffer.from(record);
    }
    const startedAt = this.memo.readStarted();
    try {
      const bytes = await readFile(path);
      if (kind === "narinfo") this.memo.remember(name, bytes, startedAt);
      return bytes;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
  }

  heldNarInfo(hashPart: string): Buffer | null | undefined {
    return this.memo.has(hashPart) ? this.memo.get(hashPart) : null;
  }

  async getText(kind: CacheFileKind, name: string): Promise<string | null> {
    const bytes = await this.getBytes(kind, name);
    return bytes && bytes.toString("utf8");
  }

  async has(kind: CacheFileKind, name: string): Promise<boolean> {
    if (kind === "narinfo") {
      this.pathOf(kind, name);
      return this.memo.has(name);
    }
    if (kind === "staged" || kind === "provenance") {
      this.pathOf(kind, name);
      return (kind === "staged" ? this.staged : this.provenance).has(name);
    }
    try {
      await stat(this.pathOf(kind, name));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  async put(kind: CacheFileKind, name: string, data: string | Uint8Array, opts: { ifAbsent?: boolean; memoryOnly?: boolean } = {}): Promise<boolean> {
    this.pathOf(kind, name);
    if (kind === "staged" || kind === "provenance") return this.putRecord(kind, name, data, opts);
    if (kind === "nar") return this.putNar(name, data);
    if (kind === "log" && !opts.ifAbsent) return this.putLog(name, data);
    return (await this.prepareFile(data, kind !== "log")).commit(kind, name, opts);
  }

  /**
   * Build logs are diagnostics, not what the cache vouches for: not flushed, so each costs a create, not a
   * create and an fsync. A process crash loses nothing written; a crash of the machine may lose the latest
   * logs, as it may lose the farm's latest NATS state (JetStream syncs every 2 minutes by default). A
   * derivation's first log is created in place, as Nix writes its own (a reader may see it while it is
   * written); a later one replaces it whole, through a temp file.
   */
  private async putLog(name: string, bytes: string | Uint8Array): Promise<boolean> {
    if ((await this.createInPlace(this.pathOf("log", name), bytes, false)) === "created") return true;
    return (await this.prepareFile(bytes, false)).commit("log", name);
  }

  /**
   * A NAR file is named by the hash of its bytes, and no narinfo names it until it is written and flushed, so
   * it is created in place: no temp file, no rename. One already there holds the same bytes (a NAR published
   * before), unless a crash tore it mid-write; then it is replaced through a temp file. A NAR is not
   * overwritten while a narinfo may name it.
   */
  private async putNar(name: string, bytes: string | Uint8Array): Promise<boolean> {
    const dest = this.pathOf("nar", name);
    for (let earlier = this.narsWriting.get(name); earlier; earlier = this.narsWriting.get(name)) await earlier.catch(() => undefined);
    const writing = this.createInPlace(dest, bytes, true).then(async (outcome) => {
      if (outcome === "exists" && !(await readFile(dest)).equals(typeof bytes === "string" ? Buffer.from(bytes) : bytes)) await (await this.prepareFile(bytes, true)).commit("nar", name);
    });
    this.narsWriting.set(name, writing);
    try {
      await writing;
      return true;
    } finally {
      this.narsWriting.delete(name);
    }
  }

  /** A staged or provenance record: a line of its journal, no file of its own. */
  private async putRecord(kind: "staged" | "provenance", name: string, data: string | Uint8Array, opts: { ifAbsent?: boolean; memoryOnly?: boolean }): Promise<boolean> {
    const records = kind === "staged" ? this.staged : this.provenance;
    if (opts.ifAbsent && records.has(name)) return false;
    const text = typeof data === "string" ? data : Buffer.from(data).toString("utf8");
    if (opts.memoryOnly && kind === "staged") this.staged.hold(name, text);
    else await records.put(name, text);
    return true;
  }

  /**
   * Creates `path` holding `data` unless a file is there ("exists": left alone, as it is after any failure to
   * create, EMFILE say). A failure after the create removes the partial file, and rethrows.
   */
  private async createInPlace(path: string, data: string | Uint8Array, flush: boolean): Promise<"created" | "exists"> {
    if (data.length <= WRITER_MAX_BYTES) return (await this.writer.create(path, data, flush)) === "exists" ? "exists" : "created";
    let created = false;
    try {
      await writeNewFile(path, typeof data === "string" ? Buffer.from(data) : data, flush, () => (created = true));
      return "created";
    } catch (err) {
      if (created) await unlinkIfPresent(path);
      if (created || (err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      return "exists";
    }
  }

  prepare(data: string | Uint8Array): Promise<PreparedFile> {
    return this.prepareFile(data, true);
  }

  private async prepareFile(data: string | Uint8Array, flush: boolean): Promise<PreparedFile> {
    const tmp = this.tmpPath();
    try {
      if ((await this.createInPlace(tmp, data, flush)) === "exists") throw Object.assign(new Error(`EEXIST: temp file ${tmp} exists`), { code: "EEXIST" });
    } catch (err) {
      await unlinkIfPresent(tmp);
      throw err;
    }
    let settled = false;
    return {
      commit: async (kind, name, o = {}) => {
        this.pathOf(kind, name);
        settled = true;
        if (kind === "staged" || kind === "provenance") {
          await unlinkIfPresent(tmp);
          return this.putRecord(kind, name, data, o);
        }
        return this.publish(tmp, kind, name, o.ifAbsent ?? false, kind === "narinfo" ? () => this.memo.written(name, Buffer.from(data)) : undefined);
      },
      discard: async () => {
        if (settled) return;
        settled = true;
        await unlinkIfPresent(tmp);
      },
    };
  }

  async stage(): Promise<StagedFile> {
    const tmp = this.tmpPath();
    const fh = await open(tmp, "wx", 0o644);
    // Flushed (fsync) before the handle closes: a commit then only waits for the close, and needs no second open.
    const writable = fh.createWriteStream({ flush: true }); // closes the handle when finished or destroyed
    const closed = new Promise<void>((resolve) => writable.once("close", () => resolve()));
    let committed = false;
    return {
      writable,
      commit: async (kind, name, o = {}) => {
        if (kind === "staged" || kind === "provenance") throw new Error(`${kind} records are small: put them, don't stream them`);
        if (!writable.writableFinished) throw new Error("staged file committed before its stream finished");
        await closed;
        if (writable.errored) throw writable.errored; // the flush before the close failed: nothing is durable
        committed = true; // renamed or linked away below: nothing left for discard to remove
        return this.publish(tmp, kind, name, o.ifAbsent ?? false, kind === "narinfo" ? () => this.memo.writtenUnseen(name) : undefined);
      },
      discard: async () => {
        if (!writable.destroyed) writable.destroy();
        await closed;
        if (!committed) await unlinkIfPresent(tmp);
      },
    };
  }

  async *list(kind: CacheFileKind): AsyncIterable<string> {
    if (kind === "staged" || kind === "provenance") {
      yield* kind === "staged" ? this.staged.names() : this.provenance.names();
      return;
    }
    const dir = kind === "narinfo" ? this.root : join(this.root, kind);
    for await (const e of await opendir(dir)) {
      if (!e.isFile()) continue;
      if (kind !== "narinfo") yield e.name;
      else if (e.name.endsWith(NARINFO_SUFFIX)) yield e.name.slice(0, -NARINFO_SUFFIX.length);
    }
  }

  /** Removes a file (for tests and garbage collection); no error if absent. */
  async remove(kind: CacheFileKind, name: string): Promise<void> {
    const path = this.pathOf(kind, name);
    if (kind === "narinfo") this.memo.removed(name);
    if (kind === "staged") return this.staged.remove(name);
    if (kind === "provenance") return this.provenance.remove(name);
    await unlinkIfPresent(path);
  }
}

/**
 * Files up to this size go to the writer thread whole (file-writer.ts); bigger ones (a long build log, a NAR
 * put whole) are written by the threadpool in the loop's turns, so no writer is held up copying one.
 */
const WRITER_MAX_BYTES = 64 << 10;

/**
 * Creates `path` (it must not exist) holding `bytes`, flushed to disk when `flush`, with a chain of callbacks
 * rather than a FileHandle and four promises. `created` is told once the file exists (a failure after it leaves
 * a partial file).
 */
function writeNewFile(path: string, bytes: Uint8Array, flush: boolean, created: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    fsOpen(path, "wx", 0o644, (openErr, fd) => {
      if (openErr) return reject(openErr);
      created();
      const close = (failure: Error | null) => {
        try {
          closeSync(fd);
        } catch (closeErr) {
          failure ??= closeErr as Error;
        }
        if (failure) reject(failure);
        else resolve();
      };
      const writeFrom = (offset: number): void => {
        if (offset >= bytes.length) return flush ? fsFsync(fd, close) : close(null);
        fsWrite(fd, bytes, offset, bytes.length - offset, null, (writeErr, n) => (writeErr ? close(writeErr) : writeFrom(offset + n)));
      };
      writeFrom(0);
    });
  });
}

/** Removes one file; no error if it is absent. */
async function unlinkIfPresent(path: string): Promise<void> {
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
}
