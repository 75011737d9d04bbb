// Accepting a NAR upload: validate the claimed metadata, stream the body through
// decompression, the strict NAR parser, hashing and gzip (a NAR of one disk
// block is kept as it is) into a staged file, then
// act on what the uploader was granted (decided from its token before any byte
// was read):
//   - a worker's output of a lease it holds is *staged*: stored but unsigned and
//     invisible, until the farm accepts that lease's result (publish-staged.ts);
//   - a submitter's path is published only if its own bytes give that path
//     (content-address.ts): .drv files, text files, sources;
//   - the operator (admin token) publishes directly.
// Published paths: first writer wins; nothing partial is ever visible.

import { createHash } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import { InvalidInputError } from "../core/errors.js";
import type { Lease } from "../core/types.js";
import { assertContentAddressed } from "./content-address.js";
import { isPublished } from "./published.js";
import { stagedName, type StagedOutput, type UploadProvenance } from "./staged-output.js";
import { asCompression, compressGzip, compressionExtension, compressWherePays, compressZstd, ConflictError, decompress, formatNarInfo, formatSha256, HashMismatchError, hashThrough, isStoreBaseName, MissingReferenceError, narEventsOf, normalizeSha256, parseNarInfo, parseStorePath, readAllBytes, signNarInfo, TooLargeError, validatedNar, type AsIsRule, type ByteSource, type Compression, type HashResult, type MaybeCompressed, type NarInfo, type NixKey } from "../../proto/nix/mod.js";
import { prepareAll, type CacheStorage, type PreparedFile } from "./storage.js";

/** What the upload pipeline needs from the server. */
export interface UploadContext {
  storage: CacheStorage;
  storeDir: string;
  signingKey: NixKey;
  maxNarBytes: number;
  narCompression: StoredNarCompression;
  logger: Logger;
}

/** How the cache stores a NAR: gzip in-process, or zstd through a spawned `zstd` (smaller, a process per upload). */
export type StoredNarCompression = "gzip" | "zstd";

/**
 * With gzip storage, a NAR is stored as it is ("Compression: none") when that
 * costs nothing: up to one disk block (it takes one either way, and a zlib
 * stream's setup cost more than the rest of its upload; most of a graph's
 * outputs are that small: wrappers, hooks, .drv files), or when its first 256 KiB
 * save under 10 % (fetched tarballs, compressed images: most of nixpkgs'
 * derivations are fetches, and gzip of them was the coordinator's CPU for nothing).
 */
const STORED_AS_IS: AsIsRule = { maxAsIs: 4096, probeBytes: 256 << 10, minSaving: 0.1 };

function compressForStorage(how: StoredNarCompression, source: ByteSource): MaybeCompressed {
  // zstd stays the whole old path: it is the benchmark's baseline.
  if (how === "zstd") return { stream: compressZstd(source), method: () => "zstd" };
  return compressWherePays(source, STORED_AS_IS, "gzip", (s) => compressGzip(s));
}

/** What an uploader may do with one upload, decided from its token before the body is read. */
export type UploadGrant =
  /** The operator: published and signed at once. */
  | { kind: "publish"; by: string }
  /** A submitter: published only if the path is what its bytes say. */
  | { kind: "content-addressed"; by: string }
  /** A worker's output under a lease it holds: staged until the farm accepts that lease's result. */
  | { kind: "output"; by: string; workerId: string; lease: Lease };

/** Outcome of an accepted upload: 201 = published now, 202 = staged, 200 = was already published. */
export interface UploadResult {
  status: 200 | 201 | 202;
  narInfo: NarInfo;
  /** The stored NAR file, held in memory rather than written (`stageInMemory`): whoever publishes the output writes it. */
  heldNar?: HeldNar;
}

/** A staged output's NAR file (as the cache stores it: compressed) kept in memory until its output is published. */
export interface HeldNar {
  /** Its name under nar/, as the staged narinfo's URL gives it. */
  file: string;
  bytes: Buffer;
  /** The staged record: as stored, as an object and its narinfo parsed. A publish that reads back this very text needn't parse it again. */
  staged: { text: string; record: StagedOutput; narInfo: NarInfo };
}

/** Upload metadata, parsed from the X-Nix-* request headers. */
export interface UploadClaims {
  storePath: string;
  hashPart: string;
  references: string[];
  deriver?: string;
  ca?: string;
  compression: ReturnType<typeof asCompression>;
  narHash?: string;
  narSize?: number;
}

function header(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  if (Array.isArray(v)) throw new InvalidInputError(`header ${name} given more than once`);
  return v === undefined ? undefined : v.trim();
}

/** Parses and validates the X-Nix-* headers of an upload to `/upload/<urlHashPart>`. */
export function parseUploadClaims(urlHashPart: string, h: IncomingHttpHeaders, storeDir: string): UploadClaims {
  const storePath = header(h, "x-nix-store-path");
  if (!storePath) throw new InvalidInputError("missing X-Nix-Store-Path");
  const parsed = parseStorePath(storePath, storeDir);
  if (parsed.hashPart !== urlHashPart) throw new InvalidInputError(`URL hash ${urlHashPart} does not match store path ${storePath}`);
  const references = (header(h, "x-nix-references") ?? "").split(" ").filter(Boolean);
  for (const r of references) if (!isStoreBaseName(r)) throw new InvalidInputError(`bad reference '${r}'`);
  const claims: UploadClaims = { storePath, hashPart: parsed.hashPart, references: [...new Set(references)].sort(), compression: asCompression(header(h, "x-nix-compression") || "none") };
  const deriver = header(h, "x-nix-deriver");
  if (deriver) {
    if (!isStoreBaseName(deriver) || !deriver.endsWith(".drv")) throw new InvalidInputError(`bad deriver '${deriver}'`);
    claims.deriver = deriver;
  }
  // X-Nix-CA is not taken from uploaders: the cache states a CA only where it computed one itself.
  const narHash = header(h, "x-nix-nar-hash");
  if (narHash) claims.narHash = normalizeSha256(narHash);
  const narSize = header(h, "x-nix-nar-size");
  if (narSize) {
    if (!/^[0-9]{1,16}$/.test(narSize)) throw new InvalidInputError(`bad X-Nix-Nar-Size '${narSize}'`);
    claims.narSize = Number(narSize);
  }
  return claims;
}

async function readExisting(ctx: UploadContext, hashPart: string): Promise<NarInfo | null> {
  const text = await ctx.storage.getText("narinfo", hashPart);
  return text === null ? null : parseNarInfo(text, ctx.storeDir);
}

function settleAgainstExisting(existing: NarInfo, narHash: string, storePath: string): UploadResult {
  if (existing.storePath === storePath && existing.narHash === narHash) return { status: 200, narInfo: existing };
  throw new ConflictError(`the cache already holds ${existing.storePath} with NarHash ${existing.narHash}; refusing ${storePath} with ${narHash}`);
}

/** Fails after `max` bytes, so a hostile body cannot fill the disk. */
export async function* limitBytes(source: ByteSource, max: number): AsyncGenerator<Buffer> {
  let n = 0;
  for await (const chunk of source) {
    n += chunk.length;
    if (n > max) throw new TooLargeError(`upload exceeds ${max} bytes`);
    yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
  }
}

/** Body bytes an upload of a NAR up to `maxNarBytes` may send: compression may grow it a little. */
export function uploadBodyLimit(maxNarBytes: number): number {
  return maxNarBytes + Math.ceil(maxNarBytes / 64) + (1 << 20);
}

/** NARs up to this size are kept in memory too, so a single text file (a .drv) can be read back. */
const SINGLE_FILE_CAPTURE_BYTES = 16 * 2 ** 20;

/**
 * The largest zstd window an upload may need: what `zstd -19` uses. fzstd
 * allocates a frame's window whole, so this bounds an upload's decoder memory.
 */
const MAX_UPLOAD_ZSTD_WINDOW = 8 << 20;

/** Tees up to `max` bytes aside; `overflow` tells whether more went past. */
function capture(source: AsyncIterable<Buffer>, max: number) {
  const kept: Buffer[] = [];
  let size = 0;
  const state = { overflow: false, bytes: () => Buffer.concat(kept) };
  async function* tee(): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      size += chunk.length;
      if (size <= max) kept.push(chunk);
      else state.overflow = true;
      yield chunk;
    }
  }
  return { stream: tee(), state };
}

/** The contents of a NAR that is one regular file, else undefined. */
function singleFileOf(nar: Buffer): Buffer | undefined {
  const parts: Buffer[] = [];
  for (const ev of narEventsOf(nar)) {
    if (ev.type === "data") parts.push(ev.chunk);
    else if (ev.type !== "file" || ev.path.length !== 0) return undefined;
  }
  return Buffer.concat(parts);
}

/** A NAR claimed to be this small is taken whole and written with one write: most outputs and every .drv are. */
const WHOLE_NAR_BYTES = 64 << 10;

/**
 * Writes an upload's stored bytes aside, uncommitted. A NAR claimed small is collected and written whole
 * (the stream machinery cost a busy cache more than the write); any other is streamed to disk.
 */
async function writeAside(storage: CacheStorage, bytes: AsyncIterable<Buffer>, claimedNarSize: number | undefined): Promise<PreparedFile> {
  // Stored bytes are at most a little over the NAR's.
  if (claimedNarSize !== undefined && claimedNarSize <= WHOLE_NAR_BYTES) return storage.prepare(await readSmall(bytes, claimedNarSize));
  const staged = await storage.stage();
  try {
    await pipeline(Readable.from(bytes), staged.writable);
    return staged;
  } catch (err) {
    await staged.discard();
    throw err;
  }
}

/** Stored bytes of a NAR claimed this small, collected whole (see writeAside). */
function readSmall(bytes: AsyncIterable<Buffer>, claimedNarSize: number): Promise<Buffer> {
  return readAllBytes(bytes, { max: uploadBodyLimit(claimedNarSize), tooLarge: () => new HashMismatchError(`NAR is larger than the ${claimedNarSize} bytes the upload claimed`) });
}

/** Where a held NAR would have been written aside: nothing to commit (only output grants hold) or to discard. */
const NOTHING_ASIDE: PreparedFile = {
  commit: () => Promise.reject(new Error("a held NAR is written by its publisher, not committed here")),
  discard: async () => undefined,
};

/** An upload's NAR as the cache stores it, read to its end: held in memory or written aside. */
interface StoredNar {
  nar: HashResult;
  /** Of the stored (maybe compressed) bytes. */
  file: HashResult;
  method: Compression;
  /** The stored bytes, when held for the publisher (see processUpload's `stageInMemory`). */
  held: Buffer | null;
  /** Where they were written aside, uncommitted (NOTHING_ASIDE when held). */
  staged: PreparedFile;
  /** The contents of a NAR that is one regular file, for the content-address check (undefined if not, or too big to keep). */
  singleFile(): Buffer | undefined;
}

/**
 * A NAR sent whole, uncompressed, and no bigger than what is stored as it is (a small inline output): read
 * with the same grammar as a stream but without one, and hashed once for both hashes, since its stored bytes
 * are its own. Seven async stages per upload were a busy coordinator's allocations for a few hundred bytes.
 */
function isSmallWholeNar(ctx: UploadContext, claims: UploadClaims, body: ByteSource | Buffer): body is Buffer {
  return Buffer.isBuffer(body) && claims.compression === "none" && ctx.narCompression === "gzip" && body.length <= STORED_AS_IS.maxAsIs;
}

async function storeWhole(ctx: UploadContext, nar: Buffer, hold: boolean): Promise<StoredNar> {
  for (const _event of narEventsOf(nar, { maxNarBytes: ctx.maxNarBytes }));
  const hash: HashResult = { hash: formatSha256(createHash("sha256").update(nar).digest()), size: nar.length };
  const staged = hold ? NOTHING_ASIDE : await ctx.storage.prepare(nar);
  return { nar: hash, file: hash, method: "none", held: hold ? nar : null, staged, singleFile: () => singleFileOf(nar) };
}

/** Any other upload, streamed: decompressed, parsed, hashed, compressed where it pays, and hashed again as stored. */
async function storeStreamed(ctx: UploadContext, claims: UploadClaims, body: ByteSource | Buffer, grant: UploadGrant, hold: boolean): Promise<StoredNar> {
  let nar: HashResult | null = null;
  let file: HashResult | null = null;
  const source = Buffer.isBuffer(body) ? [body] : body;
  const plain = decompress(claims.compression, limitBytes(source, uploadBodyLimit(ctx.maxNarBytes)), { maxZstdWindowBytes: MAX_UPLOAD_ZSTD_WINDOW });
  const captured = capture(validatedNar(plain, { maxNarBytes: ctx.maxNarBytes }), grant.kind === "content-addressed" ? SINGLE_FILE_CAPTURE_BYTES : 0);
  // gzip in-process by default (zlib works in the threadpool): a process per upload was most of a busy coordinator's CPU.
  const compressed = compressForStorage(ctx.narCompression, hashThrough(captured.stream, (r) => (nar = r)));
  const stored = hashThrough(compressed.stream, (r) => (file = r));
  // Held: collected, never written here. Otherwise written aside, and committed once the checks pass.
  const held = hold ? await readSmall(stored, claims.narSize!) : null;
  const staged: PreparedFile = held !== null ? NOTHING_ASIDE : await writeAside(ctx.storage, stored, claims.narSize);
  const singleFile = () => (captured.state.overflow ? undefined : singleFileOf(captured.state.bytes()));
  return { nar: nar as unknown as HashResult, file: file as unknown as HashResult, method: compressed.method(), held, staged, singleFile };
}

/**
 * Runs one upload under `grant`; throws InvalidInputError/TooLargeError/ConflictError/MissingReferenceError/AuthError.
 * `stageInMemory`: a staged output is kept in memory only: its record (see CacheStorage.put's `memoryOnly`), and
 * its NAR file when small (returned as `heldNar`, for the publisher to write beside the narinfo). Staging then
 * writes nothing, and a result that is never accepted leaves no file behind.
 */
export async function processUpload(ctx: UploadContext, claims: UploadClaims, body: ByteSource | Buffer, grant: UploadGrant, opts: { stageInMemory?: boolean } = {}): Promise<UploadResult> {
  if (claims.narSize !== undefined && claims.narSize > ctx.maxNarBytes) throw new TooLargeError(`NAR of ${claims.narSize} bytes exceeds ${ctx.maxNarBytes}`);
  const existing = await readExisting(ctx, claims.hashPart);
  // An accepted build of this output is published already: it stands, and this one need not be kept.
  if (existing && grant.kind === "output") return { status: 200, narInfo: existing };
  if (existing && claims.narHash) return settleAgainstExisting(existing, claims.narHash, claims.storePath);
  const selfBase = claims.storePath.slice(ctx.storeDir.length + 1);
  // A build output's references are checked when its build is accepted (staged-output.ts), where the other
  // outputs of the same build count: `dev` referring to `out` is staged before either is published.
  for (const ref of grant.kind === "output" ? [] : claims.references) {
    if (ref !== selfBase && !(await isPublished(ctx.storage, ref, ctx.storeDir))) {
      throw new MissingReferenceError(`reference ${ref} is not in the cache; upload it first`);
    }
  }

  const hold = grant.kind === "output" && opts.stageInMemory === true && claims.narSize !== undefined && claims.narSize <= WHOLE_NAR_BYTES;
  const { nar: n, file: f, method, held: heldBytes, staged, singleFile } = isSmallWholeNar(ctx, claims, body) ? await storeWhole(ctx, body, hold) : await storeStreamed(ctx, claims, body, grant, hold);
  try {
    if (claims.narHash && claims.narHash !== n.hash) throw new HashMismatchError(`NAR hash is ${n.hash}, upload claimed ${claims.narHash}`);
    if (claims.narSize !== undefined && claims.narSize !== n.size) throw new HashMismatchError(`NAR size is ${n.size}, upload claimed ${claims.narSize}`);
    if (existing) return settleAgainstExisting(existing, n.hash, claims.storePath);
    if (grant.kind === "content-addressed") {
      const { name } = parseStorePath(claims.storePath, ctx.storeDir);
      claims.ca = assertContentAddressed({ storePath: claims.storePath, storeDir: ctx.storeDir, name, narHash: n.hash, references: claims.references, singleFile: singleFile() });
    }

    // The NAR file is content-addressed, so replacing an identical one is harmless. A published path's
    // narinfo is written while it commits, and published after it; then its provenance is recorded.
    const fileName = `${f.hash.slice("sha256:".length)}.nar${compressionExtension(method)}`;
    const unsigned: NarInfo = {
      storePath: claims.storePath,
      url: `nar/${fileName}`,
      compression: method,
      fileHash: f.hash,
      fileSize: f.size,
      narHash: n.hash,
      narSize: n.size,
      references: claims.references,
      ...(claims.deriver ? { deriver: claims.deriver } : {}),
      sigs: [],
      ...(claims.ca ? { ca: claims.ca } : {}),
    };
    if (grant.kind === "output") {
      // Not published: the farm signs it only once it accepts this lease's result.
      const record: StagedOutput = { narInfo: formatNarInfo(unsigned), workerId: grant.workerId, drvPath: grant.lease.drvPath, epoch: grant.lease.epoch, stagedAtMs: Date.now(), ...(hold ? { narHeld: true as const } : {}) };
      const recordText = JSON.stringify(record);
      // The NAR first: a staged record on disk always names a NAR that is there (the record goes to a journal, no file of its own).
      if (heldBytes === null) await staged.commit("nar", fileName);
      await ctx.storage.put("staged", stagedName(claims.storePath, grant.lease, grant.workerId), recordText, { memoryOnly: opts.stageInMemory });
      // Debug: one line per output at nixpkgs scale; "build reported" and "result accepted" say what became of it.
      ctx.logger.debug({ storePath: claims.storePath, worker: grant.workerId, drv: grant.lease.drvPath, epoch: grant.lease.epoch, narSize: n.size, held: heldBytes !== null || undefined }, "staged output");
      const heldNar: HeldNar | undefined = heldBytes === null ? undefined : { file: fileName, bytes: heldBytes, staged: { text: recordText, record, narInfo: unsigned } };
      return { status: 202, narInfo: unsigned, ...(heldNar ? { heldNar } : {}) };
    }
    const narInfo = signNarInfo(unsigned, ctx.signingKey);
    const provenance: UploadProvenance = { storePath: claims.storePath, narHash: n.hash, uploadedBy: grant.by, as: grant.kind, atMs: Date.now() };
    const [narinfoFile] = await prepareAll(ctx.storage, [formatNarInfo(narInfo)], staged.commit("nar", fileName));
    try {
      // Lost a race with a concurrent upload of the same path: that one stands, with its own record.
      if (!(await narinfoFile.commit("narinfo", claims.hashPart, { ifAbsent: true }))) return settleAgainstExisting((await readExisting(ctx, claims.hashPart))!, n.hash, claims.storePath);
      await ctx.storage.put("provenance", claims.hashPart, JSON.stringify(provenance));
    } finally {
      await narinfoFile.discard();
    }
    ctx.logger.info({ storePath: claims.storePath, by: grant.by, as: grant.kind, narSize: n.size, fileSize: f.size }, "cached path");
    return { status: 201, narInfo };
  } finally {
    await staged.discard();
  }
}
