// Measures (and bounds) the memory of one build's process tree.
//
// Preferred: a child memory cgroup of the worker's own cgroup, new for each
// build. The Nix session that builds joins it before it is asked to build, so
// everything it forks is accounted, the kernel records the peak, and a hard
// limit makes the kernel reclaim page cache before it OOM-kills (a polling guard
// would kill builds for cache they'd give back); it leaves again after.
// Fallback when cgroups aren't writable: sample /proc and sum the tree under the
// session's process (anonymous + shmem memory, RSS on kernels before 4.5),
// killing the tree when it goes over the limit. A build that ends between two
// samples was never seen: "not measured".
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { DEFAULT_ROOTS, ownCgroupDir, readText, type CgroupRoots } from "./host-probe.js";
import { ProcTree, signalAll } from "./proc-tree.js";

/** One reading of a build's memory. */
export interface MemorySample {
  currentBytes: number;
  peakBytes: number;
  /** The kernel OOM-killed something in the build, or the tree went over the limit. */
  overLimit: boolean;
  /** peakBytes rests on a reading of the build itself (false: no sample caught the builder alive). */
  measured: boolean;
}

/** Watches one build's process tree. */
export interface BuildMonitor {
  readonly kind: "cgroup-v1" | "cgroup-v2" | "proc";
  /** Puts the process that will start the build (a Nix session, before it is asked to build) under watch. */
  enter(pid: number): void;
  /** Takes that process out again (it lives on to build again), so close() spares it. */
  leave(pid: number): void;
  /** Reads memory now (also updates the peak). */
  sample(): MemorySample;
  /** SIGKILLs every process of the build. */
  killAll(): Promise<void>;
  /** Kills what is left of the build (never a process that left) and releases the group. */
  close(): Promise<void>;
}

/** Prefix of the child cgroups the worker creates (stale ones are removed on the next build). */
const CGROUP_PREFIX = "tmpnix-build-";
let counter = 0;

/** Which monitor to use: the best available, or always the /proc fallback. */
export type MonitorChoice = "auto" | "proc";

/** Makes the best monitor this host allows; limitBytes 0 = measure only. */
export function createBuildMonitor(limitBytes: number, logger?: Logger, choice: MonitorChoice = "auto", roots: CgroupRoots = DEFAULT_ROOTS): BuildMonitor {
  const own = choice === "auto" ? ownCgroupDir("memory", roots) : undefined;
  if (own) {
    try {
      return new CgroupMonitor(own.version, own.dir, limitBytes);
    } catch (err) {
      logger?.debug({ err, dir: own.dir }, "memory cgroup not usable; sampling /proc instead");
    }
  }
  return new ProcMonitor(limitBytes);
}

/** A child memory cgroup (v1 or v2) of the worker's own. */
class CgroupMonitor implements BuildMonitor {
  readonly kind: "cgroup-v1" | "cgroup-v2";
  private readonly dir: string;
  private peak = 0;
  private readonly oomBaseline: number;

  constructor(private readonly version: 1 | 2, private readonly parent: string, private readonly limitBytes: number) {
    this.kind = version === 1 ? "cgroup-v1" : "cgroup-v2";
    removeStaleGroups(parent);
    this.dir = path.join(parent, `${CGROUP_PREFIX}${process.pid}-${++counter}`);
    mkdirSync(this.dir);
    try {
      if (!existsSync(path.join(this.dir, version === 1 ? "memory.max_usage_in_bytes" : "memory.current"))) {
        throw new Error("memory controller not enabled in the child group");
      }
      if (limitBytes > 0) this.setLimit(limitBytes);
      this.oomBaseline = this.oomKills();
    } catch (err) {
      rmdirSync(this.dir);
      throw err;
    }
  }

  enter(pid: number): void {
    // Joined before Nix forks the builder, so not a single page of the build escapes accounting. What the
    // session held before stays charged where it was (neither v1 by default nor v2 move charges).
    writeFileSync(path.join(this.dir, "cgroup.procs"), String(pid));
  }

  leave(pid: number): void {
    writeFileSync(path.join(this.parent, "cgroup.procs"), String(pid));
  }

  sample(): MemorySample {
    const [cur, max] = this.version === 1 ? ["memory.usage_in_bytes", "memory.max_usage_in_bytes"] : ["memory.current", "memory.peak"];
    const currentBytes = this.readNumber(cur);
    // memory.peak needs Linux 5.19; older v2 kernels only give us our own samples.
    this.peak = Math.max(this.peak, currentBytes, this.readNumber(max));
    // The kernel accounts every page from the first exec on: even a short build is measured.
    return { currentBytes, peakBytes: this.peak, overLimit: this.oomKills() > this.oomBaseline, measured: true };
  }

  async killAll(): Promise<void> {
    if (this.version === 2 && existsSync(path.join(this.dir, "cgroup.kill"))) {
      try {
        writeFileSync(path.join(this.dir, "cgroup.kill"), "1");
      } catch {
        // fall through to killing pid by pid
      }
    }
    for (let round = 0; round < 40; round++) {
      const pids = this.pids();
      if (pids.length === 0) return;
      signalAll(pids);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async close(): Promise<void> {
    await this.killAll();
    for (let i = 0; i < 40; i++) {
      try {
        rmdirSync(this.dir);
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 50)); // zombies not reaped yet
      }
    }
  }

  private setLimit(bytes: number): void {
    if (this.version === 2) {
      writeFileSync(path.join(this.dir, "memory.max"), String(bytes));
      try {
        writeFileSync(path.join(this.dir, "memory.swap.max"), "0");
      } catch {
        // no swap accounting: nothing to bound
      }
      return;
    }
    writeFileSync(path.join(this.dir, "memory.limit_in_bytes"), String(bytes));
    try {
      // Without this the build could swap past its limit instead of being stopped.
      writeFileSync(path.join(this.dir, "memory.memsw.limit_in_bytes"), String(bytes));
    } catch {
      // swap accounting off
    }
  }

  private oomKills(): number {
    const file = this.version === 1 ? "memory.oom_control" : "memory.events";
    const m = /^oom_kill (\d+)/m.exec(readText(path.join(this.dir, file)) ?? "");
    return m ? Number(m[1]) : 0;
  }

  private readNumber(file: string): number {
    const n = Number((readText(path.join(this.dir, file)) ?? "").trim());
    return Number.isFinite(n) ? n : 0;
  }

  private pids(): number[] {
    return (readText(path.join(this.dir, "cgroup.procs")) ?? "").split("\n").filter(Boolean).map(Number);
  }
}

/** Removes build groups left by a worker process that died mid-build (never a live worker's). */
function removeStaleGroups(parent: string): void {
  let names: string[] = [];
  try {
    names = readdirSync(parent).filter((n) => n.startsWith(CGROUP_PREFIX));
  } catch {
    return;
  }
  for (const n of names) {
    const owner = Number(n.slice(CGROUP_PREFIX.length).split("-")[0]);
    if (isAlive(owner)) continue;
    try {
      const procs = readFileSync(path.join(parent, n, "cgroup.procs"), "utf8").trim();
      if (procs) signalAll(procs.split("\n").map(Number));
      rmdirSync(path.join(parent, n));
    } catch {
      // still busy; next time
    }
  }
}

function isAlive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Fallback: sums the memory of the process tree found in /proc (see ProcTree.memory). */
export class ProcMonitor implements BuildMonitor {
  readonly kind = "proc" as const;
  private tree?: ProcTree;
  private root = 0;
  /** The root, once it left: close() kills the rest of the tree only. */
  private spared = 0;
  private peak = 0;
  private measured = false;

  constructor(private readonly limitBytes: number, private readonly procRoot = "/proc") {}

  enter(pid: number): void {
    this.root = pid;
    this.tree = new ProcTree(pid, this.procRoot);
  }

  leave(pid: number): void {
    if (pid === this.root) this.spared = pid;
  }

  sample(): MemorySample {
    const m = this.tree?.memory();
    const currentBytes = m?.bytes ?? 0;
    this.peak = Math.max(this.peak, currentBytes);
    // nix-store alone (before it forks the builder, or after) says nothing about the build's own need.
    if (m?.live.some((p) => p.pid !== this.root)) this.measured = true;
    return { currentBytes, peakBytes: this.peak, overLimit: this.limitBytes > 0 && currentBytes > this.limitBytes, measured: this.measured };
  }

  async killAll(): Promise<void> {
    await this.tree?.killAll();
  }

  async close(): Promise<void> {
    await this.tree?.killAll(undefined, this.spared);
  }
}
