// Many small paths in one request: a submit's .drv closure is thousands of
// files of a few hundred bytes (53,797 .drv files for nixpkgs), and a request
// each spent more on round trips than on the files. The body is a
// `nix-store --export` stream; each path in it is then exactly one upload of its
// own (processUpload, under the same grant), started once the paths it
// references earlier in the batch are in, a few at a time. A refusal stops the
// batch: what was stored before it stays (each path is published whole or not at
// all), and the answer names the path refused.
import { InvalidInputError } from "../core/errors.js";
import { baseName, hashPart, parseExport, readAllBytes, TooLargeError, type ByteSource } from "../../proto/nix/mod.js";
import { limitBytes, processUpload, type UploadContext, type UploadGrant } from "./upload.js";

/** Paths one batch may hold. */
export const MAX_BATCH_PATHS = 10_000;
/** One path's NAR in a batch is held in memory until its upload runs: larger ones go up one at a time. */
export const MAX_BATCH_ITEM_NAR_BYTES = 16 << 20;
/** A batch's whole body. */
export const MAX_BATCH_BODY_BYTES = 256 << 20;
/** Paths of one batch stored at once (as many uploads as one uploader may run side by side). */
const BATCH_CONCURRENCY = 4;

/** How one path of a batch went: 201 stored now, 200 was already there. */
export interface BatchPathResult {
  storePath: string;
  status: 200 | 201;
}

/** An upload of a batch that was refused, with the path it was refused for (the error keeps its class, so its HTTP status). */
function namingPath(err: unknown, storePath: string): unknown {
  if (err instanceof Error && !err.message.startsWith(storePath)) err.message = `${storePath}: ${err.message}`;
  return err;
}

/** Stores every path of an export stream under `grant` (never a build's output); resolves with each path's result, in stream order. */
export async function processUploadBatch(ctx: UploadContext, body: ByteSource, grant: UploadGrant): Promise<BatchPathResult[]> {
  if (grant.kind === "output") throw new InvalidInputError("a build's outputs are uploaded one at a time, under their lease");
  const order: string[] = [];
  const done = new Map<string, Promise<200 | 201>>();
  const running = new Set<Promise<void>>();
  let failed: { err: unknown } | undefined;
  try {
    for await (const item of parseExport(limitBytes(body, MAX_BATCH_BODY_BYTES), (nar) => readAllBytes(nar, { max: MAX_BATCH_ITEM_NAR_BYTES, tooLarge: () => new TooLargeError(`a path in a batch upload is over ${MAX_BATCH_ITEM_NAR_BYTES} bytes; upload it on its own`) }), ctx.storeDir)) {
      if (order.length >= MAX_BATCH_PATHS) throw new TooLargeError(`a batch upload holds at most ${MAX_BATCH_PATHS} paths`);
      while (running.size >= BATCH_CONCURRENCY && !failed) await Promise.race(running);
      if (failed) break;
      const before = item.references.filter((r) => r !== item.storePath).map((r) => done.get(r)).filter((p) => p !== undefined);
      const claims = {
        storePath: item.storePath,
        hashPart: hashPart(item.storePath),
        references: [...new Set(item.references.map(baseName))].sort(),
        ...(item.deriver ? { deriver: baseName(item.deriver) } : {}),
        compression: "none" as const,
        narHash: item.narHash,
        narSize: item.narSize,
      };
      const upload = (async () => {
        await Promise.all(before);
        try {
          return (await processUpload(ctx, claims, [item.sinkResult], grant)).status as 200 | 201;
        } catch (err) {
          throw namingPath(err, item.storePath);
        }
      })();
      order.push(item.storePath);
      done.set(item.storePath, upload);
      const settled: Promise<void> = upload.then(
        () => void running.delete(settled),
        (err: unknown) => {
          running.delete(settled);
          failed ??= { err };
        },
      );
      running.add(settled);
    }
  } finally {
    await Promise.all(running);
  }
  if (failed) throw failed.err;
  return Promise.all(order.map(async (storePath) => ({ storePath, status: await done.get(storePath)! })));
}
