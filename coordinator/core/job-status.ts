// Read-only views of the scheduler for the CLI and the simulator: job status
// with counts, failures, outputs and an ETA; workers with their builds.
import { DEPENDENCY_FAILED } from "./dag-index.js";
import { holderOn, type DrvRecord } from "./drv-state.js";
import { durationAt, memoryAt, type EstimateSource } from "./estimator.js";
import type { JobCounts } from "./job-book.js";
import { platformMatches } from "./placement.js";
import type { SchedulerState } from "./scheduler-state.js";
import type { DrvPath, DrvState, JobState, StorePath } from "./types.js";
import { remainingLifetimeMs } from "./worker-state.js";

/** One derivation as status shows it. */
export interface DrvStatusRow {
  drvPath: DrvPath;
  name: string;
  state: DrvState;
  workerId: string | null;
  epoch: number;
  attempts: number;
  oomKills: number;
  reason: string;
  cached: boolean;
  durationMs: number;
  peakMemoryBytes: number;
  /** The last attempt's peak was not measured (peakMemoryBytes is 0 and means nothing). */
  peakMemoryNotMeasured: boolean;
  cores: number;
  reservedMemoryBytes: number;
  /** Estimates at the cores granted (building or built), else at the estimator's reference cores. */
  estimatedMemoryBytes: number | null;
  estimatedDurationMs: number | null;
  /** Where the estimate came from (history, heavy-table, big-parallel, fetch, local, default); null when none. */
  estimateSource: EstimateSource | null;
  /** While building: memory its process tree uses now and its peak so far, from heartbeats; 0 when unknown. */
  currentMemoryBytes: number;
  currentPeakMemoryBytes: number;
  /** Why a ready derivation is held back, not running yet (placement passed it over, or no worker fits); "" otherwise. */
  holdReason: string;
  /** Workers running a backup copy of this build (see dispatch.ts, startBackupCopies). */
  backupWorkerIds: string[];
  /** In a worker's list: this row is that worker's backup copy (workerId, cores and reservation are the copy's). */
  backupCopy: boolean;
}

/** A failed derivation of a job. */
export interface FailedDrv {
  drvPath: DrvPath;
  name: string;
  reason: string;
}

/** Everything `farm status` shows about one job. */
export interface JobStatusView {
  jobId: string;
  description: string;
  state: JobState;
  counts: JobCounts;
  createdAtMs: number;
  finishedAtMs: number | null;
  /** Estimated ms until the job ends; 0 when unknown or finished. */
  etaMs: number;
  roots: DrvPath[];
  /** Root outputs (filled when succeeded). */
  outputs: { drvPath: DrvPath; outputs: Record<string, StorePath> }[];
  /** Root causes first, then derivations whose dependency failed. */
  failures: FailedDrv[];
  /** One row per derivation, when asked for. */
  derivations: DrvStatusRow[];
}

/** A worker as status shows it. */
export interface WorkerView {
  workerId: string;
  state: string;
  systems: string[];
  features: string[];
  cores: number;
  memoryBytes: number;
  maxBuilds: number;
  /** The Nix it builds with, and where that came from ("" when it didn't say). */
  nixVersion: string;
  nixSource: string;
  /** Free memory the worker reported in its last heartbeat. */
  freeMemoryBytes: number;
  /** Memory minus the reservations of its running builds: what placement can still hand out (before the safety margin). */
  unreservedMemoryBytes: number;
  reservedMemoryBytes: number;
  reservedCores: number;
  /** Estimated disk of its running builds. */
  reservedDiskBytes: number;
  freeDiskBytes: number;
  uptimeSeconds: number;
  /** 0 when the platform sets no lifetime. */
  remainingLifetimeSeconds: number;
  lastSeenMs: number;
  deadlineMs: number;
  running: DrvStatusRow[];
  buildsDone: number;
  buildsFailed: number;
  oomKills: number;
}

// Why ready derivations of one platform are held back; one answer per platform per status call
// (a 50k-row listing must not walk every worker for every row).
type HoldCache = Map<string, string>;

function holdReason(s: SchedulerState, rec: DrvRecord, cache?: HoldCache): string {
  if (rec.state !== "ready") return "";
  const known = s.passedOver.get(rec.drvPath);
  if (known !== undefined) return known.reason;
  const node = s.dag.node(rec.drvPath);
  const key = `${node.system}\u0000${node.requiredSystemFeatures.join(",")}`;
  const hit = cache?.get(key);
  if (hit !== undefined) return hit;
  let able = false;
  let free = false;
  for (const w of s.pool.values()) {
    if (w.state !== "active" || !platformMatches(w.info, node.system, node.requiredSystemFeatures)) continue;
    able = true;
    free ||= s.pool.hasFreeSlot(w);
  }
  let why = free ? "" : "every matching worker is busy";
  if (!able) {
    const features = node.requiredSystemFeatures.length > 0 ? ` with features [${node.requiredSystemFeatures.join(", ")}]` : "";
    why = `no active worker builds ${node.system}${features}`;
  }
  cache?.set(key, why);
  return why;
}

/** The status row of one derivation; `onWorker` names the worker whose list shows it (its own copy's grant then). */
export function drvRow(s: SchedulerState, rec: DrvRecord, onWorker?: string, holds?: HoldCache): DrvStatusRow {
  const copy = onWorker !== undefined && onWorker !== rec.workerId ? holderOn(rec, onWorker) : undefined;
  const cores = copy?.cores ?? rec.cores;
  const node = s.dag.node(rec.drvPath);
  const est = s.estimator.estimate(node);
  let memory = est.memoryBytes;
  let duration = est.durationMs;
  if (est.model !== undefined && cores > 0) {
    memory = memoryAt(est.model, cores);
    duration = durationAt(est.model, cores);
  }
  const live = rec.state === "building" && copy === undefined ? s.liveUsage.get(rec.drvPath) : undefined;
  const current = live !== undefined && live.epoch === rec.epoch ? live : undefined;
  return {
    drvPath: rec.drvPath,
    name: node.name,
    state: rec.state,
    workerId: copy?.workerId ?? rec.workerId,
    epoch: rec.epoch,
    attempts: rec.attempts,
    oomKills: rec.oomKills,
    reason: rec.reason,
    cached: rec.cached,
    durationMs: rec.durationMs,
    peakMemoryBytes: rec.peakMemoryBytes,
    peakMemoryNotMeasured: rec.peakMemoryNotMeasured === true,
    cores,
    reservedMemoryBytes: copy?.reservedMemoryBytes ?? rec.reservedMemoryBytes,
    estimatedMemoryBytes: memory,
    estimatedDurationMs: duration,
    estimateSource: est.model?.source ?? null,
    currentMemoryBytes: current?.memoryBytes ?? 0,
    currentPeakMemoryBytes: current?.peakMemoryBytes ?? 0,
    holdReason: holdReason(s, rec, holds),
    backupWorkerIds: (rec.backupCopies ?? []).map((h) => h.workerId),
    backupCopy: copy !== undefined,
  };
}

// (Queued work x mean measured build time + what running builds likely have
// left) spread over the active build slots.
function etaMs(s: SchedulerState, counts: JobCounts, state: JobState, runningLeftMs: number): number {
  if (state !== "running" || s.stats.builds === 0) return 0;
  const slots = s.pool.activeSlots();
  if (slots === 0) return 0;
  const queuedMs = (counts.waiting + counts.queued) * (s.stats.totalDurationMs / s.stats.builds);
  return Math.ceil((queuedMs + runningLeftMs) / slots);
}

/** Most failures a status lists (root causes first); `counts.failed` has them all. */
export const MAX_LISTED_FAILURES = 1000;

/**
 * Status of one job, or undefined when unknown. Without rows it costs
 * O(building + failed log failed) of the job, never its size; with rows,
 * O(n log n) in the job's derivations.
 */
export function jobStatus(
  s: SchedulerState,
  jobId: string,
  now: number,
  opts: { derivations: boolean },
): JobStatusView | undefined {
  const entry = s.book.get(jobId);
  if (entry === undefined) return undefined;
  const job = entry.record;
  const counts = s.book.counts(entry);
  const bySeq = (a: DrvRecord, b: DrvRecord) => a.seq - b.seq;
  const record = (p: DrvPath) => s.dag.records.get(p)!;
  const meanMs = s.stats.builds === 0 ? 0 : s.stats.totalDurationMs / s.stats.builds;
  let runningLeftMs = 0;
  for (const p of entry.building) runningLeftMs += Math.max(0, meanMs - (now - (record(p).startedAtMs ?? now)));
  // Failures in submission order (seq), however the records were loaded: root causes, then their consequences.
  const failed = [...entry.failed].map(record).sort(bySeq);
  const causes: FailedDrv[] = [];
  const consequences: FailedDrv[] = [];
  for (const rec of failed) {
    const list = rec.reason.startsWith(DEPENDENCY_FAILED) ? consequences : causes;
    if (list.length < MAX_LISTED_FAILURES) list.push({ drvPath: rec.drvPath, name: s.dag.node(rec.drvPath).name, reason: rec.reason });
  }
  const rows: DrvStatusRow[] = [];
  if (opts.derivations) {
    const holds: HoldCache = new Map();
    for (const rec of entry.drvs.map(record).sort(bySeq)) rows.push(drvRow(s, rec, undefined, holds));
  }
  const outputs =
    job.state === "succeeded" ? job.roots.map((r) => ({ drvPath: r, outputs: { ...s.dag.node(r).outputs } })) : [];
  return {
    jobId: job.jobId,
    description: job.description,
    state: job.state,
    counts,
    createdAtMs: job.createdAtMs,
    finishedAtMs: job.finishedAtMs,
    etaMs: etaMs(s, counts, job.state, runningLeftMs),
    roots: [...job.roots],
    outputs,
    failures: [...causes, ...consequences].slice(0, MAX_LISTED_FAILURES),
    derivations: rows,
  };
}

/** Every known worker with its running builds. */
export function workerViews(s: SchedulerState, now: number): WorkerView[] {
  return s.pool.all().map((w) => {
    const load = s.pool.candidate(w);
    const left = remainingLifetimeMs(w, now);
    // 0 = no lifetime set (unlimited); a worker at its end shows 0 too, which is its state anyway.
    const remaining = Number.isFinite(left) ? Math.floor(left / 1000) : 0;
    return {
      workerId: w.info.workerId,
      state: w.state,
      systems: [...w.info.systems],
      features: [...w.info.features],
      cores: w.info.cores,
      memoryBytes: w.info.memoryBytes,
      maxBuilds: w.info.maxBuilds,
      nixVersion: w.info.nixVersion ?? "",
      nixSource: w.info.nixSource ?? "",
      freeMemoryBytes: w.freeMemoryBytes,
      unreservedMemoryBytes: Math.max(0, w.info.memoryBytes - load.reservedMemoryBytes),
      reservedMemoryBytes: load.reservedMemoryBytes,
      reservedCores: load.reservedCores,
      reservedDiskBytes: load.reservedDiskBytes ?? 0,
      freeDiskBytes: w.freeDiskBytes,
      uptimeSeconds: w.uptimeSeconds,
      remainingLifetimeSeconds: remaining,
      lastSeenMs: w.lastSeenMs,
      deadlineMs: w.deadlineMs,
      running: [...s.pool.leasesOf(w).keys()].map((p) => drvRow(s, s.dag.records.get(p)!, w.info.workerId)),
      buildsDone: w.buildsDone,
      buildsFailed: w.buildsFailed,
      oomKills: w.oomKills,
    };
  });
}
