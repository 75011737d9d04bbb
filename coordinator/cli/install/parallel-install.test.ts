// The closure installer fetching in parallel through a real cache server: a
// path appears only after what it references, and a download whose connection
// drops resumes (with Range where the server honours it, by re-fetching and
// skipping where it does not) and still ends byte-exact.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdir, mkdtemp, rm, watch } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CacheClient, dumpPath } from "../../../proto/nix/mod.js";
import { installClosure } from "../../../proto/nix/install/mod.js";
import { startTestCache, type TestCache } from "../../../test/fixtures/cache-server.js";
import { collect, narFromTree } from "../../../proto/nix/testing/nar-fixtures.js";
import { randomBytes } from "node:crypto";

const log = pino({ level: "silent" });
let dir: string, storeDir: string, cache: TestCache;
const hashes = ["72ijv89ar4x0cfhvvsj10r3gnyhvvrhb", "nax2bw8a4k63042ch9zsg5lyyj6356w1", "ya13ysp6mn5s1vkz1023zgghzvb2jlsb", "0mdqa9w1p6cmli6976v4wi0sw9r4p5pr"];

beforeEach(async () => {
  dir = await mkdtemp("/tmp/farm-parallel-test-");
  storeDir = join(dir, "store");
  cache = await startTestCache(storeDir);
});
afterEach(async () => {
  await cache.close();
  await execa("chmod", ["-R", "u+w", dir]);
  await rm(dir, { recursive: true, force: true });
});

/** A chain a → b → c → d (a references b, ...), the deeper the larger. */
async function chain(): Promise<{ paths: string[]; nars: Buffer[] }> {
  const paths = hashes.map((h, i) => `${storeDir}/${h}-part-${i}`);
  // The deepest dependency is the largest: it finishes downloading last, yet must be renamed in first.
  const nars = paths.map((_, i) => narFromTree({ file: randomBytes((i + 1) << 19).toString("base64") }));
  for (let i = paths.length - 1; i >= 0; i--) await cache.client().upload({ storePath: paths[i], references: i + 1 < paths.length ? [paths[i + 1]] : [], narStream: [nars[i]] });
  return { paths, nars };
}

/** A proxy to the cache that cuts the first response of every NAR after `cutAt` bytes; with `range`, it answers Range requests with 206. */
async function flakyProxy(cutAt: number, range: boolean) {
  const cut = new Set<string>();
  const requests: { url: string; range?: string }[] = [];
  const server = http.createServer(async (req, res) => {
    requests.push({ url: req.url!, range: req.headers.range });
    const up = await fetch(`${cache.url}${req.url}`);
    const body = Buffer.from(await up.arrayBuffer());
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (range && m && up.status === 200) {
      const start = Number(m[1]);
      res.writeHead(206, { "Content-Length": body.length - start, "Content-Range": `bytes ${start}-${body.length - 1}/${body.length}` });
      return res.end(body.subarray(start));
    }
    res.writeHead(up.status, { "Content-Length": body.length });
    if (req.url!.startsWith("/nar/") && !cut.has(req.url!) && body.length > cutAt) {
      cut.add(req.url!);
      res.write(body.subarray(0, cutAt), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, requests, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describe("parallel install", () => {
  it("fetches in parallel but renames each path in only after what it references", async () => {
    const { paths, nars } = await chain();
    const order: string[] = [];
    await mkdir(storeDir, { recursive: true, mode: 0o755 });
    const watcher = (async () => {
      try {
        for await (const ev of watch(storeDir)) if (ev.filename && !ev.filename.startsWith(".") && !order.includes(ev.filename)) order.push(ev.filename);
      } catch {
        /* dir removed */
      }
    })();
    const r = await installClosure({ client: cache.client(), storeDir, paths: [paths[0]], logger: log, concurrency: 4 });
    expect(r.installed.sort()).toEqual([...paths].sort());
    for (const [i, p] of paths.entries()) expect((await collect(dumpPath(p))).equals(nars[i])).toBe(true);
    await new Promise((res) => setTimeout(res, 200));
    expect(order).toEqual([...paths].reverse().map((p) => p.slice(storeDir.length + 1)));
    void watcher;
  });

  for (const range of [true, false]) {
    it(`resumes a download whose connection drops (${range ? "Range honoured" : "Range ignored"})`, async () => {
      const { paths, nars } = await chain();
      const proxy = await flakyProxy(256 << 10, range);
      try {
        const client = new CacheClient({ baseUrl: proxy.url, trustedPublicKeys: [cache.keys.publicKey], storeDir, logger: log });
        const r = await installClosure({ client, storeDir, paths: [paths[0]], logger: log, concurrency: 4 });
        expect(r.installed).toHaveLength(4);
        for (const [i, p] of paths.entries()) expect((await collect(dumpPath(p))).equals(nars[i])).toBe(true);
        const narRequests = proxy.requests.filter((q) => q.url.startsWith("/nar/"));
        expect(narRequests).toHaveLength(8); // each cut once, then resumed
        expect(narRequests.filter((q) => q.range).every((q) => /^bytes=\d+-$/.test(q.range!))).toBe(true);
        expect(narRequests.filter((q) => q.range)).toHaveLength(4);
      } finally {
        await proxy.close();
      }
    });
  }
});
