// Stock Nix 2.8 substitutes from our HTTP cache into a fresh store at the same
// store path (a private mount namespace), and our client reads a Nix-made cache.

import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CacheClient, compressZstd, dumpPath, formatNarInfo, formatSha256, generateKeyPair, hashPart, parseSecretKey, signNarInfo, topoSortByReferences, type NarInfo } from "../../proto/nix/mod.js";
import { AuthError } from "../core/errors.js";
import { DiskStorage } from "./disk-storage.js";
import { createCacheServer } from "./http-server.js";
import { startTestCache, type TestCache } from "../../test/fixtures/cache-server.js";
import { collect } from "../../proto/nix/testing/nar-fixtures.js";
import { buildTestAttr, destroyNixEnv, makeAltRoot, makeNixEnv, nixLines, runNix, type TestNixEnv } from "../../proto/nix/testing/nix-env.js";

let nix: TestNixEnv;
let cache: TestCache;
const out: Record<string, string> = {};

async function q(flag: string, path: string): Promise<string[]> {
  return nixLines(nix, "nix-store", ["-q", flag, path]);
}

beforeAll(async () => {
  nix = await makeNixEnv();
  for (const attr of ["app", "file", "link"]) out[attr] = await buildTestAttr(nix, attr);
  cache = await startTestCache(nix.storeDir);
  const paths = [...new Set([...(await q("-R", out.app)), out.file, out.link])];
  const metas = await Promise.all(paths.map(async (p) => ({ storePath: p, references: await q("--references", p), deriver: (await q("--deriver", p))[0] })));
  const client = cache.client();
  for (const m of topoSortByReferences(metas)) {
    const [narHash] = await q("--hash", m.storePath);
    const r = await client.upload({ ...m, narStream: dumpPath(m.storePath), narHash });
    expect(r.status).toBe(201);
  }
}, 180_000);

afterAll(async () => {
  await cache?.close();
  if (nix) await destroyNixEnv(nix);
});

function substituteArgs(publicKey: string): string[] {
  return ["--option", "substituters", cache.url, "--option", "trusted-public-keys", publicKey, "--option", "narinfo-cache-negative-ttl", "0"];
}

describe("stock Nix substituting from our cache", () => {
  it("realises a closure into an empty store with the same store dir, gzip and uncompressed NARs alike", async () => {
    const closure = [...new Set([...(await q("-R", out.app)), out.file, out.link])];
    const stored = new Set((await Promise.all(closure.map((p) => cache.client().narInfo(p)))).map((i) => i!.compression));
    expect([...stored].sort()).toEqual(["gzip", "none"]); // the dep's 100 kB file is gzipped; the small paths are kept as they are
    const alt = await makeAltRoot(nix, "subst");
    const before = await runNix(nix, "ls", ["-A", nix.storeDir], { altRoot: alt });
    expect(before.stdout.toString()).toBe("");
    const realised = await nixLines(nix, "nix-store", ["-r", out.app, out.file, out.link, ...substituteArgs(cache.keys.publicKey)], { altRoot: alt });
    expect(realised).toEqual([out.app, out.file, out.link]);
    const hello = await runNix(nix, `${out.app}/bin/app-hello`, [], { altRoot: alt });
    expect(hello.stdout.toString()).toBe("hi from dep\n");
    await runNix(nix, "nix-store", ["--verify-path", out.app], { altRoot: alt });
    for (const p of [out.app, out.file, out.link]) {
      expect(await nixLines(nix, "nix-store", ["-q", "--hash", p], { altRoot: alt })).toEqual(await q("--hash", p));
      expect((await runNix(nix, "nix-store", ["--dump", p], { altRoot: alt })).stdout.equals((await runNix(nix, "nix-store", ["--dump", p])).stdout)).toBe(true);
    }
    expect((await nixLines(nix, "nix-store", ["-q", "--references", out.app], { altRoot: alt })).sort()).toEqual((await q("--references", out.app)).sort());
  }, 120_000);

  it("still substitutes a zstd NAR that an earlier version of the cache stored, and our client reads it too", async () => {
    const older = await startTestCache(nix.storeDir);
    try {
      const nar = await collect(dumpPath(out.file));
      const zst = await collect(compressZstd([nar]));
      const fileHash = formatSha256(createHash("sha256").update(zst).digest());
      const url = `nar/${fileHash.slice("sha256:".length)}.nar.zst`;
      await older.storage.put("nar", url.slice("nar/".length), zst);
      const [narHash] = await q("--hash", out.file);
      const info: NarInfo = { storePath: out.file, url, compression: "zstd", fileHash, fileSize: zst.length, narHash, narSize: nar.length, references: [], sigs: [] };
      await older.storage.put("narinfo", hashPart(out.file), formatNarInfo(signNarInfo(info, parseSecretKey(older.keys.secretKey))));
      const alt = await makeAltRoot(nix, "zstd");
      const args = ["--option", "substituters", older.url, "--option", "trusted-public-keys", older.keys.publicKey, "--option", "narinfo-cache-negative-ttl", "0"];
      expect(await nixLines(nix, "nix-store", ["-r", out.file, ...args], { altRoot: alt })).toEqual([out.file]);
      const read = await older.client().narInfo(out.file);
      expect(read?.compression).toBe("zstd");
      expect((await collect(older.client().narStream(read!))).equals(nar)).toBe(true);
    } finally {
      await older.close();
    }
  }, 60_000);

  it("serves build logs that `nix log` finds through the narinfo's Deriver", async () => {
    const [drv] = await q("--deriver", out.file);
    await cache.storage.put("log", drv.slice(drv.lastIndexOf("/") + 1), "log of the file build\n");
    const alt = await makeAltRoot(nix, "log");
    const opts = substituteArgs(cache.keys.publicKey);
    await runNix(nix, "nix-store", ["-r", out.file, ...opts], { altRoot: alt });
    const log = await runNix(nix, "nix", ["log", out.file, ...opts], { altRoot: alt });
    expect(log.stdout.toString()).toBe("log of the file build\n");
  }, 60_000);

  it("is refused by Nix when the cache's key is not trusted", async () => {
    const alt = await makeAltRoot(nix, "untrusted");
    const other = generateKeyPair("not-this-cache-1").publicKey;
    await expect(runNix(nix, "nix-store", ["-r", out.file, ...substituteArgs(other)], { altRoot: alt })).rejects.toThrow(/not signed by any of the keys/);
    const after = await runNix(nix, "ls", ["-A", nix.storeDir], { altRoot: alt });
    expect(after.stdout.toString()).not.toContain(out.file.slice(nix.storeDir.length + 1));
  }, 60_000);
});

describe("our client reading a cache made by Nix", () => {
  it("verifies Nix's signatures and decompresses its xz NARs", async () => {
    const keys = generateKeyPair("nix-made-2");
    const keyFile = join(nix.dir, "nix-made-2.sec");
    await writeFile(keyFile, keys.secretKey);
    const cacheDir = join(nix.dir, "nix-made-xz");
    await runNix(nix, "nix", ["copy", "--to", `file://${cacheDir}?secret-key=${keyFile}`, out.app]);
    // Serve Nix's own directory layout with our server (it is the same layout).
    const server = createCacheServer({
      storage: await DiskStorage.open(cacheDir),
      storeDir: nix.storeDir,
      secretKey: generateKeyPair("unused").secretKey,
      authorizeUpload: () => {
        throw new AuthError("no uploads here");
      },
      maxNarBytes: 1 << 20,
      logger: pino({ level: "silent" }),
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const address = server.address() as { port: number };
      const client = new CacheClient({ baseUrl: `http://127.0.0.1:${address.port}`, trustedPublicKeys: [keys.publicKey], storeDir: nix.storeDir });
      const infos = await client.closure([out.app]);
      expect(infos.map((i) => i.storePath)).toEqual(await q("-R", out.app)); // dependency first
      expect(infos.map((i) => i.compression)).toEqual(["xz", "xz"]);
      for (const info of infos) {
        const nar = await collect(client.narStream(info));
        expect(nar.equals((await runNix(nix, "nix-store", ["--dump", info.storePath])).stdout)).toBe(true);
      }
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  }, 60_000);
});
