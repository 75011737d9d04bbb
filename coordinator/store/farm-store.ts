// Durable storage of the scheduler's state: static nodes, dynamic drv
// records and jobs, plus the event stream. The scheduler core never calls a
// store; the shell applies the core's persist effects with `applyEffects`.
import { drvHashPart, JOB_ID_PATTERN } from "../core/dag-validate.js";
import type { DrvRecord } from "../core/drv-state.js";
import type { Effect, FarmEvent } from "../core/effects.js";
import { InvalidInputError } from "../core/errors.js";
import type { Snapshot } from "../core/snapshot.js";
import type { DrvNode, DrvPath, JobRecord } from "../core/types.js";
import type { LearnedEstimate } from "../core/estimator.js";
import { estimateStoreKey } from "../core/learned-estimator.js";

/** The keyed collections of a store. */
export type StoreKind = "nodes" | "drvs" | "jobs" | "estimates";

/** Every StoreKind. */
export const STORE_KINDS: readonly StoreKind[] = ["nodes", "drvs", "jobs", "estimates"];

/**
 * Durable farm state. Writes of drv records and jobs are compare-and-set
 * against the revision this store last saw for the key (0 = must not exist),
 * so a write from a coordinator that is no longer current fails with
 * StoreConflictError instead of silently overwriting. Call `load` first.
 */
export interface FarmStore {
  /** Everything stored (latest value per key); remembers each key's revision. */
  load(): Promise<Snapshot>;
  /** Stores static nodes (immutable, keyed by drv hash). */
  putNodes(nodes: DrvNode[]): Promise<void>;
  /** Stores drv records; throws StoreConflictError if a key changed behind our back. */
  putDrvs(records: DrvRecord[]): Promise<void>;
  /** Stores one job; throws StoreConflictError if it changed behind our back. */
  putJob(job: JobRecord): Promise<void>;
  /** Stores learned estimates unconditionally (advisory: the last writer wins). */
  putEstimates(estimates: LearnedEstimate[]): Promise<void>;
  /** Appends an event to the event stream. */
  publish(event: FarmEvent): Promise<void>;
  /** The revision this store last read or wrote for a key, if any. */
  revision(kind: StoreKind, key: string): number | undefined;
  /** Releases what the store opened. */
  close(): Promise<void>;
}

/** Store key of a drv path: its 32-char hash part. */
export function drvKey(drvPath: DrvPath): string {
  const key = drvHashPart(drvPath);
  if (key === null) throw new InvalidInputError(`not a .drv store path: ${drvPath}`);
  return key;
}

/** Store key of an estimate: its package key, escaped for NATS. */
export function estimateKey(e: LearnedEstimate): string {
  return estimateStoreKey(e.key);
}

/** Store key of a job: its id (already restricted to a key-safe alphabet). */
export function jobKey(jobId: string): string {
  if (!JOB_ID_PATTERN.test(jobId)) throw new InvalidInputError(`job id ${JSON.stringify(jobId)} is not a valid key`);
  return jobId;
}

/** Bucket/stream name prefixes must stay valid in NATS names and subjects. */
export const PREFIX_PATTERN = /^[A-Za-z0-9_-]*$/;

/** Checks a name prefix; returns it. */
export function checkPrefix(prefix: string): string {
  if (!PREFIX_PATTERN.test(prefix)) throw new InvalidInputError(`store prefix ${JSON.stringify(prefix)} must match ${PREFIX_PATTERN}`);
  return prefix;
}

/** The subject an event is published on, e.g. farm.events.job.submitted. */
export function eventSubject(prefix: string, event: FarmEvent): string {
  return `${prefix}farm.events.${event.type}`;
}

/** Keeps the last value per key (a batch may mention a key twice). */
export function lastPerKey<T>(items: readonly T[], keyOf: (t: T) => string): Map<string, T> {
  const out = new Map<string, T>();
  for (const item of items) out.set(keyOf(item), item);
  return out;
}

/** Runs async tasks one after another, so compare-and-set writes never race each other. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  /** Runs `task` after every task queued before it. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task, task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/**
 * Carries out the persist effects of one scheduler call (or of a batch of
 * them, in order): one write per kind, each record's latest value, then
 * publishes the events in order. Messages to workers are the shell's business
 * and must be sent only after this resolves.
 */
export async function applyEffects(store: FarmStore, effects: readonly Effect[]): Promise<void> {
  const nodes: DrvNode[] = [];
  const drvs: DrvRecord[] = [];
  const jobs = new Map<string, JobRecord>();
  const estimates: LearnedEstimate[] = [];
  const events: FarmEvent[] = [];
  // Loops, not push(...spread): a failure cascade can carry 100k records.
  for (const e of effects) {
    if (e.kind === "persistNodes") for (const n of e.nodes) nodes.push(n);
    else if (e.kind === "persistDrvs") for (const r of e.records) drvs.push(r);
    else if (e.kind === "persistJob") jobs.set(e.job.jobId, e.job);
    else if (e.kind === "persistEstimate") estimates.push(e.estimate);
    else if (e.kind === "event") events.push(e.event);
  }
  // Nodes first (a record without its node can't be restored), jobs after the records they sum up;
  // estimates are advisory and go beside the records.
  if (nodes.length) await store.putNodes(nodes);
  await Promise.all([drvs.length ? store.putDrvs(drvs) : undefined, estimates.length ? store.putEstimates(estimates) : undefined]);
  for (const job of jobs.values()) await store.putJob(job);
  // A few hundred in flight: starting each publish is synchronous work, and a thousand at once held the loop.
  for (let i = 0; i < events.length; i += 250) {
    await Promise.all(events.slice(i, i + 250).map((ev) => store.publish(ev)));
  }
}
