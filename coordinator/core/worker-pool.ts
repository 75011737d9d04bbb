// The workers the scheduler knows. Which builds each runs, and what those
// reserve, is read from the lease index (the records' lease holders).
import type { LeaseHolder } from "./drv-state.js";
import type { LeaseIndex, WorkerLoad } from "./lease-index.js";
import { fleetKey, hasFreeSlot, platformMatches, type WorkerCandidate } from "./placement.js";
import type { DrvPath } from "./types.js";
import { workerChangeCount, type WorkerRecord } from "./worker-state.js";

/** Every known worker, by workerId. */
export class WorkerPool {
  private readonly workers = new Map<string, WorkerRecord>();
  /** Fleet lists by platform, valid while workerChangeCount() is fleetsAt. */
  private readonly fleets = new Map<string, WorkerRecord[]>();
  private fleetsAt = -1;

  constructor(private readonly leases: LeaseIndex) {}

  /** A worker by id. */
  get(workerId: string): WorkerRecord | undefined {
    return this.workers.get(workerId);
  }

  /** Every worker, unordered (cheap). */
  values(): IterableIterator<WorkerRecord> {
    return this.workers.values();
  }

  /** Every worker, sorted by id (stable output for status and tests). */
  all(): WorkerRecord[] {
    return [...this.workers.values()].sort((a, b) => (a.info.workerId < b.info.workerId ? -1 : 1));
  }

  /** Adds (or replaces) a worker record. */
  add(w: WorkerRecord): void {
    this.workers.set(w.info.workerId, w);
    this.fleets.clear();
  }

  /**
   * Every active worker of a platform, free or busy. Placement reads facts of the fleet off it on every try,
   * so it is listed once and kept until a worker is added or any worker's state or info changes (an
   * assignment changes who is busy, not who is active).
   */
  fleet(system: string, features: readonly string[]): readonly WorkerRecord[] {
    if (this.fleetsAt !== workerChangeCount()) {
      this.fleets.clear();
      this.fleetsAt = workerChangeCount();
    }
    const key = fleetKey(system, features);
    let list = this.fleets.get(key);
    if (list === undefined) {
      list = [];
      for (const w of this.workers.values()) if (w.state === "active" && platformMatches(w.info, system, features)) list.push(w);
      this.fleets.set(key, list);
    }
    return list;
  }

  /** The builds `w` runs, drv path -> its grant, in the order they were leased. */
  leasesOf(w: WorkerRecord): ReadonlyMap<DrvPath, LeaseHolder> {
    return this.leases.of(w.info.workerId);
  }

  /** `w` with what its leases reserve, as placement sees it. */
  candidate(w: WorkerRecord): WorkerCandidate & WorkerLoad {
    const l = this.leases.load(w.info.workerId);
    return { worker: w, running: l.running, reservedCores: l.reservedCores, reservedMemoryBytes: l.reservedMemoryBytes, reservedDiskBytes: l.reservedDiskBytes };
  }

  /** True when `w` takes new work: active with a free build slot (a build only uploading holds none). */
  hasFreeSlot(w: WorkerRecord): boolean {
    return hasFreeSlot({ worker: w, running: this.leases.load(w.info.workerId).running });
  }

  /** Active workers with a free slot. */
  free(): WorkerRecord[] {
    const out: WorkerRecord[] = [];
    for (const w of this.workers.values()) if (this.hasFreeSlot(w)) out.push(w);
    return out;
  }

  /** Workers not yet lost whose deadline is before `now`. */
  overdue(now: number): WorkerRecord[] {
    return this.all().filter((w) => w.state !== "lost" && w.deadlineMs < now);
  }

  /** Build slots of all active workers. */
  activeSlots(): number {
    let n = 0;
    for (const w of this.workers.values()) if (w.state === "active") n += w.info.maxBuilds;
    return n;
  }
}
