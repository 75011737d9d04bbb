// The binary cache over HTTP: the read side is what stock Nix substitutes from
// (nix-cache-info, narinfo, nar, log); the write side takes authenticated NAR
// uploads, one path a request or many small ones in a batch (upload-batch.ts).
// The signing key lives only in this process.

import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import { AuthError, InvalidInputError } from "../core/errors.js";
import { assertStoreDir, ConflictError, hashPart, isHashPart, isStoreBaseName, MissingReferenceError, parseNarInfo, parseSecretKey, storeDirOf, TooLargeError, type NarInfo } from "../../proto/nix/mod.js";
import type { CacheFileKind, CacheStorage } from "./storage.js";
import { sendFile } from "./send-file.js";
import { parseUploadClaims, processUpload, uploadBodyLimit, type StoredNarCompression, type UploadContext, type UploadGrant } from "./upload.js";
import { MAX_BATCH_BODY_BYTES, processUploadBatch } from "./upload-batch.js";
import type { Lease } from "../core/types.js";

/** What the server knows of an upload when it asks whether to take it (before reading the body). */
export interface UploadRequest {
  token: string;
  /** The path uploaded; absent for a batch (`/upload-batch`), which never holds a build's output. */
  storePath?: string;
  /** The lease the uploader builds under (X-Farm-Lease-Drv / X-Farm-Lease-Epoch), if it names one. */
  lease?: Lease;
  /** The worker it says it is (X-Farm-Worker); checked against a worker token's own name. */
  workerId?: string;
}

/** Configuration of the cache server. */
export interface CacheServerOptions {
  storage: CacheStorage;
  storeDir: string;
  /** Nix-format secret key (`name:base64`); used to sign every narinfo. */
  secretKey: string;
  /** Decides what an upload may do, or throws AuthError; called before any of its body is read. */
  authorizeUpload: (req: UploadRequest) => UploadGrant;
  maxNarBytes: number;
  /** How uploaded NARs are stored (default gzip, in-process; zstd spawns the `zstd` binary per upload). */
  narCompression?: StoredNarCompression;
  /** Uploads one uploader (a grant's `by`) may run at once; more get 429. Default 4. */
  maxConcurrentUploads?: number;
  /** Substituter priority announced in nix-cache-info (lower wins). */
  priority?: number;
  logger: Logger;
}

const NAR_FILE_RE = /^[0-9a-df-np-sv-z]{52}\.nar(\.gz|\.zst|\.xz|\.bz2)?$/;

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

function statusOf(err: unknown): number {
  if (err instanceof HttpError) return err.status;
  if (err instanceof TooLargeError) return 413;
  if (err instanceof InvalidInputError) return 400;
  if (err instanceof ConflictError) return 409;
  if (err instanceof MissingReferenceError) return 424;
  if (err instanceof AuthError) return 403;
  return 500;
}

function bearerToken(req: IncomingMessage): string {
  const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? "");
  if (!m) throw new HttpError(401, "missing bearer token");
  return m[1];
}

/** The lease an upload names in X-Farm-Lease-Drv and X-Farm-Lease-Epoch, if any. */
function leaseOf(req: IncomingMessage): Lease | undefined {
  const drvPath = req.headers["x-farm-lease-drv"];
  const epoch = req.headers["x-farm-lease-epoch"];
  if (drvPath === undefined && epoch === undefined) return undefined;
  if (typeof drvPath !== "string" || typeof epoch !== "string" || !/^[1-9][0-9]{0,15}$/.test(epoch)) throw new InvalidInputError("bad X-Farm-Lease-Drv / X-Farm-Lease-Epoch");
  return { drvPath, epoch: Number(epoch) };
}

function send(res: ServerResponse, status: number, body: string, type = "text/plain; charset=utf-8"): void {
  res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

const NARINFO_URL_LENGTH = "/".length + 32 + ".narinfo".length;

/**
 * Answers a narinfo GET/HEAD at once when the storage holds the answer in memory
 * (the cache's hottest request: no promise, no stream, no file); false otherwise.
 */
function serveHeldNarInfo(storage: CacheStorage, req: IncomingMessage, res: ServerResponse): boolean {
  const url = req.url;
  if (!storage.heldNarInfo || url === undefined || url.length !== NARINFO_URL_LENGTH || !url.endsWith(".narinfo") || (req.method !== "GET" && req.method !== "HEAD")) return false;
  const hp = url.slice(1, 33);
  if (!isHashPart(hp)) return false;
  const bytes = storage.heldNarInfo(hp);
  if (bytes === undefined) return false;
  if (bytes === null) {
    send(res, 404, `narinfo ${hp} not found\n`);
    return true;
  }
  res.writeHead(200, ["Content-Type", "text/x-nix-narinfo", "Content-Length", String(bytes.length)]);
  res.end(req.method === "HEAD" ? undefined : bytes);
  return true;
}

/** Serves a small file from `getBytes` (narinfos come from memory): no stream, no file descriptor. */
async function serveSmall(storage: CacheStorage, kind: CacheFileKind, name: string, type: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const bytes = await storage.getBytes(kind, name);
  if (!bytes) throw new HttpError(404, `${kind} ${name} not found`);
  res.writeHead(200, { "Content-Type": type, "Content-Length": bytes.length });
  res.end(req.method === "HEAD" ? undefined : bytes);
}

/** The path of a request target, without its query; no decoding, so `%2F` never becomes a separator. */
function pathOf(url: string | undefined): string {
  if (!url) return "/";
  const q = url.indexOf("?");
  return q < 0 ? url : url.slice(0, q);
}

async function serveFile(storage: CacheStorage, kind: CacheFileKind, name: string, type: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (storage.openReader) {
    const file = await storage.openReader(kind, name);
    if (!file) throw new HttpError(404, `${kind} ${name} not found`);
    res.writeHead(200, { "Content-Type": type, "Content-Length": file.size });
    if (req.method === "HEAD") {
      await file.close();
      res.end();
      return;
    }
    return sendFile(file, res);
  }
  const file = await storage.get(kind, name);
  if (!file) throw new HttpError(404, `${kind} ${name} not found`);
  res.writeHead(200, { "Content-Type": type, "Content-Length": file.size });
  if (req.method === "HEAD") {
    file.stream.destroy();
    res.end();
    return;
  }
  await pipeline(file.stream, res);
}

/** What uploads to a cache with these options run with (its HTTP uploads, and build reports' inline outputs). */
export function uploadContextOf(opts: CacheServerOptions): UploadContext {
  assertStoreDir(opts.storeDir);
  return { storage: opts.storage, storeDir: opts.storeDir, signingKey: parseSecretKey(opts.secretKey), maxNarBytes: opts.maxNarBytes, narCompression: opts.narCompression ?? "gzip", logger: opts.logger };
}

/** Builds the request handler (usable without a listening server, e.g. behind another one). */
export function createCacheHandler(opts: CacheServerOptions): RequestListener {
  const ctx = uploadContextOf(opts);
  const cacheInfo = `StoreDir: ${opts.storeDir}\nWantMassQuery: 1\nPriority: ${opts.priority ?? 30}\n`;
  // Each uploader's uploads in flight: an authenticated caller still can't hold the server's disk and CPU alone.
  const inFlight = new Map<string, number>();
  const maxConcurrent = opts.maxConcurrentUploads ?? 4;
  /** Runs one upload (or batch) of `who` in one of its slots; 429 when it has none free. */
  async function inUploadSlot<T>(who: string, upload: () => Promise<T>): Promise<T> {
    const running = inFlight.get(who) ?? 0;
    if (running >= maxConcurrent) throw new HttpError(429, `${who} already has ${running} uploads running; at most ${maxConcurrent} at once`);
    inFlight.set(who, running + 1);
    try {
      return await upload();
    } finally {
      const left = (inFlight.get(who) ?? 1) - 1;
      if (left > 0) inFlight.set(who, left);
      else inFlight.delete(who);
    }
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = pathOf(req.url);
    const read = req.method === "GET" || req.method === "HEAD";
    let m: RegExpExecArray | null;
    // The hottest request first, matched without a regular expression.
    if (read && path.length === NARINFO_URL_LENGTH && path.endsWith(".narinfo") && isHashPart(path.slice(1, 33))) return serveSmall(opts.storage, "narinfo", path.slice(1, 33), "text/x-nix-narinfo", req, res);
    if (read && path === "/nix-cache-info") return send(res, 200, cacheInfo);
    if (read && (m = /^\/nar\/([^/]+)$/.exec(path)) && NAR_FILE_RE.test(m[1])) return serveFile(opts.storage, "nar", m[1], "application/x-nix-nar", req, res);
    // Build logs are written by the coordinator from what the lease holder streamed, never uploaded.
    if (read && (m = /^\/log\/([^/]+)$/.exec(path)) && isStoreBaseName(m[1]) && m[1].endsWith(".drv")) return serveFile(opts.storage, "log", m[1], "text/plain; charset=utf-8", req, res);
    // The signed package index, written by the coordinator only (cache/package-index-writer.ts).
    if (read && path === "/index/packages.json") return serveFile(opts.storage, "index", "packages.json", "application/json", req, res);
    if ((m = /^\/upload\/([^/]+)$/.exec(path)) && isHashPart(m[1])) {
      if (req.method !== "PUT") throw new HttpError(405, "method not allowed");
      const claims = parseUploadClaims(m[1], req.headers, opts.storeDir);
      const worker = req.headers["x-farm-worker"];
      const grant = opts.authorizeUpload({ token: bearerToken(req), storePath: claims.storePath, lease: leaseOf(req), workerId: typeof worker === "string" ? worker : undefined });
      const declared = Number(req.headers["content-length"] ?? 0);
      if (declared > uploadBodyLimit(opts.maxNarBytes)) throw new TooLargeError("upload too large");
      // Workers may share the admin token on a one-operator farm: their uploads count per worker.
      const result = await inUploadSlot(grant.kind === "output" ? grant.workerId : grant.by, () => processUpload(ctx, claims, requestBody(req), grant));
      const said = { 200: "already present", 201: "stored", 202: "staged until the farm accepts the build" }[result.status];
      return send(res, result.status, `${said} ${result.narInfo.storePath} ${result.narInfo.narHash}\n`);
    }
    if (path === "/upload-batch") {
      if (req.method !== "PUT") throw new HttpError(405, "method not allowed");
      if (leaseOf(req)) throw new InvalidInputError("a build's outputs are uploaded one at a time, under their lease");
      const grant = opts.authorizeUpload({ token: bearerToken(req) });
      if (Number(req.headers["content-length"] ?? 0) > MAX_BATCH_BODY_BYTES) throw new TooLargeError(`a batch upload is at most ${MAX_BATCH_BODY_BYTES} bytes`);
      const paths = await inUploadSlot(grant.by, () => processUploadBatch(ctx, requestBody(req), grant));
      return send(res, 200, JSON.stringify({ paths }) + "\n", "application/json");
    }
    throw new HttpError(404, "not found");
  }

  return (req, res) => {
    if (serveHeldNarInfo(opts.storage, req, res)) return;
    route(req, res).catch((err: unknown) => {
      const status = statusOf(err);
      const message = status === 500 ? "internal error" : String((err as Error).message).replace(/\s+/g, " ").slice(0, 500);
      if (status >= 500) opts.logger.error({ err, url: req.url }, "cache request failed");
      else if (req.method === "PUT") opts.logger.warn({ url: req.url, status, message }, "upload rejected");
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // An unread request body would stall a keep-alive connection: close it after replying.
      if (!req.complete) res.setHeader("Connection", "close");
      send(res, status, message + "\n");
    });
  };
}

/** An upload's body; a parse error must not destroy the request, so the client still gets our answer. */
function requestBody(req: IncomingMessage): AsyncIterable<Buffer> {
  return req.iterator({ destroyOnReturn: false });
}

/** Creates the cache HTTP server (not yet listening). */
export function createCacheServer(opts: CacheServerOptions): Server {
  return createServer(createCacheHandler(opts));
}

/** The narinfo of `storePath` if the cache holds it and its NAR file, else null. No signature check: it is our own storage. */
export async function readValidNarInfo(storage: CacheStorage, storePath: string): Promise<NarInfo | null> {
  const text = await storage.getText("narinfo", hashPart(storePath));
  if (text === null) return null;
  const info = parseNarInfo(text, storeDirOf(storePath));
  if (info.storePath !== storePath || !info.url.startsWith("nar/")) return null;
  return (await storage.has("nar", info.url.slice("nar/".length))) ? info : null;
}

/** True if the cache holds `storePath` completely (narinfo and NAR file). */
export async function hasValidPath(storage: CacheStorage, storePath: string): Promise<boolean> {
  return (await readValidNarInfo(storage, storePath)) !== null;
}
