// Client of the binary cache: verified narinfo lookups, closures, NAR downloads
// that fail unless the bytes match the signed NarHash, and authenticated uploads.

import { Readable } from "node:stream";
import type { Logger } from "pino";
import { AuthError, FarmError, InvalidInputError, TransientError } from "../errors.js";
import { asCompression, decompress, type Compression } from "./compression.js";
import { BusyError, ConflictError, HashMismatchError, MissingReferenceError, NotInCacheError, TooLargeError, UntrustedError } from "./errors.js";
import { mapLimit, walkClosure } from "./closure.js";
import { HashCounter, hashThrough } from "./nar-hash.js";
import { parseNarInfo, type NarInfo } from "./narinfo.js";
import { parsePublicKey, verifyNarInfo, type NixKey } from "./signing.js";
import { baseName, hashPart, parseStorePath } from "./store-path.js";
import { emptyPackageIndex, PACKAGE_INDEX_PATH, readPackageIndex, type PackageIndex } from "./package-index.js";
import { type ByteSource } from "./serialise.js";
import { encodeExport, type ExportItem } from "./export-stream.js";
import { httpRequest, type HttpRequestInit, type HttpResponse } from "./http.js";

/** The store dir the farm rebuilds nixpkgs for. */
export const DEFAULT_STORE_DIR = "/tmp/nix/store";

/** Options of a CacheClient. */
export interface CacheClientOptions {
  baseUrl: string;
  /** Nix-format public keys (`name:base64`); a narinfo must carry a valid signature by one. */
  trustedPublicKeys: string[];
  /** Upload token (Bearer). */
  token?: string;
  storeDir?: string;
  logger?: Logger;
  /** Parallel narinfo requests while walking closures. */
  concurrency?: number;
  /** How often a NAR download whose connection drops is resumed (default 5). */
  resumeRetries?: number;
  /** The worker this client uploads for (X-Farm-Worker), for a worker that holds the admin token. */
  workerId?: string;
}

/** One path to upload; references and deriver are full store paths. */
export interface UploadItem {
  storePath: string;
  references: string[];
  deriver?: string;
  ca?: string;
  narStream: ByteSource;
  /** How the body is compressed on the wire (the server recompresses). Default none. */
  compression?: Compression;
  narHash?: string;
  narSize?: number;
  /** The lease a worker's output was built under; the cache stages it until the farm accepts the build. */
  lease?: { drvPath: string; epoch: number };
  /** Bearer for this upload instead of the client's token (a lease-scoped upload credential). */
  token?: string;
}

/** Maps an HTTP failure status to the farm's error classes. */
function httpError(status: number, what: string, body: string): FarmError {
  const msg = `${what}: HTTP ${status}: ${body.trim().slice(0, 300)}`;
  if (status === 401 || status === 403) return new AuthError(msg);
  if (status === 409) return new ConflictError(msg);
  if (status === 413) return new TooLargeError(msg);
  if (status === 429) return new BusyError(msg);
  if (status === 424) return new MissingReferenceError(msg);
  if (status === 404) return new NotInCacheError(msg);
  if (status >= 400 && status < 500) return new InvalidInputError(msg);
  return new TransientError(msg);
}

/** Talks to one binary cache over HTTP (http.ts). */
export class CacheClient {
  readonly baseUrl: string;
  readonly storeDir: string;
  private readonly keys: NixKey[];

  constructor(private readonly opts: CacheClientOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    this.storeDir = opts.storeDir ?? DEFAULT_STORE_DIR;
    this.keys = opts.trustedPublicKeys.map(parsePublicKey);
  }

  private async request(path: string, init: HttpRequestInit = {}): Promise<HttpResponse> {
    try {
      return await httpRequest(`${this.baseUrl}/${path}`, init);
    } catch (err) {
      throw new TransientError(`cannot reach cache ${this.baseUrl}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Reads nix-cache-info and checks the cache serves our store dir. */
  async cacheInfo(): Promise<{ storeDir: string; wantMassQuery: boolean; priority: number }> {
    const res = await this.request("nix-cache-info");
    const text = await res.text();
    if (!res.ok) throw httpError(res.status, "nix-cache-info", text);
    const fields = new Map(text.split("\n").filter(Boolean).map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]));
    const storeDir = fields.get("StoreDir") ?? "";
    if (storeDir !== this.storeDir) throw new InvalidInputError(`cache ${this.baseUrl} is for store dir '${storeDir}', not '${this.storeDir}'`);
    return { storeDir, wantMassQuery: fields.get("WantMassQuery") === "1", priority: Number(fields.get("Priority") ?? 50) };
  }

  /** Fetches the cache's package index and verifies its signature and contents; an empty index when it has none yet. */
  async packageIndex(): Promise<PackageIndex> {
    const res = await this.request(PACKAGE_INDEX_PATH);
    const text = await res.text();
    if (res.status === 404) return emptyPackageIndex(this.storeDir, new Date(0));
    if (!res.ok) throw httpError(res.status, "package index", text);
    return readPackageIndex(text, this.keys, this.storeDir);
  }

  /** Fetches and verifies the narinfo of a path; null if the cache does not have it. */
  async narInfo(storePath: string): Promise<NarInfo | null> {
    parseStorePath(storePath, this.storeDir);
    const res = await this.request(`${hashPart(storePath)}.narinfo`);
    const text = await res.text();
    if (res.status === 404) return null;
    if (!res.ok) throw httpError(res.status, `narinfo of ${storePath}`, text);
    const info = parseNarInfo(text, this.storeDir);
    if (info.storePath !== storePath) throw new InvalidInputError(`cache returned narinfo for ${info.storePath} when asked for ${storePath}`);
    if (!verifyNarInfo(info, this.keys)) throw new UntrustedError(`narinfo of ${storePath} has no valid signature by a trusted key`);
    return info;
  }

  /** Verified narinfos of the closure of `storePaths`, dependencies first; paths `isPresent` says we have are skipped with their closure. */
  async closure(storePaths: string[], opts: { isPresent?: (storePath: string) => boolean | Promise<boolean> } = {}): Promise<NarInfo[]> {
    const { isPresent } = opts;
    const concurrency = this.opts.concurrency ?? 8;
    return walkClosure(storePaths, {
      missing: async (paths) => {
        if (!isPresent) return paths;
        const present = await mapLimit(paths, concurrency, async (p) => isPresent(p));
        return paths.filter((_, i) => !present[i]);
      },
      fetch: async (p) => {
        const info = await this.narInfo(p);
        if (!info) throw new NotInCacheError(`${p} is not in the cache ${this.baseUrl}`);
        return info;
      },
      concurrency,
    });
  }

  /** The decompressed NAR of a (verified) narinfo; the stream errors if its bytes do not match NarHash/NarSize. */
  narStream(info: NarInfo): Readable {
    return Readable.from(this.narChunks(info), { objectMode: false });
  }

  private async *narChunks(info: NarInfo): AsyncGenerator<Buffer> {
    if (!/^[A-Za-z0-9+\-._=/]+$/.test(info.url) || info.url.startsWith("/") || info.url.split("/").includes("..")) {
      throw new InvalidInputError(`refusing NAR URL '${info.url}'`);
    }
    let file: { hash: string; size: number } | null = null;
    const body = hashThrough(this.resumableBody(info.url, `NAR of ${info.storePath}`), (r) => (file = r));
    const counter = new HashCounter();
    for await (const chunk of decompress(asCompression(info.compression), body)) {
      counter.update(chunk);
      if (counter.size > info.narSize) throw new HashMismatchError(`NAR of ${info.storePath} is larger than its NarSize ${info.narSize}`);
      yield chunk;
    }
    const got = counter.result();
    if (got.size !== info.narSize || got.hash !== info.narHash) {
      throw new HashMismatchError(`NAR of ${info.storePath} has hash ${got.hash} (${got.size} bytes), expected ${info.narHash} (${info.narSize} bytes)`);
    }
    const f = file as { hash: string; size: number } | null;
    if (f && info.fileHash && f.hash !== info.fileHash) throw new HashMismatchError(`NAR file of ${info.storePath} does not match its FileHash`);
  }

  /**
   * The bytes of a file, resumed after a dropped connection: asked again from
   * where it broke off (Range), or, from a server that ignores Range, fetched
   * again with the bytes already passed on skipped. The caller's hashes cover
   * the whole, so a resumed file that differs is still refused.
   */
  private async *resumableBody(path: string, what: string): AsyncGenerator<Uint8Array> {
    const retries = this.opts.resumeRetries ?? 5;
    let received = 0;
    for (let attempt = 0; ; attempt++) {
      let skip = 0;
      try {
        const res = await this.request(path, received ? { headers: { Range: `bytes=${received}-` } } : {});
        if (!res.ok) throw httpError(res.status, what, await res.text());
        if (received && res.status !== 206) skip = received; // Range ignored: the whole file again
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          if (skip >= chunk.length) {
            skip -= chunk.length;
            continue;
          }
          const rest = skip ? chunk.subarray(skip) : chunk;
          skip = 0;
          received += rest.length;
          yield rest;
        }
        return;
      } catch (err) {
        // Only a broken connection is resumed; an HTTP answer or a bad byte is final.
        const dropped = err instanceof TransientError ? !/HTTP \d/.test(err.message) : err instanceof TypeError || (err as NodeJS.ErrnoException)?.code === "ECONNRESET";
        if (!dropped || attempt >= retries) throw err instanceof FarmError ? err : new TransientError(`${what}: connection lost after ${received} bytes: ${(err as Error).message}`, { cause: err });
        this.opts.logger?.warn({ what, received, attempt: attempt + 1, err: (err as Error).message }, "download interrupted; resuming");
        await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
      }
    }
  }

  private authHeaders(): Record<string, string> {
    if (!this.opts.token) throw new AuthError("no upload token configured");
    return { Authorization: `Bearer ${this.opts.token}` };
  }

  /** Uploads one path; resolves with the HTTP status (201 stored, 200 already present). */
  async upload(item: UploadItem): Promise<{ status: number; message: string }> {
    parseStorePath(item.storePath, this.storeDir);
    const headers: Record<string, string> = {
      ...(item.token ? { Authorization: `Bearer ${item.token}` } : this.authHeaders()),
      "Content-Type": "application/x-nix-nar",
      "X-Nix-Store-Path": item.storePath,
      "X-Nix-References": item.references.map(baseName).sort().join(" "),
      "X-Nix-Compression": item.compression ?? "none",
    };
    if (item.deriver) headers["X-Nix-Deriver"] = baseName(item.deriver);
    if (item.ca) headers["X-Nix-CA"] = item.ca;
    if (item.narHash) headers["X-Nix-Nar-Hash"] = item.narHash;
    if (item.narSize !== undefined) headers["X-Nix-Nar-Size"] = String(item.narSize);
    if (item.lease) {
      headers["X-Farm-Lease-Drv"] = item.lease.drvPath;
      headers["X-Farm-Lease-Epoch"] = String(item.lease.epoch);
    }
    if (this.opts.workerId) headers["X-Farm-Worker"] = this.opts.workerId;
    // A server may answer (a refusal, say) before it has read the whole body: the source is closed then too,
    // so what it holds (an open file of the store path) is let go now, not never.
    const res = await this.request(`upload/${hashPart(item.storePath)}`, { method: "PUT", headers, body: item.narStream });
    const message = await res.text();
    if (!res.ok) throw httpError(res.status, `upload of ${item.storePath}`, message);
    this.opts.logger?.debug({ storePath: item.storePath, status: res.status }, "uploaded path");
    return { status: res.status, message: message.trim() };
  }

  /**
   * Uploads many small paths in one request (the cache's `/upload-batch`: a
   * `nix-store --export` stream, each path after those it references); resolves
   * with each path's status (201 stored, 200 already there), or null from a cache
   * that takes no batches (then upload them one at a time).
   */
  async uploadBatch(items: readonly ExportItem[]): Promise<{ storePath: string; status: number }[] | null> {
    for (const item of items) parseStorePath(item.storePath, this.storeDir);
    const headers = { ...this.authHeaders(), "Content-Type": "application/x-nix-export" };
    const res = await this.request("upload-batch", { method: "PUT", headers, body: encodeExport(items) });
    const text = await res.text();
    if (res.status === 404) return null;
    if (!res.ok) throw httpError(res.status, `batch upload of ${items.length} paths`, text);
    const { paths } = JSON.parse(text) as { paths: { storePath: string; status: number }[] };
    this.opts.logger?.debug({ paths: paths.length, stored: paths.filter((p) => p.status === 201).length }, "uploaded a batch of paths");
    return paths;
  }

  /** Fetches a build log, or null if there is none. */
  async getLog(drvPath: string): Promise<string | null> {
    const res = await this.request(`log/${baseName(drvPath)}`);
    const text = await res.text();
    if (res.status === 404) return null;
    if (!res.ok) throw httpError(res.status, `log of ${drvPath}`, text);
    return text;
  }
}
