// An in-process FarmStore for tests and the simulator. It mirrors the NATS
// store's semantics (per-key revisions from one global sequence, compare-and-
// set writes, JSON round trips) so the same conformance suite passes on both.
import type { DrvRecord } from "../core/drv-state.js";
import type { FarmEvent } from "../core/effects.js";
import { StoreConflictError } from "../core/errors.js";
import type { Snapshot } from "../core/snapshot.js";
import type { DrvNode, JobRecord } from "../core/types.js";
import { drvKey, estimateKey, jobKey, lastPerKey, SerialQueue, type FarmStore, type StoreKind } from "./farm-store.js";
import type { LearnedEstimate } from "../core/estimator.js";

interface Entry {
  json: string;
  revision: number;
}

/** The shared "server" several MemoryStores (coordinators) can open. */
export class MemoryBackend {
  sequence = 0;
  readonly buckets: Record<StoreKind, Map<string, Entry>> = { nodes: new Map(), drvs: new Map(), jobs: new Map(), estimates: new Map() };
  readonly events: FarmEvent[] = [];
}

/** A FarmStore over a MemoryBackend. */
export class MemoryStore implements FarmStore {
  private readonly seen: Record<StoreKind, Map<string, number>> = { nodes: new Map(), drvs: new Map(), jobs: new Map(), estimates: new Map() };
  private readonly queue = new SerialQueue();
  private closed = false;

  constructor(readonly backend: MemoryBackend = new MemoryBackend()) {}

  /** Latest value of every key (fresh copies). */
  async load(): Promise<Snapshot> {
    this.check();
    const read = <T>(kind: StoreKind): T[] => {
      const out: T[] = [];
      for (const [key, e] of this.backend.buckets[kind]) {
        this.seen[kind].set(key, e.revision);
        out.push(JSON.parse(e.json) as T);
      }
      return out;
    };
    return { nodes: read<DrvNode>("nodes"), drvs: read<DrvRecord>("drvs"), jobs: read<JobRecord>("jobs"), estimates: read<LearnedEstimate>("estimates") };
  }

  /** Stores nodes unconditionally (content-addressed, immutable). */
  async putNodes(nodes: DrvNode[]): Promise<void> {
    return this.queue.run(async () => {
      this.check();
      for (const [key, n] of lastPerKey(nodes, (x) => drvKey(x.drvPath))) this.write("nodes", key, n);
    });
  }

  /** Compare-and-set writes of drv records (checked as a whole before any is written). */
  async putDrvs(records: DrvRecord[]): Promise<void> {
    return this.queue.run(async () => {
      this.check();
      const batch = lastPerKey(records, (r) => drvKey(r.drvPath));
      for (const key of batch.keys()) this.expectCurrent("drvs", key);
      for (const [key, r] of batch) this.write("drvs", key, r);
    });
  }

  /** Compare-and-set write of one job. */
  async putJob(job: JobRecord): Promise<void> {
    return this.queue.run(async () => {
      this.check();
      const key = jobKey(job.jobId);
      this.expectCurrent("jobs", key);
      this.write("jobs", key, job);
    });
  }

  /** Stores estimates unconditionally. */
  async putEstimates(estimates: LearnedEstimate[]): Promise<void> {
    return this.queue.run(async () => {
      this.check();
      for (const [key, e] of lastPerKey(estimates, estimateKey)) this.write("estimates", key, e);
    });
  }

  /** Appends to the backend's event list. */
  async publish(event: FarmEvent): Promise<void> {
    this.check();
    this.backend.events.push(JSON.parse(JSON.stringify(event)) as FarmEvent);
  }

  /** Every event published so far (copies). */
  async readEvents(): Promise<FarmEvent[]> {
    return JSON.parse(JSON.stringify(this.backend.events)) as FarmEvent[];
  }

  /** The revision this store last saw for a key. */
  revision(kind: StoreKind, key: string): number | undefined {
    return this.seen[kind].get(key);
  }

  /** Further calls fail. */
  async close(): Promise<void> {
    this.closed = true;
  }

  private check(): void {
    if (this.closed) throw new Error("store is closed");
  }

  private expectCurrent(kind: StoreKind, key: string): void {
    const expected = this.seen[kind].get(key) ?? 0;
    const actual = this.backend.buckets[kind].get(key)?.revision ?? 0;
    if (actual !== expected) throw new StoreConflictError(`farm-${kind}`, key, expected);
  }

  private write(kind: StoreKind, key: string, value: unknown): void {
    const revision = ++this.backend.sequence;
    this.backend.buckets[kind].set(key, { json: JSON.stringify(value), revision });
    this.seen[kind].set(key, revision);
  }
}
