// deploy/nginx/tmpnix-cache.conf, run by Debian's nginx over a real farm cache's
// data directory: stock Nix 2.8 substitutes a real closure through it, uploads
// pass through it to the farm, and a withdrawn narinfo is gone from it at once.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dumpPath, hashPart, topoSortByReferences } from "../../proto/nix/mod.js";
import { buildTestAttr, destroyNixEnv, makeAltRoot, makeNixEnv, nixLines, runNix, type TestNixEnv } from "../../proto/nix/testing/nix-env.js";
import { startTestCache, type TestCache } from "../../test/fixtures/cache-server.js";
import { startNginx, type RunningNginx } from "../../test/fixtures/nginx.js";

let nix: TestNixEnv;
let cache: TestCache;
let nginx: RunningNginx;
const out: Record<string, string> = {};

const q = (flag: string, path: string) => nixLines(nix, "nix-store", ["-q", flag, path]);

async function upload(paths: string[], via: string): Promise<number[]> {
  const metas = await Promise.all(paths.map(async (p) => ({ storePath: p, references: await q("--references", p), deriver: (await q("--deriver", p))[0] })));
  const client = cache.client({ baseUrl: via });
  const statuses: number[] = [];
  for (const m of topoSortByReferences(metas)) {
    const [narHash] = await q("--hash", m.storePath);
    statuses.push((await client.upload({ ...m, narStream: dumpPath(m.storePath), narHash })).status);
  }
  return statuses;
}

beforeAll(async () => {
  nix = await makeNixEnv();
  for (const attr of ["app", "file", "link"]) out[attr] = await buildTestAttr(nix, attr);
  cache = await startTestCache(nix.storeDir);
  nginx = await startNginx({ cacheRoot: cache.root, upstream: new URL(cache.url).host });
}, 180_000);

afterAll(async () => {
  await nginx?.stop();
  await cache?.close();
  if (nix) await destroyNixEnv(nix);
});

const substituteVia = (url: string) => ["--option", "substituters", url, "--option", "trusted-public-keys", cache.keys.publicKey, "--option", "narinfo-cache-negative-ttl", "0"];

describe("nginx serving the farm cache's data directory", () => {
  it("takes uploads through to the farm, and stock nix-store -r substitutes a closure through it", async () => {
    // Uploads go through nginx too: it proxies PUTs (streamed) to the farm.
    expect(await upload([...new Set([...(await q("-R", out.app)), out.link])], nginx.url)).toEqual([201, 201, 201]);
    const info = await fetch(`${nginx.url}/nix-cache-info`);
    expect(await info.text()).toContain(`StoreDir: ${nix.storeDir}\n`);
    const alt = await makeAltRoot(nix, "via-nginx");
    expect(await nixLines(nix, "nix-store", ["-r", out.app, out.link, ...substituteVia(nginx.url)], { altRoot: alt })).toEqual([out.app, out.link]);
    expect((await runNix(nix, `${out.app}/bin/app-hello`, [], { altRoot: alt })).stdout.toString()).toBe("hi from dep\n");
    await runNix(nix, "nix-store", ["--verify-path", out.app], { altRoot: alt });
  }, 120_000);

  it("serves narinfos and NARs as the files the farm wrote, and nothing else of the data directory", async () => {
    const hp = hashPart(out.app);
    const [fromNginx, fromFarm] = await Promise.all([fetch(`${nginx.url}/${hp}.narinfo`), fetch(`${cache.url}/${hp}.narinfo`)]);
    expect(fromNginx.headers.get("server")).toMatch(/^nginx/);
    expect(fromNginx.headers.get("content-type")).toBe("text/x-nix-narinfo");
    const text = await fromNginx.text();
    expect(text).toBe(await fromFarm.text());
    const url = /^URL: (.*)$/m.exec(text)![1];
    const [narNginx, narFarm] = await Promise.all([fetch(`${nginx.url}/${url}`), fetch(`${cache.url}/${url}`)]);
    expect(Buffer.from(await narNginx.arrayBuffer()).equals(Buffer.from(await narFarm.arrayBuffer()))).toBe(true);
    expect(narNginx.headers.get("content-encoding")).toBeNull();
    // Provenance records, staged uploads and temp files are in the directory, but not served.
    for (const path of [`provenance/${hp}`, "provenance/log", "staged/", "staged/journal", ".tmp/", `${hp}.narinfo.bak`, "nar/", "../../etc/passwd"]) {
      expect((await fetch(`${nginx.url}/${path}`)).status, path).toBe(404);
    }
    expect((await fetch(`${nginx.url}/${hp}.narinfo`, { method: "PUT", body: "x" })).status).toBe(403);
  });

  it("stops serving a withdrawn narinfo at once, and serves a newly published one at once", async () => {
    const hp = hashPart(out.file);
    expect((await fetch(`${nginx.url}/${hp}.narinfo`)).status).toBe(404);
    expect(await upload([out.file], cache.url)).toEqual([201]);
    expect((await fetch(`${nginx.url}/${hp}.narinfo`)).status).toBe(200);
    await cache.storage.remove("narinfo", hp); // what OutputPublisher.withdraw does
    expect((await fetch(`${nginx.url}/${hp}.narinfo`)).status).toBe(404);
    const alt = await makeAltRoot(nix, "withdrawn");
    await expect(runNix(nix, "nix-store", ["-r", out.file, ...substituteVia(nginx.url)], { altRoot: alt })).rejects.toThrow(/failed/);
  }, 60_000);
});
