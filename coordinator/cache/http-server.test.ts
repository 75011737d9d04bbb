// The cache server and client over real HTTP on 127.0.0.1 (no Nix involved).

import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, readlink, writeFile } from "node:fs/promises";
import { createServer, get } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AuthError, InvalidInputError } from "../core/errors.js";
import { BusyError, compressXz, compressZstd, ConflictError, encodeString, encodeU64, formatSha256, generateKeyPair, HashMismatchError, hashSource, makeStorePath, MissingReferenceError, parseNarInfo, TooLargeError, UntrustedError, verifyNarInfo } from "../../proto/nix/mod.js";
import { hasValidPath, readValidNarInfo } from "./http-server.js";
import { chunked, collect, narFromTree, SAMPLE_TREE, type NarTree } from "../../proto/nix/testing/nar-fixtures.js";
import { startTestCache, type TestCache } from "../../test/fixtures/cache-server.js";

const SD = "/tmp/nix/store";
const P1 = `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-one`;
const P2 = `${SD}/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-two-1.0`;
const HP1 = "ya13ysp6mn5s1vkz1023zgghzvb2jlsb";
const NAR1 = narFromTree(SAMPLE_TREE);
const NAR2 = narFromTree({ dir: [["ref", { file: P1 }]] });

let cache: TestCache;
beforeEach(async () => {
  cache = await startTestCache(SD, { maxNarBytes: 1 << 20, maxConcurrentUploads: 2 });
});
afterEach(async () => {
  await cache.close();
});

async function rawPut(path: string, body: Buffer, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  const res = await fetch(`${cache.url}${path}`, { method: "PUT", body: new Uint8Array(body), headers: { Authorization: `Bearer ${cache.token}`, ...headers } });
  return { status: res.status, text: await res.text() };
}

async function stored(): Promise<{ narinfos: string[]; nars: string[] }> {
  const list = async (k: "narinfo" | "nar") => {
    const out: string[] = [];
    for await (const n of cache.storage.list(k)) out.push(n);
    return out;
  };
  return { narinfos: await list("narinfo"), nars: await list("nar") };
}

describe("cache server: reads", () => {
  it("serves nix-cache-info and 404s unknown things", async () => {
    expect(await (await fetch(`${cache.url}/nix-cache-info`)).text()).toBe(`StoreDir: ${SD}\nWantMassQuery: 1\nPriority: 30\n`);
    expect((await fetch(`${cache.url}/${HP1}.narinfo`)).status).toBe(404);
    expect((await fetch(`${cache.url}/nar/../../etc/passwd`)).status).toBe(404);
    expect((await fetch(`${cache.url}/log/..%2F..%2Fetc`)).status).toBe(404);
    expect(await cache.client().narInfo(P1)).toBeNull();
    await expect(cache.client({ storeDir: "/nix/store" }).cacheInfo()).rejects.toThrow(/store dir/);
    expect((await cache.client().cacheInfo()).priority).toBe(30);
  });
});

describe("cache server: NARs stored as zstd (narCompression)", () => {
  it("stores .nar.zst with Compression: zstd, served and verified like gzip", async () => {
    const zcache = await startTestCache(SD, { narCompression: "zstd" });
    try {
      const client = zcache.client();
      expect((await client.upload({ storePath: P1, references: [], narStream: chunked(NAR1, 1000) })).status).toBe(201);
      const info = (await client.narInfo(P1))!;
      expect(info.compression).toBe("zstd");
      expect(info.url).toBe(`nar/${info.fileHash!.slice(7)}.nar.zst`);
      const file = await readFile(join(zcache.root, info.url));
      expect(file.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))).toBe(true); // zstd frame magic
      expect(info.fileHash).toBe(formatSha256(createHash("sha256").update(file).digest()));
      expect((await collect(client.narStream(info))).equals(NAR1)).toBe(true);
    } finally {
      await zcache.close();
    }
  });
});

describe("cache server: uploads", () => {
  it("stores a NAR as gzip with a signed narinfo that the client verifies", async () => {
    const client = cache.client();
    const nar = narFromTree({ file: "a line of a wrapper script\n".repeat(500) }); // over one disk block
    expect((await fetch(`${cache.url}/${HP1}.narinfo`)).status).toBe(404); // and that 404 is not remembered:
    expect((await client.upload({ storePath: P1, references: [], narStream: chunked(nar, 1000) })).status).toBe(201);
    const text = await (await fetch(`${cache.url}/${HP1}.narinfo`)).text();
    const info = parseNarInfo(text, SD);
    expect(info.compression).toBe("gzip");
    expect(info.narHash).toBe((await hashSource([nar])).hash);
    expect(info.narSize).toBe(nar.length);
    expect(verifyNarInfo(info, [cache.keys.publicKey])).toBe(true);
    const file = await readFile(join(cache.root, info.url));
    expect(info.fileHash).toBe(formatSha256(createHash("sha256").update(file).digest()));
    expect(info.fileSize).toBe(file.length);
    expect(info.url).toBe(`nar/${info.fileHash!.slice(7)}.nar.gz`);
    expect(gunzipSync(file).equals(nar)).toBe(true);
    const head = await fetch(`${cache.url}/${HP1}.narinfo`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await client.narInfo(P1)).toEqual(info);
    expect((await collect(client.narStream(info))).equals(nar)).toBe(true);
    expect(await hasValidPath(cache.storage, P1)).toBe(true);
    expect(await hasValidPath(cache.storage, P2)).toBe(false);
    expect(await cache.tmpFiles()).toEqual([]);
  });

  it("stores a NAR of one disk block as it is (Compression: none)", async () => {
    const client = cache.client();
    expect(NAR1.length).toBeLessThanOrEqual(4096);
    expect((await client.upload({ storePath: P1, references: [], narStream: chunked(NAR1, 100) })).status).toBe(201);
    const info = (await client.narInfo(P1))!;
    expect(info.compression).toBe("none");
    expect(info.url).toBe(`nar/${info.fileHash!.slice(7)}.nar`);
    expect(info.fileHash).toBe(info.narHash);
    expect(info.fileSize).toBe(NAR1.length);
    expect((await readFile(join(cache.root, info.url))).equals(NAR1)).toBe(true);
    expect((await collect(client.narStream(info))).equals(NAR1)).toBe(true);
  });

  it("accepts zstd and xz compressed bodies and X-Nix metadata (but no claimed CA)", async () => {
    const client = cache.client();
    await client.upload({ storePath: P1, references: [], narStream: compressXz([NAR1]), compression: "xz" });
    const deriver = `${SD}/2h9i448h1w70s30b184hh1q60l2060h1-two-1.0.drv`;
    const ca = "fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
    await client.upload({ storePath: P2, references: [P1, P2], deriver, ca, narStream: compressZstd([NAR2]), compression: "zstd" });
    const info = (await client.narInfo(P2))!;
    expect(info.references).toEqual([P2, P1].map((p) => p.slice(SD.length + 1)).sort());
    expect(info.deriver).toBe(deriver.slice(SD.length + 1));
    expect(info.ca).toBeUndefined(); // a claimed CA is never signed: the cache states one only where it computed it
    expect((await collect(client.narStream(info))).equals(NAR2)).toBe(true);
    expect((await client.closure([P2])).map((i) => i.storePath)).toEqual([P1, P2]);
    expect((await client.closure([P2], { isPresent: (p) => p === P1 })).map((i) => i.storePath)).toEqual([P2]);
  });

  it("is idempotent for the same NAR and first-writer-wins for a different one", async () => {
    const client = cache.client();
    await client.upload({ storePath: P1, references: [], narStream: [NAR1] });
    const before = await readFile(join(cache.root, `${HP1}.narinfo`), "utf8");
    expect((await client.upload({ storePath: P1, references: [], narStream: [NAR1] })).status).toBe(200);
    const hash = (await hashSource([NAR1])).hash;
    expect((await client.upload({ storePath: P1, references: [], narStream: [NAR1], narHash: hash, narSize: NAR1.length })).status).toBe(200);
    const other = narFromTree({ file: "different" });
    await expect(client.upload({ storePath: P1, references: [], narStream: [other] })).rejects.toBeInstanceOf(ConflictError);
    const otherHash = (await hashSource([other])).hash;
    await expect(client.upload({ storePath: P1, references: [], narStream: [other], narHash: otherHash })).rejects.toBeInstanceOf(ConflictError);
    expect(await readFile(join(cache.root, `${HP1}.narinfo`), "utf8")).toBe(before);
    expect((await stored()).nars).toHaveLength(1);
  });

  it("lets exactly one of two racing different uploads win", async () => {
    const client = cache.client();
    const a = narFromTree({ file: "a".repeat(50000) });
    const b = narFromTree({ file: "b".repeat(50000) });
    const results = await Promise.allSettled([a, b].map((nar) => client.upload({ storePath: P1, references: [], narStream: chunked(nar, 4096) })));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect((results.find((r) => r.status === "rejected") as PromiseRejectedResult).reason).toBeInstanceOf(ConflictError);
    const info = (await client.narInfo(P1))!;
    const winner = results[0].status === "fulfilled" ? a : b;
    expect((await collect(client.narStream(info))).equals(winner)).toBe(true);
  });

  it.each([
    ["'..' entry", narFromTree({ dir: [["..", { file: "x" }]] }), /entry name '\.\.'/],
    ["'/' in a name", narFromTree({ dir: [["a/b", { file: "x" }]] }), /'\/'/],
    ["NUL in a name", narFromTree({ dir: [["a\0", { file: "x" }]] }), /NUL/],
    ["unsorted entries", narFromTree({ dir: [["b", { file: "" }], ["a", { file: "" }]] }), /ascending/],
    ["a truncated NAR", NAR1.subarray(0, NAR1.length - 9), /truncated/],
    ["trailing garbage", Buffer.concat([NAR1, Buffer.from("junk")]), /trailing/],
    ["not a NAR", Buffer.from("hello world, this is not a nar at all"), /NAR/],
  ])("rejects %s with 400 and stores nothing", async (_label, nar, pattern) => {
    const res = await rawPut(`/upload/${HP1}`, nar, { "X-Nix-Store-Path": P1 });
    expect(res.status).toBe(400);
    expect(res.text).toMatch(pattern);
    expect(res.text.trim().split("\n")).toHaveLength(1);
    expect(await stored()).toEqual({ narinfos: [], nars: [] });
    expect(await cache.tmpFiles()).toEqual([]);
  });

  it("rejects a corrupt compressed body and wrong claims", async () => {
    const zst = await collect(compressZstd([NAR1]));
    zst[zst.length >> 1] ^= 0xff;
    expect((await rawPut(`/upload/${HP1}`, zst, { "X-Nix-Store-Path": P1, "X-Nix-Compression": "zstd" })).status).toBe(400);
    const wrongHash = (await hashSource([NAR2])).hash;
    const r1 = await rawPut(`/upload/${HP1}`, NAR1, { "X-Nix-Store-Path": P1, "X-Nix-Nar-Hash": wrongHash });
    expect([r1.status, r1.text]).toEqual([400, expect.stringMatching(/claimed/)]);
    const r2 = await rawPut(`/upload/${HP1}`, NAR1, { "X-Nix-Store-Path": P1, "X-Nix-Nar-Size": String(NAR1.length - 8) });
    expect([r2.status, r2.text]).toEqual([400, expect.stringMatching(/claimed/)]);
    // Claimed small (so taken whole in memory), sent larger: refused, not held past the claim's bound.
    const larger = narFromTree({ file: randomBytes(900 << 10) });
    const r3 = await rawPut(`/upload/${HP1}`, larger, { "X-Nix-Store-Path": P1, "X-Nix-Nar-Size": "200" });
    expect([r3.status, r3.text]).toEqual([400, expect.stringMatching(/claimed/)]);
    const r4 = await rawPut(`/upload/${HP1}`, larger, { "X-Nix-Store-Path": P1, "X-Nix-Nar-Size": String(64 << 10) });
    expect([r4.status, r4.text]).toEqual([400, expect.stringMatching(/claimed/)]);
    expect((await rawPut(`/upload/${HP1}`, NAR1, { "X-Nix-Store-Path": P2 })).status).toBe(400);
    expect((await rawPut(`/upload/${HP1}`, NAR1, { "X-Nix-Store-Path": `/nix/store/${HP1}-one` })).status).toBe(400);
    expect((await rawPut(`/upload/${HP1}`, NAR1, { "X-Nix-Store-Path": P1, "X-Nix-Compression": "br" })).status).toBe(400);
    expect((await rawPut(`/upload/${HP1}`, NAR1, { "X-Nix-Store-Path": P1, "X-Nix-Compression": "gzip" })).status).toBe(400);
    expect((await rawPut(`/upload/${HP1}`, NAR1, { "X-Nix-Store-Path": P1, "X-Nix-References": "../x" })).status).toBe(400);
    expect(await stored()).toEqual({ narinfos: [], nars: [] });
  });

  it("answers 413 above maxNarBytes, whether claimed, sent or decompressed", async () => {
    const big = narFromTree({ file: Buffer.alloc(2 << 20) });
    expect((await rawPut(`/upload/${HP1}`, NAR1, { "X-Nix-Store-Path": P1, "X-Nix-Nar-Size": String(4 << 20) })).status).toBe(413);
    const client = cache.client();
    await expect(client.upload({ storePath: P1, references: [], narStream: chunked(big, 65536) })).rejects.toBeInstanceOf(TooLargeError);
    const bomb = await collect(compressZstd([big]));
    expect(bomb.length).toBeLessThan(1 << 20);
    expect((await rawPut(`/upload/${HP1}`, bomb, { "X-Nix-Store-Path": P1, "X-Nix-Compression": "zstd" })).status).toBe(413);
    // A zstd frame whose window alone (a declared 1 GiB content size) would cost that much memory to decode.
    const wide = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xe0, 0, 0, 0, 0x40, 0, 0, 0, 0, 1, 0, 0]);
    const r = await rawPut(`/upload/${HP1}`, wide, { "X-Nix-Store-Path": P1, "X-Nix-Compression": "zstd" });
    expect([r.status, r.text]).toEqual([400, expect.stringMatching(/window/)]);
    expect(await stored()).toEqual({ narinfos: [], nars: [] });
    expect(await cache.tmpFiles()).toEqual([]);
  });

  it("requires a valid token", async () => {
    const res = await fetch(`${cache.url}/upload/${HP1}`, { method: "PUT", body: new Uint8Array(NAR1), headers: { "X-Nix-Store-Path": P1 } });
    expect(res.status).toBe(401);
    await expect(cache.client({ token: "wrong" }).upload({ storePath: P1, references: [], narStream: [NAR1] })).rejects.toBeInstanceOf(AuthError);
    expect(await stored()).toEqual({ narinfos: [], nars: [] });
  });

  it("runs at most maxConcurrentUploads uploads of one uploader at once: the next gets 429 and one line", async () => {
    // Bodies that stay open until released, so the uploads are all in flight together.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const half = Math.floor(NAR1.length / 2);
    const slow = () =>
      new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new Uint8Array(NAR1.subarray(0, half)));
        },
        async pull(c) {
          await held;
          c.enqueue(new Uint8Array(NAR1.subarray(half)));
          c.close();
        },
      });
    const put = (body: ReadableStream<Uint8Array> | Uint8Array) =>
      fetch(`${cache.url}/upload/${HP1}`, { method: "PUT", body, headers: { Authorization: `Bearer ${cache.token}`, "X-Nix-Store-Path": P1 }, duplex: "half" } as RequestInit);
    const first = [put(slow()), put(slow())];
    // Both are in the server once each has staged a temp file (they wait there for the rest of their bodies).
    for (let i = 0; i < 200 && (await cache.tmpFiles()).length < 2; i++) await new Promise((r) => setTimeout(r, 25));
    expect(await cache.tmpFiles()).toHaveLength(2);
    const third = await put(new Uint8Array(NAR1));
    expect(third.status).toBe(429);
    expect((await third.text()).trim()).toBe("test operator already has 2 uploads running; at most 2 at once");
    // The client says so with an error of its own, which a submit waits out and tries again.
    await expect(cache.client().upload({ storePath: P1, references: [], narStream: [NAR1] })).rejects.toBeInstanceOf(BusyError);
    release();
    expect((await Promise.all(first)).map((r) => r.status).sort()).toEqual([200, 201]);
    expect((await put(new Uint8Array(NAR1))).status).toBe(200); // the slots are free again
  });

  it("requires references to be uploaded first (except self-references)", async () => {
    const client = cache.client();
    await expect(client.upload({ storePath: P2, references: [P1], narStream: [NAR2] })).rejects.toBeInstanceOf(MissingReferenceError);
    expect((await client.upload({ storePath: P1, references: [P1], narStream: [NAR1] })).status).toBe(201);
    expect((await client.upload({ storePath: P2, references: [P1], narStream: [NAR2] })).status).toBe(201);
  });

  it("serves build logs the coordinator stored, and takes no log uploads from anyone", async () => {
    const client = cache.client();
    const drv = `${SD}/2h9i448h1w70s30b184hh1q60l2060h1-two-1.0.drv`;
    expect(await client.getLog(drv)).toBeNull();
    await cache.storage.put("log", drv.slice(SD.length + 1), "building...\ndone\n");
    expect(await client.getLog(drv)).toBe("building...\ndone\n");
    const put = await fetch(`${cache.url}/log/${drv.slice(SD.length + 1)}`, { method: "PUT", headers: { authorization: `Bearer ${cache.token}` }, body: "overwritten" });
    expect(put.status).toBe(404);
    expect(await client.getLog(drv)).toBe("building...\ndone\n");
  });
});

describe("cache streaming", () => {
  it("uploads and downloads a 256 MiB NAR with bounded memory", async () => {
    const size = 256 << 20;
    const block = Buffer.alloc(1 << 20, 0x5a);
    async function* bigNar() {
      yield Buffer.concat(["nix-archive-1", "(", "type", "regular", "contents"].map((t) => encodeString(t)));
      yield encodeU64(size);
      for (let i = 0; i < size; i += block.length) yield block;
      yield encodeString(")");
    }
    const big = await startTestCache(SD, { maxNarBytes: 1 << 30 });
    let peak = 0;
    const base = process.memoryUsage().rss;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss - base)), 10);
    try {
      const client = big.client();
      expect((await client.upload({ storePath: P1, references: [], narStream: bigNar() })).status).toBe(201);
      const info = (await client.narInfo(P1))!;
      expect(info.narSize).toBe(size + 88 + 8 + 16); // header tokens, length, ")"
      let n = 0;
      for await (const c of client.narStream(info)) n += c.length;
      expect(n).toBe(info.narSize);
    } finally {
      clearInterval(timer);
      await big.close();
    }
    expect(peak).toBeLessThan(128 << 20);
  }, 60_000);

  it("sends a NAR file whole, answers HEAD, and closes the file when a client goes away mid-download", async () => {
    const name = `${"0".repeat(52)}.nar.gz`;
    const bytes = randomBytes(5 * (1 << 20) + 12345); // chunks of 1 MiB and a tail
    await cache.storage.put("nar", name, bytes);
    const url = `${cache.url}/nar/${name}`;
    expect(Buffer.from(await (await fetch(url)).arrayBuffer()).equals(bytes)).toBe(true);
    const head = await fetch(url, { method: "HEAD" });
    expect([head.status, head.headers.get("content-length")]).toEqual([200, String(bytes.length)]);
    const openOnNar = async () => {
      let n = 0;
      for (const fd of await readdir("/proc/self/fd")) if ((await readlink(`/proc/self/fd/${fd}`).catch(() => "")).endsWith(name)) n++;
      return n;
    };
    await new Promise<void>((resolve, reject) => {
      const req = get(url, (res) => res.once("data", () => (req.destroy(), resolve())));
      req.once("error", reject);
    });
    for (let i = 0; i < 50 && (await openOnNar()) > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await openOnNar()).toBe(0);
    expect(Buffer.from(await (await fetch(url)).arrayBuffer()).equals(bytes)).toBe(true); // and it goes on serving
  });

  it("answers a malformed NAR with 400 while a large body is still being sent", async () => {
    const big = await startTestCache(SD, { maxNarBytes: 1 << 30 });
    const nar = narFromTree({ dir: [["..", { file: Buffer.alloc(64 << 20) }]] });
    try {
      const upload = big.client().upload({ storePath: P1, references: [], narStream: chunked(nar, 1 << 16) });
      await expect(upload).rejects.toBeInstanceOf(InvalidInputError);
      await expect(upload).rejects.toThrow(/HTTP 400: invalid NAR: entry name '\.\.'/);
      expect(await big.tmpFiles()).toEqual([]);
    } finally {
      await big.close();
    }
  }, 30_000);

  it("lets go of the NAR's source when the cache refuses an upload before reading it all", async () => {
    // A worker's upload reads the store path through an open file: left suspended, it kept the path "alive" to Nix.
    let sent = 0;
    let closed = false;
    async function* endless(): AsyncGenerator<Uint8Array> {
      try {
        for (;;) {
          sent++;
          yield Buffer.alloc(1 << 16);
        }
      } finally {
        closed = true;
      }
    }
    await expect(cache.client({ token: "wrong" }).upload({ storePath: P1, references: [], narStream: endless() })).rejects.toBeInstanceOf(AuthError);
    expect({ closed, sentAll: sent > 10_000 }).toEqual({ closed: true, sentAll: false });
  });
});

describe("cache client: trust", () => {
  beforeEach(async () => {
    await cache.client().upload({ storePath: P1, references: [], narStream: [NAR1] });
  });

  it("refuses narinfos signed by an untrusted key", async () => {
    const stranger = cache.client({ trustedPublicKeys: [generateKeyPair("other").publicKey] });
    await expect(stranger.narInfo(P1)).rejects.toBeInstanceOf(UntrustedError);
  });

  it("refuses a narinfo edited after signing", async () => {
    const text = (await cache.storage.getText("narinfo", HP1))!;
    await cache.storage.put("narinfo", HP1, text.replace(/NarSize: \d+/, "NarSize: 99"));
    await expect(cache.client().narInfo(P1)).rejects.toBeInstanceOf(UntrustedError);
  });

  it("fails the NAR stream when the stored file was tampered with", async () => {
    const client = cache.client();
    const info = (await client.narInfo(P1))!;
    const tampered = narFromTree({ dir: (SAMPLE_TREE as { dir: [string | Buffer, NarTree][] }).dir.slice(1) });
    await writeFile(join(cache.root, info.url), info.compression === "gzip" ? gzipSync(tampered) : tampered); // as the cache stored it
    await expect(collect(client.narStream(info))).rejects.toBeInstanceOf(HashMismatchError);
    expect(await readValidNarInfo(cache.storage, P1)).not.toBeNull(); // the server does not re-hash on reads
  });
});

describe("cache server: batch uploads (/upload-batch)", () => {
  /** A text path as Nix names it (a .drv file, say): its name comes from its bytes and references. */
  const textItem = (text: string, name: string, references: string[] = []) => ({
    storePath: makeStorePath(["text", ...[...references].sort()].join(":"), createHash("sha256").update(text).digest(), name, SD),
    references,
    nar: [narFromTree({ file: text })],
  });
  const src = textItem("echo building\n", "builder.sh");
  const drv = textItem(`#!/bin/sh\nexec ${src.storePath}\n`, "app-1.0-wrapper.sh", [src.storePath]);
  let batchCache: TestCache;
  beforeEach(async () => {
    batchCache = await startTestCache(SD, { grant: () => ({ kind: "content-addressed", by: "alice" }) });
  });
  afterEach(async () => {
    await batchCache.close();
  });

  it("stores text paths in one request, each after what it references; again, each is already there", async () => {
    const client = batchCache.client();
    expect(await client.uploadBatch([src, drv])).toEqual([
      { storePath: src.storePath, status: 201 },
      { storePath: drv.storePath, status: 201 },
    ]);
    const info = (await client.narInfo(drv.storePath))!;
    expect(info.references).toEqual([src.storePath.slice(SD.length + 1)]);
    expect(info.ca).toMatch(/^text:sha256:/);
    expect(await client.uploadBatch([src, drv])).toEqual([
      { storePath: src.storePath, status: 200 },
      { storePath: drv.storePath, status: 200 },
    ]);
    expect(await batchCache.tmpFiles()).toEqual([]);
  });

  it("refuses a path its bytes don't name, or one before what it references, keeps what came before, and names it", async () => {
    const client = batchCache.client();
    const planted = { ...textItem("rm -rf ~\n", "builder.sh"), storePath: `${SD}/${"0".repeat(32)}-builder.sh` };
    const refused = client.uploadBatch([src, planted, drv]);
    await expect(refused).rejects.toBeInstanceOf(AuthError);
    await expect(refused).rejects.toThrow(`HTTP 403: ${planted.storePath} `);
    expect(await client.narInfo(src.storePath)).not.toBeNull();
    expect(await client.narInfo(planted.storePath)).toBeNull();
    const other = textItem("echo other\n", "other.sh");
    const early = textItem(`exec ${other.storePath}\n`, "early.sh", [other.storePath]);
    await expect(client.uploadBatch([early, other])).rejects.toBeInstanceOf(MissingReferenceError);
    expect(await client.narInfo(early.storePath)).toBeNull();
  });

  it("takes no build outputs, no token-less caller and no path over its size limit", async () => {
    const put = (headers: Record<string, string>) => fetch(`${batchCache.url}/upload-batch`, { method: "PUT", body: new Uint8Array(8), headers });
    const withLease = await put({ Authorization: `Bearer ${batchCache.token}`, "X-Farm-Lease-Drv": drv.storePath, "X-Farm-Lease-Epoch": "1" });
    expect([withLease.status, (await withLease.text()).trim()]).toEqual([400, "a build's outputs are uploaded one at a time, under their lease"]);
    expect((await put({})).status).toBe(401);
    const big = { storePath: `${SD}/${"1".repeat(32)}-big`, references: [], nar: [narFromTree({ file: Buffer.alloc(17 << 20) })] };
    await expect(batchCache.client().uploadBatch([big])).rejects.toBeInstanceOf(TooLargeError);
    expect(await batchCache.tmpFiles()).toEqual([]);
  });

  it("is null from a cache that takes no batches, so the caller uploads one path at a time", async () => {
    const old = createServer((_, res) => res.writeHead(404).end("not found\n"));
    await new Promise<void>((r) => old.listen(0, "127.0.0.1", r));
    try {
      const client = batchCache.client({ baseUrl: `http://127.0.0.1:${(old.address() as AddressInfo).port}` });
      expect(await client.uploadBatch([src])).toBeNull();
    } finally {
      old.close();
    }
  });
});
