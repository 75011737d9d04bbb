// Helpers for the scheduler's integration tests: the farm's view (status
// rows, /metrics, learned estimates in NATS KV) and the kernel's view (dmesg
// OOM records, the build cgroups a worker creates under its own).
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { connect } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { NATS_URL, REPO, type FarmCluster } from "../harness/cluster.js";
import type { DrvStatusRow } from "../../coordinator/core/job-status.js";

export const MiB = 2 ** 20;
/** The memory-hog fixture (test/fixtures/memhog/default.nix). */
export const HOGS = path.join(REPO, "test/fixtures/memhog/default.nix");

/** A status row as `farm status JOB --json` prints it (zero/empty fields may be omitted). */
export type Row = Partial<DrvStatusRow> & { drvPath: string; name: string; state: string };

/** `farm submit FILE#attr --follow --json`: the final job, or throws with the CLI's stderr. */
export async function submitFollow(farm: FarmCluster, attr: string): Promise<{ code: number; job: { jobId: string; state: string; failures?: { name: string; reason: string }[] } }> {
  const r = await farm.cli(["submit", `${HOGS}#${attr}`, "--follow", "--json"]);
  if (!r.stdout.trim()) throw new Error(`farm submit ${attr} printed nothing (exit ${r.code}): ${r.stderr}`);
  return { code: r.code, job: JSON.parse(r.stdout) };
}

/** `farm submit FILE#attr --json` without waiting: the job id. */
export async function submitNoWait(farm: FarmCluster, attr: string): Promise<string> {
  const r = await farm.cli(["submit", `${HOGS}#${attr}`, "--json"]);
  if (r.code !== 0) throw new Error(`farm submit ${attr} failed (exit ${r.code}): ${r.stderr}`);
  return (JSON.parse(r.stdout) as { jobId: string }).jobId;
}

/** One job's status with its derivation rows. */
export async function jobStatus(farm: FarmCluster, jobId: string): Promise<{ state: string; derivations: Row[]; failures: { name: string; reason: string }[] }> {
  const r = await farm.cli(["status", jobId, "--json"]);
  if (r.code !== 0 && !r.stdout.trim()) throw new Error(`farm status ${jobId}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** A worker as `farm workers --json` prints it. */
export interface WorkerJson {
  workerId: string;
  state: string;
  memoryBytes: number;
  unreservedMemoryBytes?: number;
  reservedMemoryBytes?: number;
  remainingLifetimeSeconds?: number;
  running?: Row[];
  oomKills?: number;
}

/** `farm workers --json`. */
export async function workers(farm: FarmCluster): Promise<WorkerJson[]> {
  const r = await farm.cli(["workers", "--json"]);
  if (r.code !== 0) throw new Error(`farm workers: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The build log of a derivation (`farm logs DRV`). */
export async function buildLog(farm: FarmCluster, drvPath: string): Promise<string> {
  const r = await farm.cli(["logs", drvPath]);
  if (r.code !== 0) throw new Error(`farm logs ${drvPath}: ${r.stderr}`);
  return r.stdout;
}

/** Sum of a counter on the coordinator's /metrics, per label set (`{worker="w1"}` -> n). */
export async function metric(farm: FarmCluster, name: string): Promise<{ total: number; series: Record<string, number> }> {
  const text = await (await fetch(`http://127.0.0.1:${farm.metricsPort}/metrics`)).text();
  const series: Record<string, number> = {};
  let total = 0;
  for (const line of text.split("\n")) {
    const m = new RegExp(`^${name}(\\{[^}]*\\})?\\s+(\\S+)$`).exec(line);
    if (!m) continue;
    series[m[1] ?? ""] = Number(m[2]);
    total += Number(m[2]);
  }
  return { total, series };
}

/** The learned estimates the coordinator persisted in `<prefix>farm-estimates`, by KV key. */
export async function storedEstimates(prefix: string): Promise<Map<string, unknown>> {
  // Waits out a NATS restart (another suite may bounce the shared server) instead of failing at once.
  const nc = await connect({ servers: NATS_URL, waitOnFirstConnect: true, timeout: 20_000 });
  try {
    const kv = await new Kvm(nc).open(`${prefix}farm-estimates`);
    const out = new Map<string, unknown>();
    for await (const key of await kv.keys()) {
      const e = await kv.get(key);
      if (e && e.operation === "PUT") out.set(key, e.json());
    }
    return out;
  } finally {
    await nc.close();
  }
}

/** One OOM kill the kernel logged. */
export interface KernelOomKill {
  /** Seconds since boot. */
  at: number;
  /** Memory cgroup (relative to the v1 memory root) whose limit was hit, and the victim's. */
  oomMemcg: string;
  taskMemcg: string;
  task: string;
  pid: number;
  anonRssBytes: number;
}

/** OOM kills in the kernel log, or null when the log can't be read (no CAP_SYSLOG). */
export function kernelOomKills(): KernelOomKill[] | null {
  let text: string;
  try {
    text = execFileSync("dmesg", [], { encoding: "utf8", maxBuffer: 64 * MiB, stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return null;
  }
  const kills: KernelOomKill[] = [];
  const rss = new Map<number, number>();
  for (const m of text.matchAll(/Killed process (\d+) \([^)]*\).*?anon-rss:(\d+)kB/g)) rss.set(Number(m[1]), Number(m[2]) * 1024);
  for (const m of text.matchAll(/^\[\s*([\d.]+)\] oom-kill:.*?oom_memcg=([^,]+),task_memcg=([^,]+),task=([^,]+),pid=(\d+)/gm)) {
    kills.push({ at: Number(m[1]), oomMemcg: m[2], taskMemcg: m[3], task: m[4], pid: Number(m[5]), anonRssBytes: rss.get(Number(m[5])) ?? 0 });
  }
  return kills;
}

/** `dir` (under /sys/fs/cgroup/memory) as the kernel log names it. */
export function memcgName(dir: string): string {
  return "/" + path.relative("/sys/fs/cgroup/memory", dir);
}

/** What the kernel said about one build cgroup a worker created. */
export interface BuildCgroup {
  worker: string;
  name: string;
  limitBytes: number;
  maxUsageBytes: number;
  oomKills: number;
}

/**
 * Polls each worker's memory cgroup for the per-build child groups the worker
 * makes (tmpnix-build-*), recording each one's limit, peak and OOM kills
 * while it exists: the kernel's own account of every build.
 */
export class BuildCgroupWatcher {
  readonly seen = new Map<string, BuildCgroup>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly farm: FarmCluster, private readonly intervalMs = 40) {}

  start(): this {
    this.timer = setInterval(() => this.poll(), this.intervalMs);
    return this;
  }

  stop(): void {
    clearInterval(this.timer);
    this.poll();
  }

  /** Groups seen on `worker` (in the order first seen). */
  on(worker: string): BuildCgroup[] {
    return [...this.seen.values()].filter((g) => g.worker === worker);
  }

  private poll(): void {
    for (const [worker, p] of this.farm.workers) {
      let names: string[] = [];
      try {
        names = readdirSync(p.cgroupDir).filter((n) => n.startsWith("tmpnix-build-"));
      } catch {
        continue;
      }
      for (const name of names) {
        const dir = path.join(p.cgroupDir, name);
        try {
          const limitBytes = Number(readFileSync(path.join(dir, "memory.limit_in_bytes"), "utf8"));
          const maxUsageBytes = Number(readFileSync(path.join(dir, "memory.max_usage_in_bytes"), "utf8"));
          const oom = /oom_kill (\d+)/.exec(readFileSync(path.join(dir, "memory.oom_control"), "utf8"));
          const key = `${worker}/${name}`;
          const prev = this.seen.get(key);
          this.seen.set(key, {
            worker,
            name,
            limitBytes,
            maxUsageBytes: Math.max(prev?.maxUsageBytes ?? 0, maxUsageBytes),
            oomKills: Math.max(prev?.oomKills ?? 0, oom ? Number(oom[1]) : 0),
          });
        } catch {
          // removed between readdir and read: the build just ended
        }
      }
    }
  }
}

/** MiB, one decimal, for messages. */
export function mib(bytes: number | undefined): string {
  return `${((bytes ?? 0) / MiB).toFixed(1)} MiB`;
}
