// Accepting a NAR upload: validate the claimed metadata, stream the body through
// decompression, the strict NAR parser, hashing and zstd into a staged file, then
// publish the NAR and its signed narinfo. First writer wins; nothing partial is visible.

import type { IncomingHttpHeaders } from "node:http";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import { InvalidInputError } from "../core/errors.js";
import { asCompression, compressZstd, ConflictError, decompress, formatNarInfo, HashMismatchError, hashThrough, isStoreBaseName, MissingReferenceError, normalizeSha256, parseNarInfo, parseStorePath, signNarInfo, TooLargeError, validatedNar, type ByteSource, type HashResult, type NarInfo, type NixKey } from "../../proto/nix/mod.js";
import type { CacheStorage } from "./storage.js";

/** What the upload pipeline needs from the server. */
export interface UploadContext {
  storage: CacheStorage;
  storeDir: string;
  signingKey: NixKey;
  maxNarBytes: number;
  logger: Logger;
}

/** Outcome of an accepted upload: 201 = stored now, 200 = was already there. */
export interface UploadResult {
  status: 200 | 201;
  narInfo: NarInfo;
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
  const ca = header(h, "x-nix-ca");
  if (ca) {
    if (!/^(fixed|text):[A-Za-z0-9:+/=_-]+$/.test(ca)) throw new InvalidInputError(`bad CA '${ca}'`);
    claims.ca = ca;
  }
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
async function* limitBytes(source: ByteSource, max: number): AsyncGenerator<Buffer> {
  let n = 0;
  for await (const chunk of source) {
    n += chunk.length;
    if (n > max) throw new TooLargeError(`upload exceeds ${max} bytes`);
    yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
  }
}

/** Runs one upload; throws InvalidInputError/TooLargeError/ConflictError/MissingReferenceError. */
export async function processUpload(ctx: UploadContext, claims: UploadClaims, body: ByteSource): Promise<UploadResult> {
  if (claims.narSize !== undefined && claims.narSize > ctx.maxNarBytes) throw new TooLargeError(`NAR of ${claims.narSize} bytes exceeds ${ctx.maxNarBytes}`);
  const existing = await readExisting(ctx, claims.hashPart);
  if (existing && claims.narHash) return settleAgainstExisting(existing, claims.narHash, claims.storePath);
  const selfBase = claims.storePath.slice(ctx.storeDir.length + 1);
  for (const ref of claims.references) {
    if (ref !== selfBase && !(await ctx.storage.has("narinfo", ref.slice(0, 32)))) {
      throw new MissingReferenceError(`reference ${ref} is not in the cache; upload it first`);
    }
  }

  let nar: HashResult | null = null;
  let file: HashResult | null = null;
  const bodyLimit = ctx.maxNarBytes + Math.ceil(ctx.maxNarBytes / 64) + (1 << 20);
  const narBytes = validatedNar(decompress(claims.compression, limitBytes(body, bodyLimit), true), { maxNarBytes: ctx.maxNarBytes });
  const compressed = compressZstd(hashThrough(narBytes, (r) => (nar = r)));
  const staged = await ctx.storage.stage();
  try {
    await pipeline(Readable.from(hashThrough(compressed, (r) => (file = r))), staged.writable);
    const n = nar as unknown as HashResult;
    const f = file as unknown as HashResult;
    if (claims.narHash && claims.narHash !== n.hash) throw new HashMismatchError(`NAR hash is ${n.hash}, upload claimed ${claims.narHash}`);
    if (claims.narSize !== undefined && claims.narSize !== n.size) throw new HashMismatchError(`NAR size is ${n.size}, upload claimed ${claims.narSize}`);
    if (existing) return settleAgainstExisting(existing, n.hash, claims.storePath);

    // The NAR file is content-addressed, so replacing an identical one is harmless.
    const fileName = `${f.hash.slice("sha256:".length)}.nar.zst`;
    await staged.commit("nar", fileName);
    const unsigned: NarInfo = {
      storePath: claims.storePath,
      url: `nar/${fileName}`,
      compression: "zstd",
      fileHash: f.hash,
      fileSize: f.size,
      narHash: n.hash,
      narSize: n.size,
      references: claims.references,
      ...(claims.deriver ? { deriver: claims.deriver } : {}),
      sigs: [],
      ...(claims.ca ? { ca: claims.ca } : {}),
    };
    const narInfo = signNarInfo(unsigned, ctx.signingKey);
    if (!(await ctx.storage.put("narinfo", claims.hashPart, formatNarInfo(narInfo), { ifAbsent: true }))) {
      // Lost a race with a concurrent upload of the same path.
      return settleAgainstExisting((await readExisting(ctx, claims.hashPart))!, n.hash, claims.storePath);
    }
    ctx.logger.info({ storePath: claims.storePath, narSize: n.size, fileSize: f.size }, "cached path");
    return { status: 201, narInfo };
  } finally {
    await staged.discard();
  }
}
