// Builds one derivation in a build session (a long-lived `nix-store --serve`,
// see build-sessions.ts) inside a memory monitor, with a wall-clock limit and
// abort. A kill takes the session and the whole build tree with it (Nix puts
// builders in sessions of their own, so killing Nix alone would orphan them).
import { chmod, readdir, rm } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { createBuildMonitor, type MonitorChoice } from "./memory-probe.js";
import type { NixServe } from "./nix-serve.js";
import { isNixNoise, LineTail } from "./nix-log.js";

/** What tools and Nix print when a filesystem is full. */
export const DISK_FULL = /No space left on device|ENOSPC|database or disk is full|Disk quota exceeded/i;

/** How often memory is sampled (and the /proc guard checked) unless the worker's config says otherwise. */
export const DEFAULT_SAMPLE_INTERVAL_MS = 100;

/** What one build needs. */
export interface NixBuildRequest {
  drvPath: string;
  /** 0 = measure only. */
  memoryLimitBytes: number;
  /** 0 = none. */
  timeoutMs: number;
  signal: AbortSignal;
  onLine(line: string): void;
  onUsage?(bytes: number): void;
  /** Force the /proc fallback (tests) instead of the best available monitor. */
  monitor?: MonitorChoice;
  /** How often memory is sampled (default DEFAULT_SAMPLE_INTERVAL_MS). */
  sampleIntervalMs?: number;
}

/** How the build process ended. */
export interface NixBuildResult {
  exitCode: number;
  /** Nix's one-line error when it failed. */
  error?: string;
  /** 0 when not measured. */
  peakMemoryBytes: number;
  /** False when no sample caught the build alive (the /proc monitor and a build shorter than its interval). */
  memoryMeasured: boolean;
  /** Killed by the kernel OOM killer in its cgroup or by the /proc guard. */
  outOfMemory: boolean;
  timedOut: boolean;
  aborted: boolean;
  /** The build's output says the disk filled up (the builder's own error, which Nix's one line hides). */
  diskFull: boolean;
  /** Which memory monitor measured it. */
  monitor: string;
}

/** Builds one derivation in `session` (started with the request's cores); never throws for build failures. */
export async function runNixBuild(session: NixServe, req: NixBuildRequest, logger?: Logger): Promise<NixBuildResult> {
  const monitor = createBuildMonitor(req.memoryLimitBytes, logger, req.monitor);
  const tail = new LineTail(200);
  const take = (line: string) => {
    if (isNixNoise(line)) return;
    tail.push(line);
    req.onLine(line);
  };

  let reason: "oom" | "timeout" | "abort" | undefined;
  let killing: Promise<void> | undefined;
  const kill = (why: "oom" | "timeout" | "abort") => {
    reason ??= why;
    killing ??= (async () => {
      session.kill();
      await monitor.killAll();
    })();
  };
  let peak = 0;
  let measured = false;
  const sample = () => {
    try {
      const s = monitor.sample();
      peak = Math.max(peak, s.peakBytes);
      measured ||= s.measured;
      req.onUsage?.(s.currentBytes);
      if (s.overLimit) kill("oom");
    } catch (err) {
      logger?.debug({ err }, "memory sample failed");
    }
  };
  let sampler: NodeJS.Timeout | undefined;
  const timer = req.timeoutMs > 0 ? setTimeout(() => kill("timeout"), req.timeoutMs) : undefined;
  const onAbort = () => kill("abort");

  try {
    monitor.enter(session.pid);
    sampler = setInterval(sample, req.sampleIntervalMs ?? DEFAULT_SAMPLE_INTERVAL_MS);
    if (req.signal.aborted) onAbort();
    else req.signal.addEventListener("abort", onAbort, { once: true });
    // A session that dies mid-build (killed above, or by the kernel) fails the command: exit -1 with why.
    const built = await session.buildPaths(req.drvPath, take).catch((err: Error) => ({ status: -1, error: err.message }));
    sample(); // the peak and OOM counter as the build ended
    await killing;
    const exitCode = built.status;
    const error = exitCode === 0 ? undefined : oneLineError(built.error ?? "") || `nix-store exited with code ${exitCode}`;
    // A builder SIGKILLed by the kernel with no cgroup to tell us why: most likely the OOM killer.
    const kernelKill = reason === undefined && monitor.kind === "proc" && /due to signal 9\b/.test(error ?? "");
    return {
      exitCode,
      error,
      peakMemoryBytes: measured ? peak : 0,
      memoryMeasured: measured,
      outOfMemory: reason === "oom" || kernelKill,
      timedOut: reason === "timeout",
      aborted: reason === "abort",
      diskFull: exitCode !== 0 && [...tail.all, error ?? ""].some((l) => DISK_FULL.test(l)),
      monitor: monitor.kind,
    };
  } finally {
    clearInterval(sampler);
    if (timer) clearTimeout(timer);
    req.signal.removeEventListener("abort", onAbort);
    if (session.alive && reason === undefined) {
      try {
        monitor.leave(session.pid);
      } catch (err) {
        // It can't get out of the build's group: it goes with the group's leftovers.
        logger?.warn({ err }, "could not move the build session out of the build's memory group; ending it");
        session.kill();
      }
    }
    await monitor.close();
  }
}

/** Nix's message for a failed build, on one line ("error: " and colours dropped). */
function oneLineError(text: string): string {
  const first = text.replace(/^error:\s*/, "").split("\n").map((l) => l.trim()).find(Boolean) ?? "";
  return first.replace(/;$/, ""); // "…; last 10 log lines:" follows where Nix keeps the log to itself
}

/**
 * Removes a directory tree even where a build left read-only directories
 * (Nix makes outputs read-only; as non-root those block deletion).
 */
export async function removeTree(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true });
    return;
  } catch {
    // fall through: make writable, then retry
  }
  await makeWritable(dir);
  await rm(dir, { recursive: true, force: true });
}

async function makeWritable(p: string): Promise<void> {
  try {
    await chmod(p, 0o755);
    for (const e of await readdir(p, { withFileTypes: true })) if (e.isDirectory()) await makeWritable(path.join(p, e.name));
  } catch {
    // not a directory, or gone
  }
}
