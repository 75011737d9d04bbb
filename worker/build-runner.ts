// The builds of one worker process. It outlives gRPC connections: a build keeps
// running while the worker reconnects, is reported as running in the next
// WorkerJoin (so the coordinator can adopt it), and its result is kept until a
// coordinator acknowledges it.
import type { Logger } from "pino";
import { FarmError } from "../proto/errors.js";
import { baseName } from "../proto/nix/mod.js";
import type { AssignmentSpec, BuildReport, Lease } from "../proto/types.js";
import { splitForDrain } from "./drain-plan.js";
import { failureReport, type Executor } from "./executor.js";
import type { RunningUsage } from "../proto/types.js";

/** Where logs and results of builds go while a connection is up. */
export interface BuildSink {
  log(lease: Lease, lines: string[]): void;
  /** The builder of `lease` is done and its outputs upload: its slot is free (BuildStepDone). */
  built(lease: Lease): void;
  result(report: BuildReport): void;
}

/**
 * Why start() did or didn't start a build. The last three decline it:
 * "stopping" when an aborted attempt of the same derivation is still on its way out.
 */
export type StartResult = "started" | "already-running" | "adopted" | "full" | "draining" | "stopping";

/** Why an assignment was declined, for the coordinator's log and `farm status`; null when it was not. */
export function declineReason(started: StartResult, busy: readonly Lease[]): string | null {
  switch (started) {
    case "full": {
      const names = busy.map((l) => `${baseName(l.drvPath)} (epoch ${l.epoch})`);
      return `worker is already running its maximum number of builds (${busy.length}): ${names.join(", ")}`;
    }
    case "draining":
      return "worker is draining";
    case "stopping":
      return "an aborted attempt of this derivation is still stopping here";
    default:
      return null;
  }
}

interface Running {
  /** The lease it runs under now (renewed when a coordinator adopts it under a newer epoch), and its upload credential. */
  lease: Lease;
  uploadCredential?: string;
  spec: AssignmentSpec;
  startedAtMs: number;
  abort: AbortController;
  memoryBytes: number;
  peakMemoryBytes: number;
  /** Handed back to the coordinator: its result must not be reported. */
  handedBack: boolean;
  /** Its builder is done and it uploads outputs big enough to hold no slot meanwhile (at most maxBuilds such at once). */
  uploading: boolean;
  done: Promise<void>;
}

/**
 * Outputs of at least this many NAR bytes upload beside the next build by default: on this
 * machine a trivial build's upload took 10 ms, and a build beside it made both slower
 * (README, "Batches, uploads beside the next build, and no gzip for nothing").
 */
export const UPLOAD_BESIDE_FROM_BYTES = 1 << 20;

/** Results kept for resending; bounded so a coordinator that never acks can't grow it forever. */
const MAX_UNACKED = 1000;

/** Runs builds through an Executor, up to maxBuilds at once. */
export class BuildRunner {
  private readonly running = new Map<string, Running>();
  private readonly unacked = new Map<string, BuildReport>();
  private sink?: BuildSink;
  private cache?: { cacheUrl: string; cachePublicKey: string };
  private draining = false;

  constructor(
    private readonly executor: Executor,
    private readonly maxBuilds: number,
    private readonly logger: Logger,
    private readonly onReport?: (r: BuildReport) => void,
    /** Outputs of at least this many NAR bytes upload beside the next build (startUpload). */
    private readonly uploadBesideFromBytes = UPLOAD_BESIDE_FROM_BYTES,
  ) {}

  /** The cache named by the current coordinator. */
  setCache(cache: { cacheUrl: string; cachePublicKey: string }): void {
    this.cache = cache;
  }

  /** Routes logs and results to a connection (undefined while disconnected). */
  attach(sink: BuildSink | undefined): void {
    this.sink = sink;
  }

  /** Leases of the builds running now. */
  leases(): Lease[] {
    return [...this.running.values()].map((r) => r.lease);
  }

  /**
   * Leases of the builds that hold a slot. An aborted build is on its way out (its process tree is
   * already killed): its slot is free. The coordinator sends new work right after aborting a stale
   * lease, as when a cut-off worker comes back. A build that only uploads holds none either.
   */
  busyLeases(): Lease[] {
    return [...this.running.values()].filter((r) => !r.abort.signal.aborted && !r.uploading).map((r) => r.lease);
  }

  /** Memory use of each running build. */
  usage(): RunningUsage[] {
    return [...this.running.values()].map((r) => ({ lease: r.lease, memoryBytes: r.memoryBytes, peakMemoryBytes: r.peakMemoryBytes }));
  }

  /**
   * Leases to name in a WorkerJoin: running builds, and finished ones whose
   * result no coordinator acknowledged yet. Both are still ours: a coordinator
   * that restarted adopts them instead of requeueing, and the result follows.
   */
  joinLeases(): Lease[] {
    const out = this.leases();
    for (const r of this.unacked.values()) if (!out.some((l) => l.drvPath === r.lease.drvPath)) out.push(r.lease);
    return out;
  }

  /** Results not yet acknowledged by a coordinator (resent after reconnecting). */
  unackedResults(): BuildReport[] {
    return [...this.unacked.values()];
  }

  /** Forgets a result once a coordinator acknowledged it. */
  ack(lease: Lease): void {
    this.unacked.delete(key(lease));
  }

  /** Whether new builds are refused. */
  get isDraining(): boolean {
    return this.draining;
  }

  /** Starts a build unless full, draining, or already running (a newer epoch of a running drv is adopted). */
  start(spec: AssignmentSpec): StartResult {
    const existing = this.running.get(spec.lease.drvPath);
    if (existing) {
      if (existing.lease.epoch === spec.lease.epoch) return "already-running";
      // Being killed: adopting it would only report an abort under the new lease.
      if (existing.abort.signal.aborted) return "stopping";
      // Reassigned to us while we were still building it: keep building, report under the new epoch.
      this.logger.info({ drv: spec.lease.drvPath, from: existing.lease.epoch, to: spec.lease.epoch }, "adopting running build under a new lease");
      existing.lease = spec.lease;
      existing.uploadCredential = spec.uploadCredential;
      return "adopted";
    }
    if (this.draining) return "draining";
    if (this.busyLeases().length >= this.maxBuilds) return "full";
    if (!this.cache) throw new FarmError("no cache configured before the first build");
    const cache = this.cache;
    const abort = new AbortController();
    const started = Date.now();
    const entry: Running = { lease: spec.lease, uploadCredential: spec.uploadCredential, spec, startedAtMs: started, abort, memoryBytes: 0, peakMemoryBytes: 0, handedBack: false, uploading: false, done: Promise.resolve() };
    this.running.set(spec.lease.drvPath, entry);
    entry.done = this.executor
      .run(spec, {
        ...cache,
        signal: abort.signal,
        onLog: (lines) => this.sink?.log(entry.lease, lines),
        grant: () => ({ lease: entry.lease, uploadCredential: entry.uploadCredential }),
        onUsage: (bytes) => {
          entry.memoryBytes = bytes;
          entry.peakMemoryBytes = Math.max(entry.peakMemoryBytes, bytes);
        },
        onBuilt: (narBytes) => this.startUpload(entry, narBytes),
      })
      .catch((err: unknown) => failureReport(spec, "worker-error", `executor crashed: ${(err as Error)?.message ?? String(err)}`, started))
      .then((report) => this.finish(entry, report));
    return "started";
  }

  /**
   * The builder of `entry` is done and `narBytes` upload next. An upload of at least
   * uploadBesideFromBytes gives up its slot (while fewer than maxBuilds others do) and the
   * coordinator is told, so the next build runs beside it; a smaller one takes milliseconds, and
   * a build beside it would only contend with it, so it keeps its slot.
   */
  private startUpload(entry: Running, narBytes: number): void {
    // Once per build (an upload tried again after the cache came back says its size again).
    if (entry.uploading || narBytes < this.uploadBesideFromBytes || entry.abort.signal.aborted || entry.handedBack || this.running.get(entry.spec.lease.drvPath) !== entry) return;
    const uploading = [...this.running.values()].filter((r) => r.uploading).length;
    if (uploading >= this.maxBuilds) return;
    entry.uploading = true;
    this.sink?.built(entry.lease);
  }

  /** Aborts the build of `lease` if its epoch is the one running (a stale abort can't kill an adopted build). */
  abort(lease: Lease, reason: string): boolean {
    const r = this.running.get(lease.drvPath);
    if (!r || lease.epoch !== r.lease.epoch) return false;
    r.abort.abort(reason);
    return true;
  }

  /**
   * Refuses new builds from now on. Builds expected to end after `deadlineMs`
   * (by their assignment's estimate) are handed back at once; the others keep
   * running. Returns both lists.
   */
  beginDrain(now: number, deadlineMs: number, reason: string): { kept: Lease[]; handedBack: Lease[] } {
    this.draining = true;
    const candidates = [...this.running.values()].filter((r) => !r.handedBack);
    const split = splitForDrain(candidates.map((r) => ({ lease: r.lease, startedAtMs: r.startedAtMs, estimatedDurationMs: r.spec.estimatedDurationMs ?? 0 })), now, deadlineMs);
    for (const lease of split.handBack) {
      const r = this.running.get(lease.drvPath)!;
      r.handedBack = true;
      r.abort.abort(reason);
    }
    return { kept: split.keep, handedBack: split.handBack };
  }

  /** Refuses new builds, aborts running ones and returns their leases as handed back. */
  handBackAll(reason: string): Lease[] {
    this.draining = true;
    const leases: Lease[] = [];
    for (const r of this.running.values()) {
      if (r.handedBack) continue;
      r.handedBack = true;
      r.abort.abort(reason);
      leases.push(r.lease);
    }
    return leases;
  }

  /** Resolves when no build is running (or after `timeoutMs`). */
  async idle(timeoutMs = Infinity): Promise<boolean> {
    const all = Promise.all([...this.running.values()].map((r) => r.done)).then(() => true);
    if (!Number.isFinite(timeoutMs)) return all;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    const done = await Promise.race([all, timeout]);
    clearTimeout(timer);
    return done;
  }

  private finish(entry: Running, report: BuildReport): void {
    this.running.delete(entry.spec.lease.drvPath);
    // The lease may have been renewed (adopted) while the build ran.
    const final = { ...report, lease: entry.lease };
    this.onReport?.(final);
    if (entry.handedBack) {
      this.logger.info({ drv: final.lease.drvPath }, "handed-back build stopped");
      return;
    }
    if (this.unacked.size >= MAX_UNACKED) this.unacked.delete(this.unacked.keys().next().value as string);
    this.unacked.set(key(final.lease), final);
    this.sink?.result(final);
  }
}

function key(l: Lease): string {
  return `${l.drvPath}#${l.epoch}`;
}
