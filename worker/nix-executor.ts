// The real executor: stock Nix 2.8 against the worker's relocated store.
// fetch .drv closure -> substitute inputs -> build just this drv -> upload outputs,
// mapping every way that can go wrong onto a BuildOutcome.
import { existsSync } from "node:fs";
import pRetry from "p-retry";
import type { Logger } from "pino";
import type { CacheApi } from "./cache-api.js";
import type { AssignmentSpec, BuildOutcome, BuildReport } from "../proto/types.js";
import { httpRequest } from "../proto/nix/http.js";
import type { CacheFactory } from "./cache-api.js";
import { BuildStepError, failureReport, memoryOf, oneLine, type Executor, type ExecutorContext } from "./executor.js";
import { DrvMemo } from "./drv-closure.js";
import { ensureOnlyThisBuilds, fetchInputs, type FetchRequest } from "./fetch-inputs.js";
import { freeDiskBytes } from "./host-probe.js";
import { LogPump } from "./log-pump.js";
import { DISK_FULL, removeTree, runNixBuild, type NixBuildResult } from "./nix-build.js";
import { withCacheRetry } from "./cache-retry.js";
import type { NixEnv } from "./nix-env.js";
import type { MonitorChoice } from "./memory-probe.js";
import type { LogLimits } from "./nix-log.js";
import { NixCommandError, NixStore } from "./nix-store.js";
import { uploadOutputs } from "./upload-outputs.js";

/** Byte counters the executor feeds (metrics). */
export interface TransferCounters {
  downloaded(bytes: number): void;
  uploaded(bytes: number): void;
}

/** How the NixExecutor is wired. */
export interface NixExecutorOptions {
  nix: NixEnv;
  makeCache: CacheFactory;
  /** Below this much free disk in the store's filesystem, fetching/building reports disk-full. */
  minFreeDiskBytes: number;
  logger: Logger;
  counters?: TransferCounters;
  logLimits?: LogLimits;
  /** "proc" forces the /proc-sampling memory monitor even where cgroups work. */
  memoryMonitor?: MonitorChoice;
  /** How often a build's memory is sampled (nix-build's default when absent). */
  memorySampleMs?: number;
}

/** Builds with nix-store in the worker's own store. */
export class NixExecutor implements Executor {
  private readonly store: NixStore;
  /** Builds in progress here (garbage collection must not pull inputs from under another one). */
  private active = 0;
  /**
   * Outputs built here that the farm may not have published as they are (a
   * refused upload, an unconfirmed or disagreeing build, a lost lease), with
   * the NAR hash our upload computed (undefined: not uploaded). Before one is
   * used as an input it is checked against the cache's signed copy, and
   * dropped if it differs: a build here only ever uses published inputs.
   */
  private readonly builtHere = new Map<string, string | undefined>();
  /** What the .drv files read so far say, so walking a .drv closure costs no process. */
  private readonly drvMemo = new DrvMemo();

  constructor(private readonly opts: NixExecutorOptions) {
    this.store = new NixStore(opts.nix);
  }

  /**
   * Drops the inputs built here that are not the cache's signed copy (and what
   * was built on them), so they are fetched; `valid` says which inputs are here.
   * Returns the paths deleted.
   */
  private async dropUnpublished(inputs: readonly string[], valid: Set<string>, cache: CacheApi, signal: AbortSignal, log: Logger): Promise<string[]> {
    const mine = inputs.filter((p) => this.builtHere.has(p));
    if (mine.length === 0) return [];
    for (const p of mine) if (!valid.has(p)) this.builtHere.delete(p);
    const here = mine.filter((p) => valid.has(p));
    const unhashed = here.filter((p) => this.builtHere.get(p) === undefined);
    const local = unhashed.length ? await this.store.pathInfos(unhashed, signal) : new Map();
    const stale: string[] = [];
    for (const p of here) {
      const info = await cache.narInfo(p);
      const localHash = this.builtHere.get(p) ?? local.get(p)?.narHash;
      if (info && localHash !== undefined && info.narHash === localHash) this.builtHere.delete(p); // the farm published exactly this
      else stale.push(p);
    }
    if (stale.length === 0) return [];
    log.warn({ paths: stale }, "dropping outputs built here that the farm did not publish as they are; fetching the published ones");
    const dependents = await this.store.referrersClosure(stale, signal);
    // An aborted build of one of them may still be exiting, holding it as a temp root ("still alive"): give it a few seconds.
    const stillAlive = (err: unknown) => err instanceof NixCommandError && /still alive/.test(err.nixError);
    await pRetry(() => this.store.deletePaths(dependents, signal), { retries: 8, minTimeout: 250, maxTimeout: 1000, signal, shouldRetry: stillAlive }).catch(async (err) => {
      if (!stillAlive(err)) throw err;
      const roots = await this.store.roots(dependents, signal).catch((e: Error) => [`(could not list: ${e.message})`]);
      log.error({ paths: dependents, roots }, "could not drop outputs built here: something still holds them");
      throw new NixCommandError(err.command, `${err.nixError}; held by: ${roots.join(", ") || "(no root Nix names)"}`, err.exitCode);
    });
    for (const p of dependents) this.builtHere.delete(p);
    return dependents;
  }

  async run(a: AssignmentSpec, ctx: ExecutorContext): Promise<BuildReport> {
    const started = Date.now();
    const drv = a.lease.drvPath;
    const log = this.opts.logger.child({ drv, epoch: a.lease.epoch });
    const pump = new LogPump(ctx.onLog, this.opts.logLimits);
    const cache = this.opts.makeCache(ctx);
    let build: NixBuildResult | undefined;
    let report: BuildReport;
    // While the coordinator (and with it the cache) restarts, wait for it rather than fail the build.
    const retry = { probe: () => cacheAnswers(ctx.cacheUrl), signal: ctx.signal, logger: log };
    this.active++;
    try {
      // Sessions started with another configuration must not build on with it.
      if (this.opts.nix.configure(ctx)) await this.store.close();
      this.checkDisk("fetching inputs");
      let t = Date.now();
      const fetched = await withCacheRetry(async () => {
        const req: FetchRequest = {
          drvPath: drv,
          inputPaths: a.inputPaths,
          signal: ctx.signal,
          drvMemo: this.drvMemo,
          cacheUrl: ctx.cacheUrl,
          dropUnpublished: (valid) => this.dropUnpublished(a.inputPaths, valid, cache, ctx.signal, log),
          onLine: (l) => pump.line(l),
        };
        const main = await fetchInputs(this.store, cache, req);
        const extra = await ensureOnlyThisBuilds(this.store, cache, req, main.valid);
        return { drvPaths: main.drvPaths + extra.drvPaths, inputPaths: main.inputPaths + extra.inputPaths, bytes: main.bytes + extra.bytes };
      }, { ...retry, what: "fetching inputs" });
      this.opts.counters?.downloaded(fetched.bytes);
      log.info({ drvPaths: fetched.drvPaths, inputPaths: fetched.inputPaths, bytes: fetched.bytes, seconds: secs(t) }, `fetched inputs of ${a.name} in ${secs(t)}s`);
      pump.note(`fetched ${fetched.drvPaths} derivation paths and ${fetched.inputPaths} input paths in ${secs(t)}s`);

      this.checkDisk("building");
      t = Date.now();
      const session = await this.store.builds.acquire(Math.max(1, a.cores));
      try {
        build = await runNixBuild(
          session.serve,
          { drvPath: drv, memoryLimitBytes: a.memoryLimitBytes, timeoutMs: a.timeoutMs, signal: ctx.signal, onLine: (l) => pump.line(l), onUsage: ctx.onUsage, monitor: this.opts.memoryMonitor, sampleIntervalMs: this.opts.memorySampleMs },
          log,
        );
      } finally {
        await this.store.builds.release(session);
      }
      log.info({ exitCode: build.exitCode, peakMemoryBytes: build.peakMemoryBytes, monitor: build.monitor, seconds: secs(t) }, `built ${a.name} in ${secs(t)}s, peak ${peakText(build)}`);
      pump.note(`nix-store ran ${secs(t)}s, peak memory ${peakText(build)} (${build.monitor} monitor)`);
      const failure = classifyBuild(build, a);
      if (failure) throw new BuildStepError(failure.outcome, failure.error);
      for (const p of Object.values(a.outputs)) this.builtHere.set(p, undefined);

      t = Date.now();
      // If the farm ends up publishing another build of these paths, dropUnpublished swaps ours out before any use.
      const outputs = await withCacheRetry(
        () => {
          const grant = ctx.grant?.() ?? a; // adopted under a newer epoch meanwhile: upload under that one
          return uploadOutputs(this.store, cache, grant.lease, a.outputs, {
            signal: ctx.signal,
            onBytes: (n) => this.opts.counters?.uploaded(n),
            onSized: (narBytes) => ctx.onBuilt?.(narBytes),
            uploadCredential: grant.uploadCredential,
          });
        },
        { ...retry, what: "uploading outputs" },
      );
      for (const o of outputs) this.builtHere.set(o.path, o.narHash); // what we uploaded is what the store holds
      log.info({ outputs: outputs.length, bytes: outputs.reduce((s, o) => s + o.narSize, 0), seconds: secs(t) }, `uploaded ${outputs.length} output(s) of ${a.name}`);
      report = { lease: a.lease, outcome: "succeeded", outputs, durationMs: Date.now() - started, ...memoryOf(measuredPeak(build)), cores: a.cores, error: "" };
    } catch (err) {
      report = this.failure(a, err, ctx.signal, started, measuredPeak(build));
      log.warn({ outcome: report.outcome, error: report.error }, `build of ${a.name} ended: ${report.outcome}`);
      pump.note(`${report.outcome}: ${report.error}`);
    } finally {
      pump.close();
    }
    await this.cleanUp(a, report, log);
    this.active--;
    return report;
  }

  private checkDisk(step: string): void {
    const free = freeDiskBytes(this.opts.nix.dirs.storeDir);
    if (free < this.opts.minFreeDiskBytes) {
      throw new BuildStepError("disk-full", `only ${mib(free)} MiB free in ${this.opts.nix.dirs.storeDir} before ${step} (need ${mib(this.opts.minFreeDiskBytes)} MiB)`);
    }
  }

  private failure(a: AssignmentSpec, err: unknown, signal: AbortSignal, started: number, peak: number | undefined): BuildReport {
    if (signal.aborted) return failureReport(a, "aborted", `aborted: ${String(signal.reason ?? "requested")}`, started, peak);
    const msg = (err as Error)?.message ?? String(err);
    // A full disk shows up in whatever step hit it first (import, substitution, build, dump).
    if (DISK_FULL.test(msg)) return failureReport(a, "disk-full", msg, started, peak);
    if (err instanceof BuildStepError) return failureReport(a, err.outcome, err.message, started, peak);
    return failureReport(a, "worker-error", msg, started, peak);
  }

  /** Frees what a failed or killed build left behind so the next build starts clean. */
  private async cleanUp(a: AssignmentSpec, report: BuildReport, log: Logger): Promise<void> {
    try {
      if (report.outcome === "succeeded") return;
      const outs = Object.values(a.outputs).filter((p) => existsSync(p) || existsSync(`${p}.lock`));
      if (outs.length === 0) return;
      const invalid = await this.store.invalidPaths(outs);
      for (const p of invalid) {
        await removeTree(p);
        await removeTree(`${p}.lock`);
      }
    } catch (err) {
      log.warn({ err }, "cleaning up after the build failed");
    }
    // A full disk: also drop the inputs of past builds, unless another build here still needs them.
    if (report.outcome === "disk-full" && this.active === 1) {
      await this.store.collectGarbage().then(
        () => log.info({ freeBytes: freeDiskBytes(this.opts.nix.dirs.storeDir) }, "disk was full: collected garbage"),
        (err: unknown) => log.warn({ err }, "collecting garbage after a full disk failed"),
      );
    }
  }
}

/** The outcome of a finished nix-store run that did not succeed (undefined = it did). */
export function classifyBuild(b: NixBuildResult, a: AssignmentSpec): { outcome: BuildOutcome; error: string } | undefined {
  if (b.aborted) return { outcome: "aborted", error: "aborted while building" };
  if (b.timedOut) return { outcome: "timed-out", error: `build exceeded its ${Math.round(a.timeoutMs / 1000)}s time limit` };
  if (b.outOfMemory) {
    const limit = a.memoryLimitBytes > 0 ? ` (limit ${mib(a.memoryLimitBytes)} MiB)` : "";
    return { outcome: "out-of-memory", error: `build ran out of memory${b.memoryMeasured ? ` at ${mib(b.peakMemoryBytes)} MiB` : ""}${limit}` };
  }
  if (b.exitCode === 0) return undefined;
  const error = oneLine(b.error ?? `nix-store exited with code ${b.exitCode}`);
  if (b.diskFull || DISK_FULL.test(error)) return { outcome: "disk-full", error: b.diskFull ? `disk full: ${error}` : error };
  // A builder killed by a signal (the platform, the OOM killer, a recycled container) says nothing
  // about the derivation: retry it elsewhere rather than failing it for good.
  if (/failed due to signal/.test(error)) return { outcome: "worker-error", error };
  // 100: build failed, 101: timed out, 102: hash mismatch, 104: not deterministic (nix-store's documented codes).
  if (b.exitCode >= 100 || /^builder for /.test(error)) return { outcome: "failed", error };
  return { outcome: "worker-error", error };
}

/** True when the cache at `url` answers at all. */
async function cacheAnswers(url: string): Promise<boolean> {
  try {
    const res = await httpRequest(`${url.replace(/\/+$/, "")}/nix-cache-info`, { idleTimeoutMs: 3000 });
    res.discard();
    return res.status < 500;
  } catch {
    return false;
  }
}

/** The build's peak, undefined when nothing measured it. */
function measuredPeak(b: NixBuildResult | undefined): number | undefined {
  return b?.memoryMeasured ? b.peakMemoryBytes : undefined;
}

function peakText(b: NixBuildResult): string {
  return b.memoryMeasured ? `${mib(b.peakMemoryBytes)} MiB` : "not measured";
}

function secs(since: number): string {
  return ((Date.now() - since) / 1000).toFixed(1);
}

function mib(bytes: number): number {
  return Math.round(bytes / 1024 ** 2);
}
