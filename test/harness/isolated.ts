// Runs a process the way a separate container would see it, through
// deploy/local/isolate.sh (shared with the demo): its own mount namespace with
// a private /tmp/nix (a test dir bind-mounted there), the host's /nix hidden
// where there is one, its own memory cgroup (v1; a real limit, so OOM kills
// are real), and optionally an unprivileged uid. Killing the cgroup kills
// everything the "container" started, like a platform recycling it.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, openSync, readFileSync, readdirSync, rmdirSync, writeFileSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const CGROUP_ROOT = "/sys/fs/cgroup/memory";
/** The one isolation script, shared with the demo (deploy/local/demo.sh). */
export const ISOLATE_SH = path.join(repoRoot(), "deploy/local/isolate.sh");
/** The checkout: the nearest ancestor of this file with a package.json (from test/harness, or dist/test/harness when a bench runs compiled). */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}
/** Exit code of isolate.sh when a step of the isolation itself failed. */
export const ISOLATION_FAILED = 125;

/** How to isolate one process. */
export interface IsolationOptions {
  /** Host directory (the test's own) that becomes /tmp/nix inside; created if missing. */
  nixDir: string;
  /** Instead of binding nixDir, mount an empty tmpfs of this many bytes as /tmp/nix (a small disk). */
  nixTmpfsBytes?: number;
  /** Memory cgroup limit; a cgroup is always created so the whole tree can be killed. */
  memoryLimitBytes?: number;
  /**
   * Bind-mount `source` at `at` (an existing empty dir) inside, so an unprivileged
   * uid can read a checkout whose parent dirs it may not traverse (e.g. a 0700 temp dir).
   */
  expose?: { source: string; at: string } | { source: string; at: string }[];
  /** Hide the host's /nix (where it has one) so nothing can come from a host store. */
  hideNix?: boolean;
  /** More host paths to hide the same way (an empty tmpfs over a dir, /dev/null over a file; a missing one needs nothing). */
  hide?: string[];
  /** Drop to this uid (and the same gid) before exec. */
  uid?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** File receiving stdout (and stderr unless errFile is set). */
  logFile?: string;
  /** File receiving stderr. */
  errFile?: string;
}

/** A running isolated process and its cgroup. */
export class IsolatedProcess {
  /** Resolves with the exit code (or 128+signal) when the process ends. */
  readonly exited: Promise<number>;
  /** Exit code once ended (ISOLATION_FAILED: the isolation itself failed; see the log). */
  exitCode?: number;

  constructor(readonly child: ChildProcess, readonly cgroupDir: string, readonly logFile: string | undefined) {
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => resolve((this.exitCode = code ?? 128 + (signal ? osSignal(signal) : 0))));
      child.on("error", () => resolve((this.exitCode = 127)));
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** SIGKILLs every process in the cgroup: the container is gone. */
  killAll(): void {
    for (const pid of cgroupPids(this.cgroupDir)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
  }

  /**
   * SIGSTOPs (or SIGCONTs) every process in the cgroup, repeating until no new
   * pid shows up: the whole container is frozen, as if cut off, but its TCP
   * connections stay open.
   */
  freeze(frozen: boolean): void {
    const done = new Set<number>();
    for (let round = 0; round < 20; round++) {
      const pids = cgroupPids(this.cgroupDir).filter((p) => !done.has(p));
      if (pids.length === 0) return;
      for (const pid of pids) {
        done.add(pid);
        try {
          process.kill(pid, frozen ? "SIGSTOP" : "SIGCONT");
        } catch {
          /* gone */
        }
      }
    }
  }

  /** Sends a signal to the main process only (e.g. SIGTERM for a graceful drain). */
  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  /** Kills what is left and removes the cgroup. */
  async dispose(): Promise<void> {
    this.killAll();
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 5000))]);
    for (let i = 0; i < 50 && cgroupPids(this.cgroupDir).length; i++) {
      this.killAll();
      await new Promise((r) => setTimeout(r, 100));
    }
    removeCgroup(this.cgroupDir);
    try {
      rmdirSync(path.dirname(this.cgroupDir)); // this test process's parent cgroup, once its last child is gone
    } catch {
      /* other isolated processes of this test still use it */
    }
  }

  /** Throws with the log when the isolation itself failed: a "container" must never silently share the host's view. */
  assertIsolated(): void {
    if (this.exitCode === ISOLATION_FAILED) throw new Error(`isolation failed:\n${this.log()}`);
  }

  /** The process's log so far. */
  log(): string {
    return this.logFile && existsSync(this.logFile) ? readFileSync(this.logFile, "utf8") : "";
  }

  /** Memory cgroup counters: current peak and OOM kills. */
  memoryStats(): { maxUsageBytes: number; oomKills: number } {
    const oom = /oom_kill (\d+)/.exec(readFileSync(path.join(this.cgroupDir, "memory.oom_control"), "utf8"));
    return {
      maxUsageBytes: Number(readFileSync(path.join(this.cgroupDir, "memory.max_usage_in_bytes"), "utf8")),
      oomKills: oom ? Number(oom[1]) : 0,
    };
  }
}

let counter = 0;
/** This test process's parent cgroup; removed when the process exits. */
const TEST_CGROUP = path.join(CGROUP_ROOT, `tmpnix-test-${process.pid}`);
process.once("exit", () => removeCgroupAtExit(TEST_CGROUP));

/**
 * At exit nothing async runs any more, yet an isolated process may still be
 * alive (a test that timed out mid-call): kill what is left, then retry the
 * removal for a moment while the kernel reaps it, so no cgroup outlives the run.
 */
function removeCgroupAtExit(dir: string): void {
  if (!existsSync(dir)) return;
  for (const pid of cgroupPids(dir)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 100 && existsSync(dir); i++) {
    removeCgroup(dir);
    if (existsSync(dir)) Atomics.wait(pause, 0, 0, 20);
  }
}

/** Starts `cmd args` isolated as described by `opts`. */
export function spawnIsolated(name: string, cmd: string, args: string[], opts: IsolationOptions): IsolatedProcess {
  mkdirSync(opts.nixDir, { recursive: true });
  const cgroupDir = path.join(TEST_CGROUP, `${name}-${++counter}`);
  mkdirSync(cgroupDir, { recursive: true });
  if (opts.memoryLimitBytes) writeFileSync(path.join(cgroupDir, "memory.limit_in_bytes"), String(opts.memoryLimitBytes));
  const out = opts.logFile ? openSync(opts.logFile, "a") : "ignore";
  const err = opts.errFile ? openSync(opts.errFile, "a") : out;
  const env = opts.env ?? process.env;
  const flags = [
    ...(opts.nixTmpfsBytes ? ["--nix-tmpfs", String(opts.nixTmpfsBytes)] : ["--nix-dir", opts.nixDir]),
    ...(opts.hideNix ? ["--hide-nix"] : []),
    ...(opts.hide ?? []).flatMap((p) => ["--hide", p]),
    ...[opts.expose ?? []].flat().flatMap((e) => ["--expose", `${e.source}:${e.at}`]),
    "--cgroup", cgroupDir,
    ...(opts.uid === undefined ? [] : ["--uid", String(opts.uid)]),
    // The caller's PATH (which may hold no system tools at all) applies only from exec on.
    "--path", env.PATH ?? "/usr/bin:/bin",
  ];
  const child = spawn("/bin/sh", [ISOLATE_SH, ...flags, "--", cmd, ...args], { cwd: opts.cwd, env, stdio: ["ignore", out, err] });
  return new IsolatedProcess(child, cgroupDir, opts.logFile);
}

/** Default limit of one runIsolated call: a stuck command fails its test instead of hanging the suite. */
export const RUN_TIMEOUT_MS = 240_000;

/**
 * Runs an isolated command to completion and returns its exit code, stdout and
 * stderr. Past `timeoutMs` its whole cgroup is killed and the code is 124.
 */
export async function runIsolated(
  name: string,
  cmd: string,
  args: string[],
  opts: Omit<IsolationOptions, "logFile" | "errFile"> & { timeoutMs?: number },
): Promise<{ code: number; stdout: string; stderr: string }> {
  const base = path.join(path.dirname(opts.nixDir), `${name}-${process.pid}-${++counter}`);
  const p = spawnIsolated(name, cmd, args, { ...opts, logFile: `${base}.out`, errFile: `${base}.err` });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    p.killAll();
  }, opts.timeoutMs ?? RUN_TIMEOUT_MS);
  const exit = await p.exited;
  clearTimeout(timer);
  const code = timedOut ? 124 : exit;
  const stdout = readFileSync(`${base}.out`, "utf8");
  const stderr = readFileSync(`${base}.err`, "utf8");
  await p.dispose();
  if (code === ISOLATION_FAILED && /^isolate: /m.test(stderr)) throw new Error(`isolation of ${cmd} failed: ${stderr.trim()}`);
  return { code, stdout, stderr };
}

/** Pids in a cgroup and every cgroup below it (builds run in child cgroups). */
function cgroupPids(dir: string): number[] {
  let pids: number[] = [];
  try {
    pids = readFileSync(path.join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) pids.push(...cgroupPids(path.join(dir, e.name)));
  } catch {
    /* gone */
  }
  return pids;
}

/** Removes a cgroup and the ones below it, deepest first. */
function removeCgroup(dir: string): void {
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroup(path.join(dir, e.name));
    rmdirSync(dir);
  } catch {
    /* busy or gone */
  }
}

function osSignal(name: NodeJS.Signals): number {
  return ({ SIGKILL: 9, SIGTERM: 15, SIGINT: 2 } as Record<string, number>)[name] ?? 0;
}
