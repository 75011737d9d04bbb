// Which worker runs which build: an index over the derivation records, the
// one home of lease state. The DagIndex brings it up to date after every verb
// (and on restore), so a worker's running builds and its reservations are
// always read from the records' lease holders, never kept beside them.
import { leaseHolders, type DrvRecord, type LeaseHolder } from "./drv-state.js";
import type { DrvPath } from "./types.js";

/** What a worker's leases reserve on it. */
export interface WorkerLoad {
  /** Builds it runs (primaries and backup copies), not counting those only uploading their outputs. */
  running: number;
  reservedCores: number;
  reservedMemoryBytes: number;
  /** Estimated disk of the builds it runs. */
  reservedDiskBytes: number;
}

const NONE: ReadonlyMap<DrvPath, LeaseHolder> = new Map();

/** Lease holders by worker, in the order the leases were granted. */
export class LeaseIndex {
  private readonly byWorker = new Map<string, Map<DrvPath, LeaseHolder>>();
  private readonly byDrv = new Map<DrvPath, string[]>();
  /** Loads computed since their worker's leases last changed. */
  private readonly loads = new Map<string, Readonly<WorkerLoad>>();
  /** Leases held by more than one worker (a primary and backup copies). */
  private leasesWithCopies = 0;

  /** Brings the index in line with `rec`'s lease holders (none unless it is building). */
  sync(rec: DrvRecord): void {
    const holders = leaseHolders(rec);
    const before = this.byDrv.get(rec.drvPath);
    if (before === undefined && holders.length === 0) return;
    const after = holders.map((h) => h.workerId);
    for (const workerId of before ?? []) this.loads.delete(workerId);
    for (const workerId of after) this.loads.delete(workerId);
    for (const workerId of before ?? []) {
      if (after.includes(workerId)) continue;
      const held = this.byWorker.get(workerId)!;
      held.delete(rec.drvPath);
      if (held.size === 0) this.byWorker.delete(workerId);
    }
    for (const h of holders) {
      let held = this.byWorker.get(h.workerId);
      if (held === undefined) this.byWorker.set(h.workerId, (held = new Map()));
      held.set(rec.drvPath, h); // an existing entry keeps its place (a backup copy that becomes the primary)
    }
    if (after.length === 0) this.byDrv.delete(rec.drvPath);
    else this.byDrv.set(rec.drvPath, after);
    this.leasesWithCopies += Number(after.length > 1) - Number((before?.length ?? 0) > 1);
  }

  /** Whether any worker runs a backup copy: without one, dispatch need not look for copies to preempt. */
  hasBackupCopies(): boolean {
    return this.leasesWithCopies > 0;
  }

  /** The builds `workerId` runs, drv path -> its grant. */
  of(workerId: string): ReadonlyMap<DrvPath, LeaseHolder> {
    return this.byWorker.get(workerId) ?? NONE;
  }

  /** How many builds `workerId` runs and what they reserve (summed from its holders, then kept until they change). */
  load(workerId: string): Readonly<WorkerLoad> {
    let load = this.loads.get(workerId);
    if (load === undefined) {
      const sum: WorkerLoad = { running: 0, reservedCores: 0, reservedMemoryBytes: 0, reservedDiskBytes: 0 };
      for (const h of this.of(workerId).values()) addHolder(sum, h, 1);
      this.loads.set(workerId, (load = sum));
    }
    return load;
  }
}

/** Adds (sign 1) or takes away (sign -1) one holder's grant from `load`. */
export function addHolder(load: WorkerLoad, h: LeaseHolder, sign: 1 | -1): void {
  load.reservedDiskBytes += sign * h.reservedDiskBytes;
  if (h.uploading) return; // its builder is done: no slot, cores or memory
  load.running += sign;
  load.reservedCores += sign * h.cores;
  load.reservedMemoryBytes += sign * h.reservedMemoryBytes;
}
