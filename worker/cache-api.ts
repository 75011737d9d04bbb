// The part of the farm cache client the worker uses. Executors depend on this
// shape (not on the class) so main.ts decides which client talks to which cache.
import type { Readable } from "node:stream";
import type { NarInfo } from "../proto/nix/mod.js";

/** One output to upload. */
export interface UploadRequest {
  storePath: string;
  /** Full store paths. */
  references: string[];
  deriver?: string;
  ca?: string;
  narStream: AsyncIterable<Uint8Array>;
  /** The lease it was built under: the cache stages it until the farm accepts the build. */
  lease: { drvPath: string; epoch: number };
  /** The assignment's lease-scoped upload credential, used instead of the worker's token when there is one. */
  token?: string;
}

/** What the worker needs from the binary cache. */
export interface CacheApi {
  /** The verified narinfo of a path; null when the cache lacks it. */
  narInfo(storePath: string): Promise<NarInfo | null>;
  /** The decompressed, verified NAR of a path. */
  narStream(info: NarInfo): Readable | AsyncIterable<Uint8Array> | Promise<Readable | AsyncIterable<Uint8Array>>;
  /** Uploads one path's NAR with its metadata. */
  upload(req: UploadRequest): Promise<{ status: number; message: string }>;
}

/** Makes a cache client for the cache a coordinator named in its Welcome. */
export type CacheFactory = (where: { cacheUrl: string; cachePublicKey: string }) => CacheApi;
