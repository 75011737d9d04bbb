// Where the cache keeps its files. The HTTP layout is mirrored: narinfos by
// hash part, NAR files under nar/, build logs under log/. Writes are atomic:
// a reader sees either nothing or the whole file.

import type { Readable, Writable } from "node:stream";

/**
 * The kinds of files the cache holds: the three Nix reads (narinfo, nar, log),
 * outputs uploaded under a lease and waiting for the farm to accept the build
 * (staged: unsigned, never served), and who produced each published path
 * (provenance).
 */
export type CacheFileKind = "narinfo" | "nar" | "log" | "staged" | "provenance" | "index";

/** A stored file opened for reading. */
export interface StoredFile {
  stream: Readable;
  size: number;
}

/** A stored file opened for reads at offsets into the caller's buffers. */
export interface FileReader {
  size: number;
  /** Reads into `buf` from `position`; returns the bytes read (0 at the end). */
  read(buf: Uint8Array, position: number): Promise<number>;
  close(): Promise<void>;
}

/** A file being written that stays invisible until committed. */
export interface StagedFile {
  /** Write the contents here, then end it before committing. */
  writable: Writable;
  /**
   * Publishes the staged bytes as (`kind`, `name`). With `ifAbsent`, does nothing and
   * returns false if the name exists already; otherwise replaces it and returns true.
   */
  commit(kind: CacheFileKind, name: string, opts?: { ifAbsent?: boolean }): Promise<boolean>;
  /** Drops the staged bytes; safe to call after commit or twice. */
  discard(): Promise<void>;
}

/** A small file written whole and flushed, invisible until committed. */
export type PreparedFile = Omit<StagedFile, "writable">;

/** Storage backend of the binary cache. Names: hash part (narinfo), file name (nar), drv basename (log). */
export interface CacheStorage {
  /** Opens a file, or null if it does not exist. */
  get(kind: CacheFileKind, name: string): Promise<StoredFile | null>;
  /** Opens a (big) file for offset reads, or null if it does not exist; optional, get() serves otherwise. */
  openReader?(kind: CacheFileKind, name: string): Promise<FileReader | null>;
  /** Reads a small file whole, or null if it does not exist (narinfos: from memory, where held). */
  getBytes(kind: CacheFileKind, name: string): Promise<Buffer | null>;
  /**
   * A narinfo without waiting, where the storage can answer from memory: its bytes,
   * null if there is none, undefined if it must be read with getBytes.
   */
  heldNarInfo?(hashPart: string): Buffer | null | undefined;
  /** Reads a small file as UTF-8, or null if it does not exist. */
  getText(kind: CacheFileKind, name: string): Promise<string | null>;
  /** True if the file exists. */
  has(kind: CacheFileKind, name: string): Promise<boolean>;
  /**
   * Atomically writes a small file; `ifAbsent` as in StagedFile.commit. A NAR file may be written in place, since
   * its name is its bytes' hash and nothing names it until the put resolves. `memoryOnly` (staged records only): kept
   * in memory, not written, so lost on a restart; for a record whose source comes again after one.
   */
  put(kind: CacheFileKind, name: string, data: string | Uint8Array, opts?: { ifAbsent?: boolean; memoryOnly?: boolean }): Promise<boolean>;
  /** The first half of a put: writes and flushes `data`, to be committed (or discarded) later; several can be written at once. */
  prepare(data: string | Uint8Array): Promise<PreparedFile>;
  /** Starts a streamed write (for NARs). */
  stage(): Promise<StagedFile>;
  /** Deletes a file; no error if it was not there. */
  remove(kind: CacheFileKind, name: string): Promise<void>;
  /** Names of all files of a kind. */
  list(kind: CacheFileKind): AsyncIterable<string>;
}

/**
 * Writes small files side by side (each costs a create and an fsync, so their
 * waits overlap) while `alongside` runs: a NAR's commit, which must land before
 * they are published. On any failure it discards them all and throws; else the
 * caller commits them, and discards them when done (safe after a commit).
 */
export async function prepareAll(storage: CacheStorage, contents: readonly (string | Uint8Array)[], alongside?: Promise<unknown>): Promise<PreparedFile[]> {
  const [first, ...written] = await Promise.allSettled([alongside, ...contents.map((c) => storage.prepare(c))]);
  const files = written.flatMap((r) => (r.status === "fulfilled" ? [r.value as PreparedFile] : []));
  const failed = [first, ...written].find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    await Promise.all(files.map((f) => f.discard()));
    throw failed.reason;
  }
  return files;
}
