// Job bookkeeping: job records, the idempotency index, which derivations each
// job wants and live per-state counts, so deciding whether a job finished
// never scans its derivations.
import { DRV_STATES, type DrvRecord } from "./drv-state.js";
import type { EffectSink } from "./effects.js";
import type { DrvPath, DrvState, JobRecord, JobState } from "./types.js";

/** Per-state derivation counts of one job. `done` includes `cached`. */
export interface JobCounts {
  total: number;
  done: number;
  cached: number;
  building: number;
  /** Ready and waiting for a worker. */
  queued: number;
  waiting: number;
  failed: number;
  cancelled: number;
}

/** A job with its in-memory indexes. */
export interface JobEntry {
  record: JobRecord;
  drvs: DrvPath[];
  byState: Record<DrvState, number>;
  cached: number;
  /** Its failed and building derivations: status reads these instead of every derivation. */
  failed: Set<DrvPath>;
  building: Set<DrvPath>;
  /** Still being admitted in slices (see submit.ts): it cannot finish yet. */
  admitting: boolean;
}

function emptyByState(): Record<DrvState, number> {
  return Object.fromEntries(DRV_STATES.map((s) => [s, 0])) as Record<DrvState, number>;
}

// Keeps the per-state sets of an entry in line with one record's state.
function track(entry: JobEntry, rec: DrvRecord, from: DrvState | null): void {
  if (from === "failed") entry.failed.delete(rec.drvPath);
  if (from === "building") entry.building.delete(rec.drvPath);
  if (rec.state === "failed") entry.failed.add(rec.drvPath);
  if (rec.state === "building") entry.building.add(rec.drvPath);
}

const JOB_STATES: readonly JobState[] = ["running", "succeeded", "failed", "cancelled"];

const idempotencyIndexKey = (owner: string, key: string) => `${owner}\u0000${key}`;

/** All jobs, their counts, and when they finish. */
export class JobBook {
  private readonly jobs = new Map<string, JobEntry>();
  private readonly byKey = new Map<string, string>();
  private readonly touched = new Set<string>();
  private readonly jobTally = Object.fromEntries(JOB_STATES.map((st) => [st, 0])) as Record<JobState, number>;

  /** How many jobs are in each state (a copy). O(states). */
  stateCounts(): Record<JobState, number> {
    return { ...this.jobTally };
  }

  /** The entry of a job, if known. */
  get(jobId: string): JobEntry | undefined {
    return this.jobs.get(jobId);
  }

  /** Every job entry, in insertion order. */
  all(): IterableIterator<JobEntry> {
    return this.jobs.values();
  }

  /** The job `owner` submitted with this idempotency key ("" never matches): one owner's key never finds another's job. */
  byIdempotencyKey(owner: string, key: string): JobEntry | undefined {
    if (key === "") return undefined;
    const id = this.byKey.get(idempotencyIndexKey(owner, key));
    return id === undefined ? undefined : this.jobs.get(id);
  }

  /** Registers a job (new or restored). */
  add(record: JobRecord): JobEntry {
    const entry: JobEntry = { record, drvs: [], byState: emptyByState(), cached: 0, failed: new Set(), building: new Set(), admitting: false };
    const old = this.jobs.get(record.jobId);
    if (old !== undefined) this.jobTally[old.record.state]--;
    this.jobTally[record.state]++;
    this.jobs.set(record.jobId, entry);
    if (record.idempotencyKey !== "") this.byKey.set(idempotencyIndexKey(record.owner ?? "", record.idempotencyKey), record.jobId);
    this.touched.add(record.jobId);
    return entry;
  }

  /** The job is fully admitted (see submit.ts): from now on it may finish. */
  admitted(entry: JobEntry): void {
    entry.admitting = false;
    this.touched.add(entry.record.jobId);
  }

  /** Records that `jobId` wants `rec`; counts it in the record's current state. */
  attach(jobId: string, rec: DrvRecord): void {
    const entry = this.jobs.get(jobId);
    if (entry === undefined) return;
    entry.drvs.push(rec.drvPath);
    entry.byState[rec.state]++;
    if (rec.state === "done" && rec.cached) entry.cached++;
    track(entry, rec, null);
    this.touched.add(jobId);
  }

  /** Keeps counts right after a record moved `from` (cached or not) -> its current state (from null: newly attached elsewhere). */
  onDrvChange(rec: DrvRecord, from: DrvState | null, wasCached = false): void {
    if (from === null || from === rec.state) return;
    for (const jobId of rec.jobs) {
      const entry = this.jobs.get(jobId);
      if (entry === undefined) continue;
      entry.byState[from]--;
      entry.byState[rec.state]++;
      if (from === "done" && wasCached) entry.cached--;
      if (rec.state === "done" && rec.cached) entry.cached++;
      track(entry, rec, from);
      this.touched.add(jobId);
    }
  }

  /** True when some running job other than `exceptJobId` wants `rec`. */
  wantedByRunningJob(rec: DrvRecord, exceptJobId: string): boolean {
    return rec.jobs.some((id) => id !== exceptJobId && this.jobs.get(id)?.record.state === "running");
  }

  /** Counts of a job. */
  counts(entry: JobEntry): JobCounts {
    const s = entry.byState;
    return {
      total: entry.drvs.length,
      done: s.done,
      cached: entry.cached,
      building: s.building,
      queued: s.ready,
      waiting: s.waiting,
      failed: s.failed,
      cancelled: s.cancelled,
    };
  }

  /** Ends a job by hand (cancel). */
  finish(entry: JobEntry, state: "succeeded" | "failed" | "cancelled", now: number, sink: EffectSink): void {
    this.jobTally[entry.record.state]--;
    this.jobTally[state]++;
    entry.record.state = state;
    entry.record.finishedAtMs = now;
    sink.jobChanged(entry.record);
    sink.emit({ type: "job.finished", atMs: now, jobId: entry.record.jobId, state });
  }

  /**
   * Finishes every running job touched since the last call whose derivations
   * are all terminal: succeeded when all are done, failed otherwise.
   */
  settle(now: number, sink: EffectSink): void {
    for (const jobId of this.touched) {
      const entry = this.jobs.get(jobId)!;
      if (entry.record.state !== "running" || entry.admitting) continue;
      const s = entry.byState;
      if (s.waiting + s.ready + s.building > 0) continue;
      this.finish(entry, s.failed + s.cancelled === 0 ? "succeeded" : "failed", now, sink);
    }
    this.touched.clear();
  }
}
