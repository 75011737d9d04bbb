// A build's process tree as seen in /proc. Nix starts each builder in a new
// session (setsid), and builders may leave orphans that get re-parented to init,
// so "the tree" is every descendant of the root plus every process sharing a
// session with one. Used to measure memory without cgroups and to kill builds.
import { closeSync, openSync, readdirSync, readFileSync, readSync } from "node:fs";

/** The fields of /proc/<pid>/stat we need. */
export interface ProcInfo {
  pid: number;
  /** R, S, D, Z (zombie: dead, waiting to be reaped), ... */
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  /** Resident set size in bytes. */
  rssBytes: number;
}

const PAGE_SIZE = 4096;

/** Parses /proc/<pid>/stat (the command name may contain spaces and parentheses). */
export function parseProcStat(text: string): ProcInfo | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const pid = Number(text.slice(0, text.indexOf(" ")));
  // After ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
  // utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss
  const f = text.slice(close + 2).split(" ");
  const nums = { pid, ppid: Number(f[1]), pgrp: Number(f[2]), session: Number(f[3]), rssBytes: Number(f[21]) * PAGE_SIZE };
  return Object.values(nums).every(Number.isFinite) ? { ...nums, state: f[0] } : undefined;
}

/** Every process currently visible in /proc. */
export function snapshotProcs(procRoot = "/proc"): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync(procRoot)) {
    if (!/^\d+$/.test(name)) continue;
    const text = readSmall(`${procRoot}/${name}/stat`); // undefined: exited while we looked
    const info = text === undefined ? undefined : parseProcStat(text);
    if (info) out.push(info);
  }
  return out;
}

/**
 * Members of the tree rooted at `root`: its descendants, plus processes in the
 * sessions of those descendants (not `excludeSession`, the worker's own).
 * `knownSessions` carries sessions seen in earlier snapshots, so orphans whose
 * parent died are still found; it is updated in place.
 */
export function treeMembers(procs: ProcInfo[], root: number, knownSessions: Set<number>, excludeSession: number): ProcInfo[] {
  const children = new Map<number, ProcInfo[]>();
  for (const p of procs) {
    const list = children.get(p.ppid);
    if (list) list.push(p);
    else children.set(p.ppid, [p]);
  }
  const members = new Map<number, ProcInfo>();
  const stack = procs.filter((p) => p.pid === root || (knownSessions.has(p.session) && p.session !== excludeSession));
  while (stack.length) {
    const p = stack.pop()!;
    if (members.has(p.pid)) continue;
    members.set(p.pid, p);
    stack.push(...(children.get(p.pid) ?? []));
  }
  for (const p of members.values()) if (p.session !== excludeSession && p.session > 1) knownSessions.add(p.session);
  return [...members.values()];
}

/** How a process's memory is counted when the tree is summed. */
export type MemoryAccounting = "anon" | "rss";

/**
 * The memory `pid` holds that the kernel cannot reclaim: RssAnon + RssShmem
 * from /proc/PID/status (Linux 4.5+). File-backed pages (the binaries and
 * libraries every process maps, counted again in each RSS) are page cache the
 * kernel drops under pressure; status needs no ptrace access and no page-table
 * walk, unlike smaps_rollup's PSS (test/bench/proc-sample.ts compares them).
 * Falls back to `fallbackRss` (from stat) on older kernels; undefined when gone.
 */
export function processMemoryBytes(pid: number, fallbackRss: number, procRoot = "/proc"): { bytes: number; accounting: MemoryAccounting } | undefined {
  const text = readSmall(`${procRoot}/${pid}/status`);
  if (text === undefined) return undefined;
  const anon = statusKb(text, "RssAnon");
  if (anon === undefined) return { bytes: fallbackRss, accounting: "rss" };
  return { bytes: (anon + (statusKb(text, "RssShmem") ?? 0)) * 1024, accounting: "anon" };
}

/** A "Key:   123 kB" line of /proc/PID/status. */
export function statusKb(text: string, key: string): number | undefined {
  const at = text.indexOf(`\n${key}:`);
  if (at < 0) return undefined;
  const m = /^\s*(\d+) kB/.exec(text.slice(at + key.length + 2, at + key.length + 40));
  return m ? Number(m[1]) : undefined;
}

// One buffer for every /proc read: a sample reads a file per process on the box.
const buf = Buffer.alloc(8192);

/** A small /proc file's text, or undefined when the process is gone. */
function readSmall(file: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch {
    return undefined;
  }
  try {
    return buf.toString("latin1", 0, readSync(fd, buf, 0, buf.length, 0));
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Sends `signal` to each pid, ignoring ones that are already gone. */
export function signalAll(pids: Iterable<number>, signal: NodeJS.Signals = "SIGKILL"): void {
  for (const pid of pids) {
    if (pid <= 1 || pid === process.pid) continue;
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Tracks one build's process tree across snapshots. */
export class ProcTree {
  private readonly sessions = new Set<number>();
  private readonly ownSession: number;

  constructor(private readonly root: number, private readonly procRoot = "/proc") {
    this.ownSession = parseProcStat(readFileSync(`${procRoot}/self/stat`, "utf8"))?.session ?? -1;
  }

  /** Current members of the tree. */
  members(): ProcInfo[] {
    return treeMembers(snapshotProcs(this.procRoot), this.root, this.sessions, this.ownSession);
  }

  /** Summed RSS of the tree now. */
  rssBytes(): number {
    return this.members().reduce((sum, p) => sum + p.rssBytes, 0);
  }

  /**
   * The tree's memory now (anonymous + shmem, see processMemoryBytes) and its
   * live processes (zombies hold no memory and are not counted).
   */
  memory(): { bytes: number; live: ProcInfo[]; accounting: MemoryAccounting } {
    let bytes = 0;
    let accounting: MemoryAccounting = "anon";
    const live: ProcInfo[] = [];
    for (const p of this.members()) {
      if (p.state === "Z") continue;
      const m = processMemoryBytes(p.pid, p.rssBytes, this.procRoot);
      if (m === undefined) continue;
      bytes += m.bytes;
      if (m.accounting === "rss") accounting = "rss";
      live.push(p);
    }
    return { bytes, live, accounting };
  }

  /** SIGKILLs the whole tree but `spare`, repeating while processes remain (they may fork as we kill). */
  async killAll(rounds = 20, spare = 0): Promise<void> {
    for (let i = 0; i < rounds; i++) {
      const pids = this.members().filter((p) => p.state !== "Z" && p.pid !== spare).map((p) => p.pid);
      if (pids.length === 0) return;
      signalAll(pids);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}
