// Streaming (de)compression for NAR files, in-process wherever it can be: gzip
// through Node's zlib (its work runs in the libuv threadpool, off the event loop),
// zstd decoding through fzstd, so neither `farm install` nor the cache server
// spawns a program per NAR. xz and bzip2 (read from caches Nix made) still use
// their CLIs.

import { spawn } from "node:child_process";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip, deflateRaw } from "node:zlib";
import { promisify } from "node:util";
import { Decompress } from "fzstd";
import { InvalidInputError } from "../errors.js";
import { iteratorOf, readAllBytes, type ByteSource } from "./serialise.js";
import { ZstdFrameGuard } from "./zstd-frames.js";

/** Compression methods this cache reads. */
export type Compression = "none" | "xz" | "zstd" | "bzip2" | "gzip";

/** Narrows a string to a supported Compression or throws InvalidInputError. */
export function asCompression(s: string): Compression {
  if (s === "none" || s === "xz" || s === "zstd" || s === "bzip2" || s === "gzip") return s;
  throw new InvalidInputError(`unsupported compression '${s}'`);
}

/** File extension Nix uses for a compression method. */
export function compressionExtension(c: Compression): string {
  return { none: "", xz: ".xz", zstd: ".zst", bzip2: ".bz2", gzip: ".gz" }[c];
}

/**
 * Streams `source` through `cmd`'s stdin/stdout with backpressure. Fails with
 * InvalidInputError if the command exits non-zero (e.g. corrupt input), and kills
 * the command if the consumer stops early or the source fails.
 */
export async function* pipeThroughCommand(cmd: string, args: string[], source: ByteSource): AsyncGenerator<Buffer> {
  const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    if (stderr.length < 2000) stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => resolve(code));
  });
  exited.catch(() => {}); // awaited below; avoid an unhandled rejection meanwhile
  let feedError: unknown = null;
  const feeding = pipeline(Readable.from(source, { objectMode: false }), child.stdin).catch((err) => {
    feedError = err;
    child.kill("SIGKILL");
  });
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const code = await exited;
    await feeding;
    // A source failure explains a killed child better than its exit code does.
    if (feedError && (feedError as NodeJS.ErrnoException).code !== "EPIPE") throw feedError;
    if (code !== 0) throw new InvalidInputError(`${cmd} ${args.join(" ")} failed (exit ${code}): ${stderr.trim().split("\n")[0] ?? ""}`);
    if (feedError) throw feedError;
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await feeding;
    await exited.catch(() => {}); // reap it, so no zombie outlives the stream
  }
}

/**
 * Decodes zstd in-process (fzstd), yielding decompressed chunks as they come.
 * With `maxWindowBytes`, input whose frames would need a larger window (which
 * fzstd allocates whole) is refused before it is decoded: use it on untrusted input.
 */
export async function* zstdDecompressJs(source: ByteSource, maxWindowBytes?: number): AsyncGenerator<Buffer> {
  const guard = maxWindowBytes === undefined ? undefined : new ZstdFrameGuard(maxWindowBytes);
  const out: Buffer[] = [];
  const d = new Decompress((chunk) => {
    if (chunk.length > 0) out.push(Buffer.from(chunk));
  });
  const push = (chunk: Uint8Array, final: boolean) => {
    try {
      d.push(chunk, final);
    } catch (err) {
      throw new InvalidInputError("corrupt zstd data", { cause: err });
    }
  };
  for await (const chunk of source) {
    guard?.push(chunk);
    push(chunk, false);
    while (out.length > 0) yield out.shift()!;
  }
  guard?.finish();
  push(new Uint8Array(0), true);
  while (out.length > 0) yield out.shift()!;
}

/** Runs `source` through a zlib stream (its work is done in the libuv threadpool). */
async function* throughZlib(transform: NodeJS.ReadWriteStream & { destroy(): void }, source: ByteSource, what: string): AsyncGenerator<Buffer> {
  // A failing source destroys `transform` with its error, so the loop below reports every failure.
  const feeding = pipeline(Readable.from(source, { objectMode: false }), transform).catch(() => {});
  try {
    for await (const chunk of transform) yield chunk as Buffer;
  } catch (err) {
    if (String((err as NodeJS.ErrnoException).code).startsWith("Z_")) throw new InvalidInputError(`corrupt ${what} data`, { cause: err });
    throw err;
  } finally {
    transform.destroy();
    await feeding;
  }
}

/** Options of `decompress`. */
export interface DecompressOptions {
  /** Use the `zstd` binary instead of fzstd (for tests that compare the two). */
  preferCli?: boolean;
  /** Refuse zstd frames needing a larger window than this (see zstdDecompressJs); for untrusted input. */
  maxZstdWindowBytes?: number;
}

/** Decompresses `source`: zstd with fzstd, gzip with zlib, xz and bzip2 with their CLIs. */
export function decompress(method: Compression, source: ByteSource, opts: DecompressOptions = {}): AsyncIterable<Buffer> {
  switch (method) {
    case "none":
      return (async function* () {
        for await (const c of source) yield Buffer.isBuffer(c) ? c : Buffer.from(c);
      })();
    case "zstd":
      return opts.preferCli ? pipeThroughCommand("zstd", ["-dcq"], source) : zstdDecompressJs(source, opts.maxZstdWindowBytes);
    case "gzip":
      return throughZlib(createGunzip(), source, "gzip");
    case "xz":
      return pipeThroughCommand("xz", ["-dcq"], source);
    case "bzip2":
      return pipeThroughCommand("bzip2", ["-dcq"], source);
  }
}

/** Compresses with the `zstd` binary at a level that keeps the decoder window small. */
export function compressZstd(source: ByteSource, level = 6): AsyncIterable<Buffer> {
  return pipeThroughCommand("zstd", ["-cq", `-${level}`], source);
}

/**
 * Compresses with Node's zlib, off the event loop. Level 1 by default: a third
 * of level 6's CPU for a few percent more bytes (see README "The cache at scale").
 */
export function compressGzip(source: ByteSource, level = 1): AsyncIterable<Buffer> {
  return throughZlib(createGzip({ level, chunkSize: 256 << 10 }), source, "gzip");
}

/** A stream that is compressed, or not, and which of the two it was once it has ended. */
export interface MaybeCompressed {
  stream: AsyncIterable<Buffer>;
  /** How `stream` came out; asked before it has ended, an error. */
  method(): Compression;
}

/** When compressing a stream is not worth it (see compressWherePays). */
export interface AsIsRule {
  /** A source of at most this many bytes passes through unchanged. */
  maxAsIs: number;
  /** The first this many bytes are compressed as a probe (fast deflate) before the stream is. */
  probeBytes: number;
  /** A probe that saves less than this fraction of its bytes leaves the whole stream as it is. */
  minSaving: number;
}

/**
 * Compresses `source` with `compress` (as `method`), unless that does not pay:
 * a source of at most `maxAsIs` bytes (a disk block either way, and a zlib
 * stream's setup costs more than the rest), or one whose first `probeBytes`
 * hardly compress (a tarball, a compressed image: gzip of them is CPU spent for
 * nothing). Those pass through unchanged, as "none". A source no longer than the
 * probe is compressed once, whole, and kept so if that paid. Holds at most
 * `probeBytes` (and, for such a source, its compressed bytes).
 */
export function compressWherePays(source: ByteSource, rule: AsIsRule, method: Compression, compress: (s: ByteSource) => AsyncIterable<Buffer>): MaybeCompressed {
  let chosen: Compression | undefined;
  async function* stream(): AsyncGenerator<Buffer> {
    const it = iteratorOf(source);
    const head: Buffer[] = [];
    let size = 0;
    let ended = false;
    try {
      while (size < Math.max(rule.probeBytes, rule.maxAsIs + 1)) {
        const r = await it.next();
        if (r.done) {
          ended = true;
          break;
        }
        const chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
        head.push(chunk);
        size += chunk.length;
      }
      const rest = async function* () {
        yield* head;
        for (let r = await it.next(); !r.done; r = await it.next()) yield Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      };
      if (ended) {
        // All of it is in hand: compressed whole, it is its own probe.
        const whole = Buffer.concat(head);
        const compressed = size <= rule.maxAsIs ? null : await readAllBytes(compress([whole]));
        const keep = compressed !== null && compressed.length <= size * (1 - rule.minSaving);
        chosen = keep ? method : "none";
        if (size > 0) yield keep ? compressed : whole;
        return;
      }
      if (!(await pays(Buffer.concat(head).subarray(0, rule.probeBytes), rule.minSaving))) {
        chosen = "none";
        yield* rest();
        ended = true;
        return;
      }
      for await (const chunk of compress(rest())) yield chunk;
      chosen = method;
    } finally {
      if (!ended) await it.return?.();
    }
  }
  return {
    stream: stream(),
    method: () => {
      if (chosen === undefined) throw new Error("compressWherePays: asked how a stream came out before it ended");
      return chosen;
    },
  };
}

/** Whether a fast deflate of `probe` saves at least `minSaving` of it (deflated in the threadpool, off the event loop). */
async function pays(probe: Buffer, minSaving: number): Promise<boolean> {
  return (await deflateRawAsync(probe, { level: 1 })).length <= probe.length * (1 - minSaving);
}

const deflateRawAsync = promisify(deflateRaw);

/** Compresses with the `xz` binary. */
export function compressXz(source: ByteSource): AsyncIterable<Buffer> {
  return pipeThroughCommand("xz", ["-cq", "-6"], source);
}
