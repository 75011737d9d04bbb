// Runs `nix-store -r <drv>` for one derivation inside a memory monitor, with a
// wall-clock limit and abort, and kills the whole tree (Nix puts builders in
// their own session, so killing nix-store alone would orphan them).
import { chmod, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";
import type { Logger } from "pino";
import { createBuildMonitor, type MonitorChoice } from "./memory-probe.js";
import type { NixEnv } from "./nix-env.js";
import { isNixNoise, LineSplitter, LineTail, parseNixError } from "./nix-log.js";

/** What tools and Nix print when a filesystem is full. */
export const DISK_FULL = /No space left on device|ENOSPC|database or disk is full|Disk quota exceeded/i;

/** How often memory is sampled (and the /proc guard checked) unless the worker's config says otherwise. */
export const DEFAULT_SAMPLE_INTERVAL_MS = 100;

/** What one build needs. */
export interface NixBuildRequest {
  drvPath: string;
  cores: number;
  /** 0 = measure only. */
  memoryLimitBytes: number;
  /** 0 = none. */
  timeoutMs: number;
  /** The build's TMPDIR (removed afterwards by the caller). */
  tmpDir: string;
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

/** Builds one derivation; never throws for build failures. */
export async function runNixBuild(nix: NixEnv, req: NixBuildRequest, logger?: Logger): Promise<NixBuildResult> {
  const monitor = createBuildMonitor(req.memoryLimitBytes, logger, req.monitor);
  const cmd = monitor.wrap("nix-store", [
    "-r",
    req.drvPath,
    "--max-jobs",
    "1",
    "--cores",
    String(Math.max(1, req.cores)),
    // Inputs were substituted already and checked by a dry run: nothing to fetch, only this to build.
    "--option",
    "substitute",
    "false",
  ]);
  const child = execa(cmd.file, cmd.args, { env: nix.env(req.tmpDir), extendEnv: false, detached: true, buffer: false, reject: false, all: true, stdin: "ignore" });
  if (child.pid !== undefined) monitor.attach(child.pid);
  const tail = new LineTail(200);
  const splitter = new LineSplitter();
  const take = (line: string) => {
    if (isNixNoise(line)) return;
    tail.push(line);
    req.onLine(line);
  };
  child.all?.on("data", (chunk: Buffer) => splitter.push(chunk).forEach(take));

  let reason: "oom" | "timeout" | "abort" | undefined;
  let killing: Promise<void> | undefined;
  const kill = (why: "oom" | "timeout" | "abort") => {
    reason ??= why;
    killing ??= (async () => {
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // group already gone
        }
      }
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
  const sampler = setInterval(sample, req.sampleIntervalMs ?? DEFAULT_SAMPLE_INTERVAL_MS);
  const timer = req.timeoutMs > 0 ? setTimeout(() => kill("timeout"), req.timeoutMs) : undefined;
  const onAbort = () => kill("abort");
  if (req.signal.aborted) onAbort();
  else req.signal.addEventListener("abort", onAbort, { once: true });

  try {
    const r = await child;
    splitter.end().forEach(take);
    sample(); // the peak and OOM counter as the build ended
    await killing;
    const exitCode = r.exitCode ?? (r.signal ? 128 + (signalNumber(r.signal) ?? 0) : -1);
    const error = exitCode === 0 ? undefined : (parseNixError(tail.all) ?? `nix-store exited with ${r.signal ?? `code ${exitCode}`}`);
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
      diskFull: exitCode !== 0 && tail.all.some((l) => DISK_FULL.test(l)),
      monitor: monitor.kind,
    };
  } finally {
    clearInterval(sampler);
    if (timer) clearTimeout(timer);
    req.signal.removeEventListener("abort", onAbort);
    await monitor.close();
  }
}

function signalNumber(sig: string): number | undefined {
  return ({ SIGKILL: 9, SIGTERM: 15, SIGINT: 2, SIGSEGV: 11, SIGABRT: 6 } as Record<string, number>)[sig];
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
