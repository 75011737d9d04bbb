// The cost and accuracy of the worker's /proc memory guard (worker/proc-tree.ts),
// measured in one run against baselines from the same run. Numbers, never assertions.
//   npx tsc -p test/bench/tsconfig.json && node dist/test/bench/proc-sample.js [--seconds 5]
// 1. µs per sample of a 3-process build tree with 50 and 500 processes on the box:
//    stat only (RSS), stat + status (RssAnon + RssShmem: what the guard uses),
//    stat + smaps_rollup (PSS).
// 2. CPU % of this process sampling as the guard does at 100 and 250 ms, against
//    the same process idle.
// 3. A real nix-store build holding 200 MiB touched (test/fixtures/memhog), its
//    tree's peak summed three ways: RSS, PSS, and RssAnon + RssShmem.
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { destroyNixEnv, makeNixEnv, nixLines } from "../../proto/nix/testing/nix-env.js";
import { ProcTree } from "../../worker/proc-tree.js";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const { values } = parseArgs({ options: { seconds: { type: "string", default: "5" } } });
const seconds = Number(values.seconds);
const MiB = 1024 ** 2;

function procCount(): number {
  return readdirSync("/proc").filter((n) => /^\d+$/.test(n)).length;
}

/** Starts sleepers until the box has `total` processes; returns them for killing. */
function fillTo(total: number): ChildProcess[] {
  const out: ChildProcess[] = [];
  for (let n = procCount(); n < total; n++) out.push(spawn("sleep", ["600"], { stdio: "ignore" }));
  return out;
}

function killAll(ps: ChildProcess[]): void {
  for (const p of ps) p.kill("SIGKILL");
}

/** µs per call of `f`, over at least 1 s. */
function microsPer(f: () => void): number {
  let n = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0n;
  while (elapsed < 1_000_000_000n) {
    for (let i = 0; i < 20; i++) f();
    n += 20;
    elapsed = process.hrtime.bigint() - start;
  }
  return Number(elapsed) / 1000 / n;
}

/** CPU % of this process over `ms` while `tick` runs every `everyMs` (none: idle). */
async function cpuPercent(ms: number, everyMs?: number, tick?: () => void): Promise<number> {
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  const timer = everyMs && tick ? setInterval(tick, everyMs) : undefined;
  await new Promise((r) => setTimeout(r, ms));
  if (timer) clearInterval(timer);
  const c = process.cpuUsage(c0);
  const wall = Number(process.hrtime.bigint() - t0) / 1000;
  return (100 * (c.user + c.system)) / wall;
}

/** PSS from /proc/PID/smaps_rollup, in bytes (0 when gone or unreadable). */
function pssBytes(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/** The tree's summed PSS, found the same way as the guard finds it. */
function treePss(t: ProcTree): number {
  return t.members().filter((p) => p.state !== "Z").reduce((s, p) => s + pssBytes(p.pid), 0);
}

async function costs(): Promise<void> {
  console.log("## Cost of one sample (3-process build tree)\n");
  console.log("| processes on the box | stat only (RSS) µs | stat + status (guard) µs | stat + smaps_rollup (PSS) µs |");
  console.log("|---|---|---|---|");
  const tree = spawn("/bin/sh", ["-c", "sleep 600 & sleep 600 & wait"], { detached: true, stdio: "ignore" });
  const t = new ProcTree(tree.pid!);
  await new Promise((r) => setTimeout(r, 300));
  for (const total of [50, 500]) {
    const extra = fillTo(total);
    await new Promise((r) => setTimeout(r, 300));
    const n = procCount();
    const rss = microsPer(() => t.rssBytes());
    const anon = microsPer(() => t.memory());
    const pss = microsPer(() => treePss(t));
    console.log(`| ${n} | ${rss.toFixed(0)} | ${anon.toFixed(0)} | ${pss.toFixed(0)} |`);
    if (total === 500) {
      console.log("\n## CPU of this process, sampling as the guard does vs idle, 500 processes on the box\n");
      console.log("| interval | CPU % | idle CPU % (same run) | added CPU % |");
      console.log("|---|---|---|---|");
      const idle = await cpuPercent(seconds * 1000);
      for (const every of [100, 250]) {
        const busy = await cpuPercent(seconds * 1000, every, () => t.memory());
        console.log(`| ${every} ms | ${busy.toFixed(2)} | ${idle.toFixed(2)} | ${(busy - idle).toFixed(2)} |`);
      }
    }
    killAll(extra);
  }
  await t.killAll();
  tree.kill("SIGKILL");
}

async function accuracy(): Promise<void> {
  const nix = await makeNixEnv();
  try {
    const expr = path.join(nix.dir, "held.nix");
    await writeFile(expr, `(import ${repo}/test/fixtures/memhog/default.nix).hog { pname = "bench-held"; baseMiB = 200; perCoreMiB = 0; holdMs = 3000; salt = "${Date.now()}"; }`);
    const [drv] = await nixLines(nix, "nix-instantiate", [expr]);
    const build = spawn("nix-store", ["-r", drv, "--cores", "1"], { env: nix.env, detached: true, stdio: "ignore" });
    const tree = new ProcTree(build.pid!);
    const peak = { rss: 0, pss: 0, anon: 0 };
    const timer = setInterval(() => {
      const members = tree.members().filter((p) => p.state !== "Z");
      peak.rss = Math.max(peak.rss, members.reduce((s, p) => s + p.rssBytes, 0));
      peak.pss = Math.max(peak.pss, treePss(tree));
      peak.anon = Math.max(peak.anon, tree.memory().bytes);
    }, 100);
    await new Promise((r) => build.on("exit", r));
    clearInterval(timer);
    console.log("\n## A nix-store build holding 200 MiB touched: peak of the tree, sampled every 100 ms\n");
    console.log("| accounting | peak MiB | error vs 200 MiB |");
    console.log("|---|---|---|");
    for (const [k, v] of [["RSS summed", peak.rss], ["PSS summed (smaps_rollup)", peak.pss], ["RssAnon + RssShmem summed (the guard)", peak.anon]] as const) {
      console.log(`| ${k} | ${(v / MiB).toFixed(1)} | ${((100 * (v - 200 * MiB)) / (200 * MiB)).toFixed(1)} % |`);
    }
  } finally {
    await destroyNixEnv(nix);
  }
}

await costs();
await accuracy();
