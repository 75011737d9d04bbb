// `npm run bench:cache`: the farm's cache server against nginx serving the very
// same data directory (deploy/nginx/tmpnix-cache.conf), with the same clients,
// alternating, over several rounds; then the CPU an upload costs, spawned zstd
// (before) against in-process gzip (now), measured in the same run.
// Numbers are measurements printed with their ratios, never assertions.
//   npm run bench:cache -- [--rounds 5] [--seconds 5] [--narinfos 5000] [--nar-mib 200] [--ballast-mib 1024] [--only read|upload]
//     [--before OLD/dist/test/bench/cache-serve.js]  (also measure an older build's server, e.g. the commit before)
// Needs wrk, curl and /usr/sbin/nginx, and root (nginx runs as root over a 0700 temp dir).

import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { formatNarInfo, generateKeyPair, nix32Encode, parseSecretKey, signNarInfo, type NarInfo } from "../../proto/nix/mod.js";
import { startNginx } from "../fixtures/nginx.js";
import { measureUploads, narOfFile, realisticBytes, UPLOAD_METHODS, type UploadCost } from "./cache-upload.js";

const run = promisify(execFile);
const STORE_DIR = "/tmp/nix/store";

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
}

/** A hash part / file hash in nix32. */
const nix32 = (bytes: number) => nix32Encode(randomBytes(bytes));

/** Fills `root` as the farm's DiskStorage would: narinfos at the top, one big NAR under nar/. */
async function fillCache(root: string, count: number, narMiB: number): Promise<{ hashParts: string[]; narUrl: string; narinfoBytes: number }> {
  for (const d of ["nar", "log", "staged", "provenance", ".tmp"]) await mkdir(join(root, d), { recursive: true });
  const key = parseSecretKey(generateKeyPair("bench-cache-1").secretKey);
  const hashParts: string[] = [];
  let narinfoBytes = 0;
  const refs = Array.from({ length: 40 }, (_, i) => `${nix32(20)}-dep-${i}`);
  for (let i = 0; i < count; i++) {
    const hp = nix32(20);
    const fileHash = nix32(32);
    // Shaped like a typical nixpkgs narinfo: a handful of references, a deriver, one signature.
    const info: NarInfo = { storePath: `${STORE_DIR}/${hp}-bench-path-${i}`, url: `nar/${fileHash}.nar.gz`, compression: "gzip", fileHash: `sha256:${fileHash}`, fileSize: 12345, narHash: `sha256:${nix32(32)}`, narSize: 45678, references: refs.slice(i % 30, (i % 30) + 5), deriver: `${nix32(20)}-bench-path-${i}.drv`, sigs: [] };
    const text = formatNarInfo(signNarInfo(info, key));
    narinfoBytes += text.length;
    await writeFile(join(root, `${hp}.narinfo`), text);
    hashParts.push(hp);
  }
  const narName = `${nix32(32)}.nar.zst`; // a name every version of the server serves
  const block = randomBytes(1 << 20);
  await writeFile(join(root, "nar", narName), Buffer.concat(Array.from({ length: narMiB }, () => block)));
  return { hashParts, narUrl: `/nar/${narName}`, narinfoBytes: narinfoBytes / count };
}

/** CPU seconds used so far by `pid` and its live children (nginx's workers), from /proc. */
function cpuOf(pid: number): number {
  const ticks = (p: number) => {
    const f = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1].split(" ");
    return Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
  };
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  return [pid, ...children].reduce((sum, p) => sum + ticks(p), 0) / 100;
}

/** Starts a farm cache server (this build's cache-serve.js, or `script`) as its own process over `root`; resolves with its URL. */
async function startFarm(root: string, script = join(dirname(fileURLToPath(import.meta.url)), "cache-serve.js")): Promise<{ url: string; pid: number; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [...(process.env.BENCH_PROFILE_DIR ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_PROFILE_DIR] : []), script, root, STORE_DIR], { stdio: ["ignore", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once("line", resolve);
    child.once("exit", (code) => reject(new Error(`cache-serve exited with ${code}`)));
  });
  return { url: line.trim(), pid: child.pid!, stop: async () => (child.kill("SIGTERM"), await exited) };
}

/** A wrk script that GETs random narinfos and prints its figures as one JSON line. */
function wrkScript(hashParts: string[]): string {
  return `local paths = { ${hashParts.map((h) => `"/${h}.narinfo"`).join(", ")} }
local n = #paths
local thread_id = 0
setup = function(thread) thread_id = thread_id + 1; thread:set("seed", thread_id) end
init = function() math.randomseed(os.time() + (seed or 0)) end
request = function() return wrk.format("GET", paths[math.random(n)]) end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('JSON {"requests":%d,"us":%d,"p50":%d,"p99":%d,"errors":%d,"non2xx":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
`;
}

interface NarinfoRun { rps: number; p50ms: number; p99ms: number; bad: number }

async function wrk(url: string, script: string, seconds: number): Promise<NarinfoRun> {
  const { stdout } = await run("wrk", ["-t2", "-c16", `-d${seconds}s`, "-s", script, url], { maxBuffer: 1 << 20 });
  const j = JSON.parse(/^JSON (.*)$/m.exec(stdout)![1]) as { requests: number; us: number; p50: number; p99: number; errors: number; non2xx: number };
  return { rps: j.requests / (j.us / 1e6), p50ms: j.p50 / 1000, p99ms: j.p99 / 1000, bad: j.errors + j.non2xx };
}

/** MB/s of `streams` parallel downloads of `url` (curl, body discarded). */
async function download(url: string, streams: number, expectBytes: number): Promise<number> {
  const t0 = performance.now();
  const sizes = await Promise.all(Array.from({ length: streams }, async () => Number((await run("curl", ["-sS", "-o", "/dev/null", "-w", "%{size_download}", url])).stdout)));
  const s = (performance.now() - t0) / 1000;
  if (sizes.some((n) => n !== expectBytes)) throw new Error(`downloads of ${url} got ${sizes.join(", ")} bytes, expected ${expectBytes}`);
  return (streams * expectBytes) / 1e6 / s;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (x: number, digits = 0) => x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** "before": an older build's server (--before PATH/TO/cache-serve.js), e.g. of the commit before this benchmark. */
type Target = "farm" | "nginx" | "before";
interface RoundFigures {
  rps: number;
  p50ms: number;
  p99ms: number;
  /** Server CPU (all its processes) per narinfo request: steadier than req/s on a shared machine. */
  cpuUsPerReq: number;
  nar1: number;
  nar4: number;
  /** Server CPU seconds per GB of NAR sent. */
  cpuSPerGB: number;
}

async function readSide(rounds: number, seconds: number, narinfos: number, narMiB: number, beforeScript?: string): Promise<void> {
  const root = await mkdtemp("/tmp/farm-bench-cache-");
  const script = join(root, ".tmp", "narinfos.lua");
  const servers: { stop: () => Promise<void> }[] = [];
  try {
    const filled = await fillCache(root, narinfos, narMiB);
    await writeFile(script, wrkScript(filled.hashParts));
    const farm = await startFarm(root);
    servers.push(farm);
    const nginx = await startNginx({ cacheRoot: root, upstream: new URL(farm.url).host });
    servers.push(nginx);
    const targets: Partial<Record<Target, { url: string; pid: number }>> = { farm, nginx: { url: nginx.url, pid: nginx.process.pid! } };
    if (beforeScript) {
      const before = await startFarm(root, beforeScript);
      servers.push(before);
      targets.before = before;
    }
    const order = Object.keys(targets) as Target[];
    const figures: Partial<Record<Target, RoundFigures[]>> = Object.fromEntries(order.map((t) => [t, []]));
    console.log(`read side: ${narinfos} narinfos (${fmt(filled.narinfoBytes)} bytes each on average), one ${narMiB} MiB NAR; ${rounds} rounds, ${order.join(", ")} in turn; wrk -t2 -c16 -d${seconds}s over random narinfos; curl for NARs`);
    for (let r = 0; r < rounds; r++) {
      for (const t of [...order.slice(r % order.length), ...order.slice(0, r % order.length)]) {
        const { url, pid } = targets[t]!;
        const c0 = cpuOf(pid);
        const n = await wrk(url, script, seconds);
        if (n.bad > 0) throw new Error(`${t}: ${n.bad} narinfo requests failed or were not 200`);
        const c1 = cpuOf(pid);
        const nar1 = await download(url + filled.narUrl, 1, narMiB << 20);
        const nar4 = await download(url + filled.narUrl, 4, narMiB << 20);
        const cpuUsPerReq = ((c1 - c0) * 1e6) / (n.rps * seconds);
        const cpuSPerGB = (cpuOf(pid) - c1) / ((5 * (narMiB << 20)) / 1e9);
        figures[t]!.push({ rps: n.rps, p50ms: n.p50ms, p99ms: n.p99ms, cpuUsPerReq, nar1, nar4, cpuSPerGB });
        console.log(`  round ${r + 1} ${t.padEnd(6)}: ${fmt(n.rps)} narinfo req/s (p50 ${fmt(n.p50ms, 2)} ms, p99 ${fmt(n.p99ms, 2)} ms, ${fmt(cpuUsPerReq)} µs CPU each), NAR 1 stream ${fmt(nar1)} MB/s, 4 streams ${fmt(nar4)} MB/s (${fmt(cpuSPerGB, 2)} CPU s/GB)`);
      }
    }
    const med = (t: Target, k: keyof RoundFigures) => median(figures[t]!.map((f) => f[k]));
    // Each round ran every server back to back, so per-round ratios are less exposed to the machine's other load.
    const ratio = (t: Target, k: keyof RoundFigures) => median(figures[t]!.map((f, i) => f[k] / figures.nginx![i][k]));
    const others = order.filter((t) => t !== "nginx");
    console.log(`\n| ${rounds} rounds, medians | ${order.join(" | ")} | ${others.map((t) => `${t}/nginx`).join(" | ")} | target (farm/nginx) |`);
    console.log(`|---|${order.map(() => "---:|").join("")}${others.map(() => "---:|").join("")}---|`);
    const row = (label: string, k: keyof RoundFigures, digits: number, target?: number) => {
      const verdict = target === undefined ? "" : `≥ ${target}×: ${ratio("farm", k) >= target ? "met" : "NOT met"}`;
      console.log(`| ${label} | ${order.map((t) => fmt(med(t, k), digits)).join(" | ")} | ${others.map((t) => `${fmt(ratio(t, k), 2)}×`).join(" | ")} | ${verdict} |`);
    };
    row("narinfo GET, 16 connections: req/s", "rps", 0, 0.5);
    row("narinfo latency p50 (ms)", "p50ms", 2);
    row("narinfo latency p99 (ms)", "p99ms", 2);
    row("server CPU per narinfo request (µs)", "cpuUsPerReq", 1);
    row(`${narMiB} MiB NAR, 1 stream: MB/s`, "nar1", 0, 0.5);
    row(`${narMiB} MiB NAR, 4 streams: MB/s (total)`, "nar4", 0);
    row("server CPU per GB of NAR sent (s)", "cpuSPerGB", 2);
    console.log("(ratios: median over rounds of each round's ratio to nginx)");
  } finally {
    for (const s of servers.reverse()) await s.stop();
    await rm(root, { recursive: true, force: true });
  }
}

async function uploadSide(ballastMiB: number): Promise<void> {
  const small = narOfFile(realisticBytes(4 << 10));
  const big = narOfFile(realisticBytes(64 << 20));
  const table = (title: string, rows: UploadCost[]) => {
    console.log(`\n${title}\n| method | CPU ms/upload | of which children | wall ms/upload | stored/NAR bytes | max event-loop delay ms | CPU vs spawned zstd |`);
    console.log("|---|---:|---:|---:|---:|---:|---:|");
    for (const r of rows) console.log(`| ${r.method} | ${fmt(r.cpuMsPerUpload, 2)} | ${fmt(r.childCpuMsPerUpload, 2)} | ${fmt(r.wallMsPerUpload, 2)} | ${fmt(r.ratio, 3)} | ${fmt(r.maxLoopDelayMs, 1)} | ${fmt(r.cpuMsPerUpload / rows[0].cpuMsPerUpload, 3)}× |`);
  };
  const measureAll = async (nar: Buffer, count: number, concurrency: number) => {
    const rows: UploadCost[] = [];
    for (const m of UPLOAD_METHODS) rows.push(await measureUploads(m, nar, count, concurrency));
    return rows;
  };
  const rss = () => fmt(process.memoryUsage().rss / 2 ** 20);
  table(`upload CPU: 400 uploads of a ${fmt(small.length)}-byte NAR, 8 at a time, process RSS ${rss()} MiB`, await measureAll(small, 400, 8));
  // A fork's cost grows with the forking process's memory: the coordinator of issue #14 was 1.2-1.5 GB.
  const ballast = Buffer.alloc(ballastMiB << 20, 1);
  table(`upload CPU: the same with ${ballastMiB} MiB more in the process (RSS ${rss()} MiB)`, await measureAll(small, 400, 8));
  ballast.fill(2); // keep it alive (and resident) until here
  table(`upload CPU: 2 uploads of a ${fmt(big.length / 2 ** 20, 0)} MiB NAR (bytes of the node binary), 1 at a time`, await measureAll(big, 2, 1));
}

async function main(): Promise<void> {
  const only = process.argv.includes("--only") ? process.argv[process.argv.indexOf("--only") + 1] : undefined;
  const before = process.argv.includes("--before") ? process.argv[process.argv.indexOf("--before") + 1] : undefined;
  if (only !== "upload") await readSide(flag("rounds", 5), flag("seconds", 5), flag("narinfos", 5000), flag("nar-mib", 200), before);
  if (only !== "read") await uploadSide(flag("ballast-mib", 1024));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
