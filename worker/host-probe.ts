// What the worker can learn about its host: cgroup CPU/memory limits, free
// memory and disk, uptime. Parsers are pure (unit-tested); readers touch /proc
// and /sys and never throw (a missing file just means "no limit known").
import { readFileSync, statfsSync } from "node:fs";
import os from "node:os";
import path from "node:path";

/** cgroup v1 reports "no limit" as a huge page-aligned number; treat anything this big as none. */
const V1_UNLIMITED = 2 ** 60;

/** One line of /proc/self/cgroup: hierarchy id, controllers, path. */
export interface CgroupEntry {
  controllers: string[];
  path: string;
}

/** Parses /proc/self/cgroup ("4:memory:/a/b", "0::/x" for v2). */
export function parseProcCgroup(text: string): CgroupEntry[] {
  return text
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [, ctl = "", ...rest] = line.split(":");
      return { controllers: ctl ? ctl.split(",") : [], path: rest.join(":") || "/" };
    });
}

/** Path of this process's cgroup for `controller` (v1), or the unified path (v2) when absent. */
export function cgroupPathFor(entries: CgroupEntry[], controller: string): { version: 1 | 2; path: string } | undefined {
  const v1 = entries.find((e) => e.controllers.includes(controller));
  if (v1) return { version: 1, path: v1.path };
  const v2 = entries.find((e) => e.controllers.length === 0);
  return v2 ? { version: 2, path: v2.path } : undefined;
}

/** Whole CPUs from a v1 quota/period pair or a v2 cpu.max line; undefined when unlimited. */
export function parseCpuQuota(v1Quota: string | undefined, v1Period: string | undefined, v2Max: string | undefined): number | undefined {
  let quota: number | undefined;
  let period: number | undefined;
  if (v2Max !== undefined) {
    const [q, p] = v2Max.trim().split(/\s+/);
    if (q !== "max") [quota, period] = [Number(q), Number(p ?? 100000)];
  } else if (v1Quota !== undefined && v1Period !== undefined) {
    [quota, period] = [Number(v1Quota), Number(v1Period)];
  }
  if (quota === undefined || period === undefined || !(quota > 0) || !(period > 0)) return undefined;
  return Math.max(1, Math.ceil(quota / period));
}

/** A memory limit from v1 memory.limit_in_bytes or v2 memory.max; undefined when unlimited. */
export function parseMemoryLimit(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (t === "max" || t === "") return undefined;
  const n = Number(t);
  return Number.isFinite(n) && n > 0 && n < V1_UNLIMITED ? n : undefined;
}

/** Reads one field (in bytes) of /proc/meminfo-style text, e.g. "MemTotal". */
export function parseMeminfo(text: string, field: string): number | undefined {
  const m = new RegExp(`^${field}:\\s+(\\d+)\\s*kB`, "m").exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

/** File contents, or undefined when it can't be read. */
export function readText(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** Where cgroup files live on this host (overridable for tests). */
export interface CgroupRoots {
  procCgroup: string;
  /** Mount point of the v1 hierarchies (/sys/fs/cgroup/<controller>) or of v2 (/sys/fs/cgroup). */
  sysfs: string;
}

/** The standard locations. */
export const DEFAULT_ROOTS: CgroupRoots = { procCgroup: "/proc/self/cgroup", sysfs: "/sys/fs/cgroup" };

/** Directory of this process's own cgroup for `controller`, if cgroups are visible. */
export function ownCgroupDir(controller: string, roots = DEFAULT_ROOTS): { version: 1 | 2; dir: string } | undefined {
  const text = readText(roots.procCgroup);
  if (text === undefined) return undefined;
  const where = cgroupPathFor(parseProcCgroup(text), controller);
  if (!where) return undefined;
  if (where.version === 1) {
    // v1 hierarchies may be co-mounted (cpu,cpuacct); the controller name still resolves via symlink.
    return { version: 1, dir: path.join(roots.sysfs, controller, where.path) };
  }
  return { version: 2, dir: path.join(roots.sysfs, where.path) };
}

/** CPUs this process may use: its cgroup quota if any, else os.availableParallelism(). */
export function detectCores(roots = DEFAULT_ROOTS): number {
  const cpus = os.availableParallelism();
  const cg = ownCgroupDir("cpu", roots);
  let quota: number | undefined;
  if (cg?.version === 1) {
    quota = parseCpuQuota(readText(path.join(cg.dir, "cpu.cfs_quota_us")), readText(path.join(cg.dir, "cpu.cfs_period_us")), undefined);
  } else if (cg?.version === 2) {
    quota = parseCpuQuota(undefined, undefined, readText(path.join(cg.dir, "cpu.max")));
  }
  return Math.min(cpus, quota ?? cpus);
}

/** Memory this process may use: its cgroup limit capped by MemTotal. */
export function detectMemoryBytes(roots = DEFAULT_ROOTS): number {
  const total = parseMeminfo(readText("/proc/meminfo") ?? "", "MemTotal") ?? os.totalmem();
  const cg = ownCgroupDir("memory", roots);
  const file = cg?.version === 1 ? "memory.limit_in_bytes" : "memory.max";
  const limit = cg ? parseMemoryLimit(readText(path.join(cg.dir, file))) : undefined;
  return Math.min(total, limit ?? total);
}

/** Room the worker's own process keeps above its current RSS (it shares the container's limit with builds). */
export const WORKER_SELF_CUSHION_BYTES = 32 * 1024 ** 2;

/**
 * Memory to offer builds: the container's limit minus this worker's own
 * process and a cushion, so a build that fills its reservation cannot push the
 * worker itself into the OOM killer. Never below 64 MiB.
 */
export function memoryForBuilds(limitBytes: number, ownRssBytes: number): number {
  return Math.max(64 * 1024 ** 2, limitBytes - ownRssBytes - WORKER_SELF_CUSHION_BYTES);
}

/** Memory still free for builds: MemAvailable, or what is left under our cgroup limit if lower. */
export function freeMemoryBytes(roots = DEFAULT_ROOTS): number {
  const avail = parseMeminfo(readText("/proc/meminfo") ?? "", "MemAvailable") ?? os.freemem();
  const cg = ownCgroupDir("memory", roots);
  if (!cg) return avail;
  const [limitFile, usageFile] = cg.version === 1 ? ["memory.limit_in_bytes", "memory.usage_in_bytes"] : ["memory.max", "memory.current"];
  const limit = parseMemoryLimit(readText(path.join(cg.dir, limitFile)));
  const usage = Number(readText(path.join(cg.dir, usageFile)) ?? NaN);
  if (limit === undefined || !Number.isFinite(usage)) return avail;
  return Math.max(0, Math.min(avail, limit - usage));
}

/** Bytes free to unprivileged users on the filesystem holding `dir` (its nearest existing ancestor). */
export function freeDiskBytes(dir: string): number {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      const s = statfsSync(d);
      return Number(s.bavail) * Number(s.bsize);
    } catch {
      if (d === path.dirname(d)) return 0;
    }
  }
}

/** Seconds this machine (container) has been up: /proc/uptime minus the start of pid 1
 * (in a container pid 1 is the container's init); falls back to process uptime. */
export function hostUptimeSeconds(): number {
  const up = Number((readText("/proc/uptime") ?? "").split(/\s+/)[0]);
  if (!(Number.isFinite(up) && up > 0)) return Math.floor(process.uptime());
  const stat = readText("/proc/1/stat") ?? "";
  // Field 22 (starttime, clock ticks since boot) counted after the ")" that ends the command name.
  const start = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]) / 100;
  return Math.floor(Number.isFinite(start) && start <= up ? up - start : up);
}

/** Seconds this machine has been up: since `startedAtUnix` when the operator gave it, else hostUptimeSeconds(). */
export function machineUptimeSeconds(startedAtUnix: number, nowMs = Date.now()): number {
  return startedAtUnix > 0 ? Math.max(0, Math.floor(nowMs / 1000 - startedAtUnix)) : hostUptimeSeconds();
}

/** Nix system types this machine builds by default, primary first. */
export function defaultSystems(arch = process.arch): string[] {
  switch (arch) {
    case "x64":
      return ["x86_64-linux", "i686-linux"];
    case "arm64":
      return ["aarch64-linux"];
    case "ia32":
      return ["i686-linux"];
    default:
      return [`${arch}-linux`];
  }
}
