// The workers the scheduler knows and which leases each holds. Lease
// bookkeeping lives here so reservations always match the records.
import { leaseHolders, primaryHolder, type DrvRecord, type LeaseHolder } from "./drv-state.js";
import { hasFreeSlot } from "./placement.js";
import type { WorkerRecord } from "./worker-state.js";

/** Every known worker, by workerId. */
export class WorkerPool {
  private readonly workers = new Map<string, WorkerRecord>();

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
  }

  /** Records that `w` holds the lease of `rec` at its current epoch, with the grant of `holder` (default: the primary's). */
  attachLease(w: WorkerRecord, rec: DrvRecord, holder: LeaseHolder | null = primaryHolder(rec)): void {
    if (holder === null) throw new Error(`${rec.drvPath} has no lease to attach`);
    w.running.set(rec.drvPath, rec.epoch);
    w.reservedCores += holder.cores;
    w.reservedMemoryBytes += holder.reservedMemoryBytes;
    w.reservedDiskBytes += holder.reservedDiskBytes;
  }

  /** Frees the slot one holder of `rec`'s lease takes on its worker. Call BEFORE the verb that drops it. */
  releaseHolder(rec: DrvRecord, holder: LeaseHolder): WorkerRecord | undefined {
    const w = this.workers.get(holder.workerId);
    if (w === undefined || w.running.get(rec.drvPath) !== rec.epoch) return undefined;
    w.running.delete(rec.drvPath);
    w.reservedCores = Math.max(0, w.reservedCores - holder.cores);
    w.reservedMemoryBytes = Math.max(0, w.reservedMemoryBytes - holder.reservedMemoryBytes);
    w.reservedDiskBytes = Math.max(0, w.reservedDiskBytes - holder.reservedDiskBytes);
    return w;
  }

  /**
   * Frees the slots of every holder of `rec`'s lease. Call BEFORE the verb
   * that ends the lease (it still reads the record's workers and epoch).
   */
  releaseLease(rec: DrvRecord): void {
    for (const h of leaseHolders(rec)) this.releaseHolder(rec, h);
  }

  /** Active workers with a free slot. */
  free(): WorkerRecord[] {
    const out: WorkerRecord[] = [];
    for (const w of this.workers.values()) if (hasFreeSlot(w)) out.push(w);
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
