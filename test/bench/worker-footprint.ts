// The worker's own footprint against a real coordinator (test/harness FarmCluster):
// time from spawn to "joined the coordinator", RSS idle (joined, 3 s later) and
// the highest RSS sampled while it runs one real build (fetch, build, upload),
// for each way of starting node; beside them, a bare node process and what the
// old `npm start` paid first (tsc of worker/ and proto/, with /usr/bin/time).
// Numbers, never assertions; needs root (the harness isolates the worker) and a
// built dist/.
//   npm run build && npx tsc -p test/bench/tsconfig.json && node dist/test/bench/worker-footprint.js
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { FarmCluster, REPO } from "../harness/cluster.js";
import { ProcTree } from "../../worker/proc-tree.js";

const MiB = 1024 ** 2;

/** Ways to start the worker: extra node flags through NODE_OPTIONS. */
const VARIANTS: { label: string; nodeOptions: string }[] = [
  { label: "node (defaults)", nodeOptions: "" },
  { label: "--max-semi-space-size=2", nodeOptions: "--max-semi-space-size=2" },
  { label: "npm start: --max-old-space-size=128 --max-semi-space-size=2", nodeOptions: "--max-old-space-size=128 --max-semi-space-size=2" },
];

/** RSS of a node process doing nothing, 2 s after start. */
async function bareNodeRss(flags: string[]): Promise<number> {
  const p = spawn(process.execPath, [...flags, "-e", "setTimeout(() => {}, 5000)"], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 2000));
  const rss = rssOf(p.pid!);
  p.kill();
  return rss;
}

/** What the old `npm start` ran before the worker: [seconds, peak RSS MiB] of tsc -p worker/tsconfig.json. */
function tscCost(): [number, number] {
  const r = spawnSync("/usr/bin/time", ["-f", "%e %M", path.join(REPO, "node_modules/.bin/tsc"), "-p", path.join(REPO, "worker/tsconfig.json")], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`tsc failed: ${r.stdout}${r.stderr}`);
  const [secs, kb] = r.stderr.trim().split("\n").pop()!.split(" ").map(Number);
  return [secs, kb / 1024];
}

function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** The node process running dist/worker/main.js below the isolation wrapper `root`. */
function workerPid(root: number): number | undefined {
  for (const p of new ProcTree(root).members()) {
    try {
      if (readFileSync(`/proc/${p.pid}/cmdline`, "utf8").includes("dist/worker/main.js")) return p.pid;
    } catch {
      // gone
    }
  }
  return undefined;
}

async function until<T>(what: string, f: () => T | undefined, timeoutMs = 120_000, everyMs = 20): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const [tscSecs, tscMiB] = tscCost();
const bare = [await bareNodeRss([]), await bareNodeRss(["--max-semi-space-size=2"])];
const farm = await FarmCluster.start({ workers: [] });
const rows: string[] = [];
try {
  for (const [i, v] of VARIANTS.entries()) {
    const name = `footprint-${i}`;
    const t0 = Date.now();
    const p = farm.startWorker({ name, cores: 1, env: { NODE_OPTIONS: v.nodeOptions, FARM_LOG_LEVEL: "info" } });
    await until("join", () => (farm.workerLog(name).includes("joined the coordinator") ? true : undefined));
    const startMs = Date.now() - t0;
    const pid = await until("worker pid", () => workerPid(p.pid));
    await new Promise((r) => setTimeout(r, 3000));
    const idle = rssOf(pid);

    // One real build: a 16 MiB hog held 4 s (a new derivation each run).
    const expr = path.join(farm.root, `busy-${i}.nix`);
    writeFileSync(expr, `{ busy = (import ${REPO}/test/fixtures/memhog/default.nix).hog { pname = "footprint"; baseMiB = 16; perCoreMiB = 0; holdMs = 4000; salt = "${Date.now()}-${i}"; }; }`);
    let busy = 0;
    const sampler = setInterval(() => {
      try {
        busy = Math.max(busy, rssOf(pid));
      } catch {
        // exited
      }
    }, 100);
    const t1 = Date.now();
    const r = await farm.cli(["submit", `${expr}#busy`, "--follow", "--json"]);
    const jobSecs = (Date.now() - t1) / 1000;
    clearInterval(sampler);
    const state = (JSON.parse(r.stdout || "{}") as { state?: string }).state ?? `exit ${r.code}: ${r.stderr.slice(0, 200)}`;
    rows.push(`| ${v.label} | ${(startMs / 1000).toFixed(1)} | ${(idle / MiB).toFixed(0)} | ${(busy / MiB).toFixed(0)} | ${state} in ${jobSecs.toFixed(1)} s |`);
    await farm.killWorker(name);
  }
} finally {
  await farm.stop();
}
console.log("| worker started as | spawn to joined (s) | idle RSS (MiB) | busy RSS, max (MiB) | job (submit to done) |");
console.log("|---|---|---|---|---|");
for (const r of rows) console.log(r);
console.log(`\nbare node, idle: ${(bare[0] / MiB).toFixed(0)} MiB (defaults), ${(bare[1] / MiB).toFixed(0)} MiB (--max-semi-space-size=2)`);
console.log(`old npm start compiled first: tsc -p worker/tsconfig.json took ${tscSecs.toFixed(1)} s, peak RSS ${tscMiB.toFixed(0)} MiB`);
