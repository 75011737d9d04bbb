// Installing store paths and their closure from the cache into a store dir with
// no Nix at all: `farm install` (which then links a profile) and a worker with
// no Nix of its own (which installs the Nix the farm published) both use this.
// Invariant: a path appears in the store only complete, verified, and after
// every path it references (unpack to a temp dir in the store, then rename).
// Nothing already in the store is used unless install-trust.ts vouches for it.

import { randomBytes } from "node:crypto";
import { chmod, lstat, lutimes, readdir, rename, rm, statfs } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { InvalidInputError } from "../../errors.js";
import { formatNarInfo, InsufficientSpaceError, parseStorePath, referencePaths, restoreNar, type NarInfo } from "../mod.js";
import { claimStoreDir, recordInstalled, verifyPresentPath, wasRecorded } from "./install-trust.js";

/** The part of CacheClient that installing needs. */
export interface InstallSource {
  readonly storeDir: string;
  closure(storePaths: string[], opts: { isPresent?: (p: string) => boolean | Promise<boolean> }): Promise<NarInfo[]>;
  narStream(info: NarInfo): Readable;
}

/** Progress of an install, for a CLI progress line ("bytes": more of a NAR arrived). */
export interface InstallProgress {
  phase: "resolved" | "installing" | "bytes" | "installed" | "linked";
  storePath?: string;
  done: number;
  total: number;
  bytesDone: number;
  bytesTotal: number;
}

/** Options of installClosure. */
export interface ClosureInstallOptions {
  client: InstallSource;
  storeDir: string;
  paths: string[];
  logger: Logger;
  onProgress?: (p: InstallProgress) => void;
  /** Free bytes in a directory; defaults to statfs (injectable for tests). */
  freeBytes?: (dir: string) => Promise<number>;
  /** Paths downloaded and unpacked at once (default 8; 1 is the old sequential install). */
  concurrency?: number;
}

/** Default number of paths fetched at once. */
export const DEFAULT_INSTALL_CONCURRENCY = 8;

/** What installing a closure did. */
export interface ClosureInstallResult {
  installed: string[];
  alreadyPresent: string[];
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(() => true, (err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return false;
    throw err;
  });
}

async function statfsFree(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** Makes a tree read-only with mtime 1, as Nix does for store paths (children before parents). */
async function canonicalize(path: string): Promise<void> {
  const st = await lstat(path);
  if (st.isSymbolicLink()) return lutimes(path, 1, 1);
  if (st.isDirectory()) for (const name of await readdir(path)) await canonicalize(join(path, name));
  await chmod(path, st.isDirectory() || st.mode & 0o111 ? 0o555 : 0o444);
  await lutimes(path, 1, 1);
}

/** Removes a tree even if canonicalize already made its directories read-only. */
export async function removeTree(path: string): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (!st) return;
  if (st.isDirectory()) {
    await chmod(path, 0o755);
    for (const name of await readdir(path)) await removeTree(join(path, name));
  }
  await rm(path, { recursive: true, force: true });
}

/** Counts a NAR stream's bytes as they pass. */
async function* counted(stream: Readable, onBytes: (n: number) => void): AsyncGenerator<Buffer> {
  for await (const chunk of stream) {
    onBytes((chunk as Buffer).length);
    yield chunk as Buffer;
  }
}

/**
 * Installs one verified path: unpacks it into a temp dir while other paths
 * download, then waits for every path it references to be in place before
 * renaming it in (so the store never holds a path whose references are missing).
 * False when it was already there (and proved to be the signed build).
 */
async function installOne(client: InstallSource, info: NarInfo, storeDir: string, refsPlaced: () => Promise<unknown>, onBytes: (n: number) => void, slot: <T>(fn: () => Promise<T>) => Promise<T>): Promise<boolean> {
  const { name } = parseStorePath(info.storePath, storeDir);
  if (await exists(info.storePath)) {
    // There, but not recorded by an install of ours: used only if its bytes are the signed ones.
    await verifyPresentPath(info);
    await recordInstalled(storeDir, info, formatNarInfo(info));
    return false;
  }
  // Dot-prefixed, so it can never be mistaken for a store path.
  const tmp = join(storeDir, `.tmp-${randomBytes(6).toString("hex")}-${name}`);
  try {
    await slot(async () => {
      await restoreNar(counted(client.narStream(info), onBytes), tmp);
      await canonicalize(tmp);
    });
    await refsPlaced();
    const raced = await exists(info.storePath);
    if (raced) {
      await removeTree(tmp); // another install of ours put it there meanwhile
      await verifyPresentPath(info);
    } else {
      await rename(tmp, info.storePath);
    }
    await recordInstalled(storeDir, info, formatNarInfo(info));
    return !raced;
  } catch (err) {
    await removeTree(tmp);
    throw err;
  }
}

/** At most `n` of the functions run at once. */
function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (fn) => {
    while (running >= n) await new Promise<void>((r) => waiting.push(r));
    running++;
    try {
      return await fn();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}

/** Installs `paths` and their closure from the cache into `storeDir`, each path verified and renamed into place whole. */
export async function installClosure(opts: ClosureInstallOptions): Promise<ClosureInstallResult> {
  const { client, storeDir, logger } = opts;
  if (client.storeDir !== storeDir) throw new InvalidInputError(`client is for store dir ${client.storeDir}, not ${storeDir}`);
  const paths = [...new Set(opts.paths)];
  for (const p of paths) parseStorePath(p, storeDir);
  await claimStoreDir(storeDir);
  const result: ClosureInstallResult = { installed: [], alreadyPresent: [] };

  // Present and recorded by an install of ours: skipped with its closure. Present but not recorded: verified below.
  const todo = await client.closure(paths, { isPresent: (p) => wasRecorded(storeDir, p).then(async (ok) => ok && exists(p)) });
  for (const p of paths) if (!todo.some((i) => i.storePath === p)) result.alreadyPresent.push(p);
  const bytesTotal = todo.reduce((n, i) => n + i.narSize, 0);
  const free = await (opts.freeBytes ?? statfsFree)(storeDir);
  if (bytesTotal > free) {
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    throw new InsufficientSpaceError(`installing ${todo.length} paths needs ${mib(bytesTotal)} in ${storeDir}, but only ${mib(free)} is free`);
  }
  let bytesDone = 0;
  let done = 0;
  const progress = (phase: InstallProgress["phase"], storePath?: string) =>
    opts.onProgress?.({ phase, storePath, done, total: todo.length, bytesDone, bytesTotal });
  progress("resolved");

  // Each path gets a promise that settles when it is in place; a path waits for its references' promises.
  const placed = new Map<string, Promise<void>>();
  const slot = limiter(Math.max(1, opts.concurrency ?? DEFAULT_INSTALL_CONCURRENCY));
  let failed = false;
  const onBytes = (n: number) => {
    bytesDone += n;
    progress("bytes");
  };
  for (const info of todo) {
    // closure() lists dependencies first, so every reference's promise exists already.
    const refs = referencePaths(info).filter((r) => r !== info.storePath && placed.has(r)).map((r) => placed.get(r)!);
    const run = async () => {
      if (failed) throw new InvalidInputError(`not installing ${info.storePath}: another path failed`);
      progress("installing", info.storePath);
      const fresh = await installOne(client, info, storeDir, () => Promise.all(refs), onBytes, slot);
      (fresh ? result.installed : result.alreadyPresent).push(info.storePath);
      done++;
      logger.info({ storePath: info.storePath, narSize: info.narSize }, "installed path");
      progress("installed", info.storePath);
    };
    const p = run().catch((err) => {
      failed = true;
      throw err;
    });
    p.catch(() => undefined); // awaited below; a dependent sees the rejection too
    placed.set(info.storePath, p);
  }
  const outcomes = await Promise.allSettled(placed.values());
  const firstError = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected" && !/another path failed/.test(String(o.reason?.message)));
  const anyError = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
  if (firstError || anyError) throw (firstError ?? anyError)!.reason;
  return result;
}
