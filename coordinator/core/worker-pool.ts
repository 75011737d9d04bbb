// The workers the scheduler knows and which leases each holds. Lease
// bookkeeping lives here so reservations always match the records.
import type { DrvRecord } from "./drv-state.js";
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

  /** Records that `w` holds the lease of `rec` (at its current epoch, cores and memory). */
  attachLease(w: WorkerRecord, rec: DrvRecord): void {
    w.running.set(rec.drvPath, rec.epoch);
    w.reservedCores += rec.cores;
    w.reservedMemoryBytes += rec.reservedMemoryBytes;
    w.reservedDiskBytes += rec.reservedDiskBytes ?? 0;
  }

  /**
   * Frees the slot `rec` holds on its worker. Call BEFORE the verb that ends
   * the lease (it still reads the record's worker and epoch).
   */
  releaseLease(rec: DrvRecord): WorkerRecord | undefined {
    const w = rec.workerId === null ? undefined : this.workers.get(rec.workerId);
    if (w === undefined || w.running.get(rec.drvPath) !== rec.epoch) return undefined;
    w.running.delete(rec.drvPath);
    w.reservedCores = Math.max(0, w.reservedCores - rec.cores);
    w.reservedMemoryBytes = Math.max(0, w.reservedMemoryBytes - rec.reservedMemoryBytes);
    w.reservedDiskBytes = Math.max(0, w.reservedDiskBytes - (rec.reservedDiskBytes ?? 0));
    return w;
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
