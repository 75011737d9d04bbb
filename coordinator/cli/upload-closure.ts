// Sends the .drv closure of a submission (the .drv files and their input
// sources) from the submitter's store to the cache, so workers can fetch what
// they build from the cache alone. Paths the cache already has are skipped;
// the rest go up dependencies first (the cache refuses dangling references),
// in batches of many small paths a request (a large source goes alone).
import { execa } from "execa";
import pRetry from "p-retry";
import type { Logger } from "pino";
import { BusyError, CacheClient, forEachAfterReferences, mapLimit, parseExport, readAllBytes, topoSortByReferences } from "../../proto/nix/mod.js";
import type { StorePath } from "../core/types.js";
import { TransientError } from "../core/errors.js";
import type { SubmitterNixEnv } from "./nix-env.js";

/** Uploads in flight when the cache takes no batches: it takes 4 at once from one uploader by default (more get 429). */
const UPLOADS_AT_ONCE = 4;
/** One batch's paths and bytes (the cache takes up to 10,000 paths and 256 MiB). */
const BATCH_PATHS = 2_000;
const BATCH_BYTES = 16 << 20;
/** A path larger than this goes up alone and is not held by a batch (the cache holds a batch's paths in memory). */
const ALONE_BYTES = 1 << 20;

/** One exported path of the closure. */
interface ClosureItem {
  storePath: string;
  references: string[];
  deriver?: string;
  nar: Buffer;
}

/** Upper bound on one .drv or source kept in memory between export and upload. */
const MAX_SOURCE_BYTES = 512 * 1024 ** 2;

/** Uploads the missing closure paths; returns how many were sent. */
export async function uploadClosure(opts: { client: CacheClient; paths: StorePath[]; nix: SubmitterNixEnv; logger: Logger; onProgress?: (sent: number, total: number) => void }): Promise<{ sent: number; present: number }> {
  const { client, paths, nix, logger } = opts;
  const infos = await mapLimit(paths, 16, (p) => client.narInfo(p));
  const missing = paths.filter((_, i) => !infos[i]);
  logger.debug({ total: paths.length, missing: missing.length }, "closure paths missing from the cache");
  if (missing.length === 0) return { sent: 0, present: paths.length };

  const exported = execa("nix-store", ["--export", ...missing], { env: nix.env, encoding: "buffer", buffer: { stdout: false, stderr: true }, maxBuffer: { stderr: 1024 ** 2 } });
  const items: ClosureItem[] = [];
  try {
    for await (const item of parseExport(exported.stdout!, (nar) => readAllBytes(nar, { max: MAX_SOURCE_BYTES, tooLarge: () => new TransientError(`a closure path is larger than ${MAX_SOURCE_BYTES} bytes; refusing to buffer it`) }), nix.storeDir)) {
      items.push({ storePath: item.storePath, references: item.references, deriver: item.deriver, nar: item.sinkResult });
    }
  } finally {
    await exported.catch((err) => {
      throw new TransientError(`nix-store --export failed: ${String(err.stderr ?? err.message).split("\n").find((l: string) => l.startsWith("error:")) ?? err.shortMessage}`, { cause: err });
    });
  }
  let sent = 0;
  const report = (n: number) => opts.onProgress?.((sent += n), items.length);
  // The same token may be uploading elsewhere too (another submit, a publish): a 429 waits and asks again.
  const whenFree = <T>(upload: () => Promise<T>) => pRetry(upload, { retries: 10, minTimeout: 50, maxTimeout: 2000, shouldRetry: (err) => err instanceof BusyError });
  const alone = async (item: ClosureItem) => {
    await whenFree(() => client.upload({ storePath: item.storePath, references: item.references, deriver: item.deriver, narStream: [item.nar] }));
    report(1);
  };
  let batchesTaken = true;
  for (const group of uploadGroups(topoSortByReferences(items))) {
    if (group.length === 1 && group[0].nar.length > ALONE_BYTES) {
      await alone(group[0]);
      continue;
    }
    const answered = batchesTaken ? await whenFree(() => client.uploadBatch(group.map((i) => ({ ...i, nar: [i.nar] })))) : null;
    if (answered !== null) {
      report(group.length);
      continue;
    }
    // A cache without batches: UPLOADS_AT_ONCE at a time, each after what it references.
    batchesTaken = false;
    await forEachAfterReferences(group, UPLOADS_AT_ONCE, alone);
  }
  return { sent, present: paths.length - sent };
}

/**
 * Splits paths (dependencies first) into what goes up in one request each: runs
 * of small paths as batches of at most BATCH_PATHS and BATCH_BYTES, a large path
 * alone. Every path's references are in its group or an earlier one.
 */
export function uploadGroups<T extends { nar: Buffer }>(ordered: readonly T[]): T[][] {
  const groups: T[][] = [];
  let batch: T[] = [];
  let bytes = 0;
  const flush = () => {
    if (batch.length > 0) groups.push(batch);
    batch = [];
    bytes = 0;
  };
  for (const item of ordered) {
    if (item.nar.length > ALONE_BYTES) {
      flush();
      groups.push([item]);
      continue;
    }
    if (batch.length === BATCH_PATHS || bytes + item.nar.length > BATCH_BYTES) flush();
    batch.push(item);
    bytes += item.nar.length;
  }
  flush();
  return groups;
}
