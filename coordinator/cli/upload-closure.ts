// Sends the .drv closure of a submission (the .drv files and their input
// sources) from the submitter's store to the cache, so workers can fetch what
// they build from the cache alone. Paths the cache already has are skipped;
// the rest go up dependencies first (the cache refuses dangling references),
// several at once.
import { execa } from "execa";
import pRetry from "p-retry";
import type { Logger } from "pino";
import { BusyError, CacheClient, forEachAfterReferences, mapLimit, parseExport } from "../../proto/nix/mod.js";
import type { StorePath } from "../core/types.js";
import { TransientError } from "../core/errors.js";
import type { SubmitterNixEnv } from "./nix-env.js";

/** Uploads in flight: the cache takes 4 at once from one uploader by default (more get 429). */
const UPLOADS_AT_ONCE = 4;

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
  const items: { storePath: string; references: string[]; deriver?: string; nar: Buffer }[] = [];
  try {
    for await (const item of parseExport(exported.stdout!, collect, nix.storeDir)) {
      items.push({ storePath: item.storePath, references: item.references, deriver: item.deriver, nar: item.sinkResult });
    }
  } finally {
    await exported.catch((err) => {
      throw new TransientError(`nix-store --export failed: ${String(err.stderr ?? err.message).split("\n").find((l: string) => l.startsWith("error:")) ?? err.shortMessage}`, { cause: err });
    });
  }
  let sent = 0;
  // A .drv closure is many small files: they go up UPLOADS_AT_ONCE at a time, each after what it references.
  // The same token may be uploading elsewhere too (another submit, a publish): a 429 waits and asks again.
  await forEachAfterReferences(items, UPLOADS_AT_ONCE, async (item) => {
    const upload = () => client.upload({ storePath: item.storePath, references: item.references, deriver: item.deriver, narStream: [item.nar] });
    await pRetry(upload, { retries: 10, minTimeout: 50, maxTimeout: 2000, shouldRetry: (err) => err instanceof BusyError });
    opts.onProgress?.(++sent, items.length);
  });
  return { sent, present: paths.length - sent };
}

async function collect(nar: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of nar) {
    size += c.length;
    if (size > MAX_SOURCE_BYTES) throw new TransientError(`a closure path is larger than ${MAX_SOURCE_BYTES} bytes; refusing to buffer it`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}
