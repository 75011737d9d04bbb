// The CPU an upload costs the cache's process, by how the cache stores NARs:
// the spawned `zstd` it used before (the baseline), in-process gzip (what it
// does now), and the alternatives considered. Each pipeline hashes the NAR and
// the stored file as the real upload does. CPU is the process's own (all threads,
// the zlib threadpool included) plus that of reaped children (the zstd processes).

import { readFileSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { compressGzip, compressZstd, encodeString, encodeU64, hashThrough, type ByteSource } from "../../proto/nix/mod.js";
import { zstdDecompressJs } from "../../proto/nix/compression.js";

/** One way of storing an upload: turns the request body into the stored file's bytes. */
interface Method {
  name: string;
  /** How the uploader sends the NAR (prepared outside the measurement). */
  send: "none" | "zstd";
  store: (body: ByteSource) => AsyncIterable<Buffer>;
}

async function* passThrough(body: ByteSource): AsyncGenerator<Buffer> {
  for await (const c of body) yield Buffer.isBuffer(c) ? c : Buffer.from(c);
}

/** The methods measured; the first is the baseline. */
export const UPLOAD_METHODS: Method[] = [
  { name: "spawned zstd -6 (before)", send: "none", store: (b) => compressZstd(hashThrough(b, () => {})) },
  { name: "zlib gzip -1, threadpool (now)", send: "none", store: (b) => compressGzip(hashThrough(b, () => {}), 1) },
  { name: "zlib gzip -6, threadpool", send: "none", store: (b) => compressGzip(hashThrough(b, () => {}), 6) },
  // Option (b): the uploader sends zstd; the cache decodes it to check the NAR and stores the bytes sent.
  { name: "zstd sent, fzstd-verified, stored as sent", send: "zstd", store: async function* (b) {
      const sent: Buffer[] = [];
      const tee = (async function* () {
        for await (const c of b) {
          const buf = Buffer.isBuffer(c) ? c : Buffer.from(c);
          sent.push(buf);
          yield buf;
        }
      })();
      for await (const _ of hashThrough(zstdDecompressJs(tee, 8 << 20), () => {})) {
        yield* sent.splice(0);
      }
      yield* sent.splice(0);
    } },
  { name: "Compression: none (hash only)", send: "none", store: (b) => passThrough(hashThrough(b, () => {})) },
];

/** A NAR of one regular file. */
export function narOfFile(contents: Buffer): Buffer {
  return Buffer.concat([...["nix-archive-1", "(", "type", "regular", "contents"].map((t) => encodeString(t)), encodeU64(contents.length), contents, Buffer.alloc((8 - (contents.length % 8)) % 8), encodeString(")")]);
}

/** Some compressible, binary-like bytes: a slice of the node executable. */
export function realisticBytes(size: number): Buffer {
  const exe = readFileSync(process.execPath);
  const out = Buffer.alloc(size);
  for (let at = 0; at < size; at += exe.length) exe.copy(out, at, 0, Math.min(exe.length, size - at));
  return out;
}

/** Yields to the event loop before each chunk, as a socket's data events would. */
async function* paced(pieces: Buffer[]): AsyncGenerator<Buffer> {
  for (const p of pieces) {
    await new Promise((resolve) => setImmediate(resolve));
    yield p;
  }
}

/** CPU seconds of this process (all threads) and of its reaped children. */
function cpuSeconds(): { self: number; children: number } {
  const u = process.cpuUsage();
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ");
  const ticks = Number(fields[13]) + Number(fields[14]); // cutime, cstime (fields 16, 17; 100 per second)
  return { self: (u.user + u.system) / 1e6, children: ticks / 100 };
}

/** What one method cost over `count` uploads. */
export interface UploadCost {
  method: string;
  uploads: number;
  narBytes: number;
  /** Stored bytes over NAR bytes. */
  ratio: number;
  cpuMsPerUpload: number;
  childCpuMsPerUpload: number;
  wallMsPerUpload: number;
  /** The longest the event loop was blocked meanwhile. */
  maxLoopDelayMs: number;
}

/** Runs `count` uploads of `nar` through `method`, `concurrency` at a time (after a few unmeasured ones, so no method pays the JIT's warm-up for the others). */
export async function measureUploads(method: Method, nar: Buffer, count: number, concurrency: number): Promise<UploadCost> {
  const body = method.send === "zstd" ? Buffer.concat(await collect(compressZstd([nar]))) : nar;
  if (nar.length < 1 << 20) for (let i = 0; i < 10; i++) for await (const _ of method.store(paced([body]))) continue;
  const chunk = 64 << 10;
  const pieces: Buffer[] = [];
  for (let at = 0; at < body.length; at += chunk) pieces.push(body.subarray(at, at + chunk));
  let stored = 0;
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const before = cpuSeconds();
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next++;
        for await (const c of method.store(paced(pieces))) stored += c.length;
      }
    }),
  );
  const wall = performance.now() - t0;
  const after = cpuSeconds();
  loop.disable();
  return {
    method: method.name,
    uploads: count,
    narBytes: nar.length,
    ratio: stored / (nar.length * count),
    cpuMsPerUpload: ((after.self - before.self + after.children - before.children) * 1000) / count,
    childCpuMsPerUpload: ((after.children - before.children) * 1000) / count,
    wallMsPerUpload: wall / count,
    maxLoopDelayMs: loop.max / 1e6,
  };
}

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const c of source) out.push(c);
  return out;
}
