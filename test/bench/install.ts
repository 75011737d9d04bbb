// `npm run bench:install`: installing a 50-path, ~200 MiB closure from a real
// cache server, sequentially (one path at a time, as farm install did before)
// and in parallel (the default, 8 at once), in the same run, straight from
// localhost and through a proxy that gives each connection a WAN-like 20 ms
// of latency and 16 MiB/s (as a CDN or a distant cache would). Prints a
// Markdown table with the ratios. Measurements, never assertions.
//   npm run bench:install [-- --paths 50 --mib 200 --parallel 8]
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { execa } from "execa";
import { pino } from "pino";
import { CacheClient, nix32Encode } from "../../proto/nix/mod.js";
import { installClosure } from "../../proto/nix/install/mod.js";
import { startTestCache, type TestCache } from "../fixtures/cache-server.js";
import { narFromTree } from "../../proto/nix/testing/nar-fixtures.js";

const { values } = parseArgs({ options: { paths: { type: "string", default: "50" }, mib: { type: "string", default: "200" }, parallel: { type: "string", default: "8" } } });
const PATHS = Number(values.paths);
const MIB = Number(values.mib);
const PARALLEL = Number(values.parallel);
const log = pino({ level: "silent" });

/** A proxy adding `latencyMs` before each response and pacing each connection to `bytesPerSec`. */
async function wanProxy(upstream: string, latencyMs: number, bytesPerSec: number) {
  const server = http.createServer(async (req, res) => {
    await new Promise((r) => setTimeout(r, latencyMs));
    const up = await fetch(`${upstream}${req.url}`);
    res.writeHead(up.status, { "Content-Type": up.headers.get("content-type") ?? "application/octet-stream" });
    const started = Date.now();
    let sent = 0;
    for await (const chunk of up.body as unknown as AsyncIterable<Uint8Array>) {
      sent += chunk.length;
      const due = started + (sent / bytesPerSec) * 1000;
      if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
      if (!res.write(chunk)) await new Promise((r) => res.once("drain", r));
    }
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** Uploads a closure: one root referencing 49 others, ~MIB in all (random bytes: incompressible, like binaries after zstd). */
async function seed(cache: TestCache, storeDir: string): Promise<string> {
  const size = Math.floor((MIB * 2 ** 20) / PATHS);
  const paths = Array.from({ length: PATHS }, (_, i) => `${storeDir}/${nix32Encode(randomBytes(20))}-bench-part-${i}`);
  const client = cache.client();
  for (const p of paths.slice(1)) await client.upload({ storePath: p, references: [], narStream: [narFromTree({ file: randomBytes(size) })], compression: "none" });
  await client.upload({ storePath: paths[0], references: paths.slice(1), narStream: [narFromTree({ file: randomBytes(size) })] });
  return paths[0];
}

async function timeInstall(baseUrl: string, cache: TestCache, storeDir: string, root: string, concurrency: number): Promise<number> {
  const client = new CacheClient({ baseUrl, trustedPublicKeys: [cache.keys.publicKey], storeDir, logger: log });
  const started = process.hrtime.bigint();
  const r = await installClosure({ client, storeDir, paths: [root], logger: log, concurrency });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (r.installed.length !== PATHS) throw new Error(`installed ${r.installed.length} paths, expected ${PATHS}`);
  return ms;
}

async function main(): Promise<void> {
  const dir = await mkdtemp("/tmp/farm-bench-install-");
  const storeDir = join(dir, "nix", "store"); // each run gets the same store dir, emptied in between
  const cache = await startTestCache(storeDir, { maxNarBytes: 64 << 20 });
  const wan = await wanProxy(cache.url, 20, 16 * 2 ** 20);
  const clear = async () => {
    await execa("chmod", ["-R", "u+w", join(dir, "nix")], { reject: false });
    await rm(join(dir, "nix"), { recursive: true, force: true });
  };
  try {
    process.stderr.write(`seeding ${PATHS} paths, ~${MIB} MiB ...\n`);
    const root = await seed(cache, storeDir);
    const rows: string[] = [];
    for (const [label, url] of [["localhost", cache.url], ["WAN-like (20 ms, 16 MiB/s per connection)", wan.url]] as const) {
      const ms: Record<string, number> = {};
      for (const [name, c] of [["sequential", 1], ["parallel", PARALLEL]] as const) {
        await clear();
        ms[name] = await timeInstall(url, cache, storeDir, root, c);
        process.stderr.write(`${label}, ${name}: ${(ms[name] / 1000).toFixed(2)} s\n`);
      }
      rows.push(`| ${label} | ${(ms.sequential / 1000).toFixed(2)} s | ${(ms.parallel / 1000).toFixed(2)} s | ${(ms.sequential / ms.parallel).toFixed(2)}x |`);
    }
    console.log(`\n${PATHS}-path closure, ${MIB} MiB, sequential vs. ${PARALLEL} at once (same run):\n`);
    console.log("| cache | sequential | parallel | speed-up |\n|---|---|---|---|");
    for (const r of rows) console.log(r);
  } finally {
    await wan.close();
    await cache.close();
    await clear();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
