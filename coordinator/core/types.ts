// Domain types of the coordinator core, its stores, the simulator and the CLI.
// Nothing here knows about protobuf, NATS or HTTP. The types that cross the
// wire (nodes, leases, reports, assignments, worker info) live in proto/types.ts
// and are re-exported here so the core keeps one import.
export { BUILTIN_SYSTEM } from "../../proto/types.js";
export type { AssignmentSpec, BuildOutcome, BuildReport, BuiltOutput, DrvNode, DrvPath, InputDrv, Lease, StorePath, WorkerInfo } from "../../proto/types.js";
import type { DrvPath } from "../../proto/types.js";

/**
 * A derivation's life. Transitions live in drv-state.ts, nowhere else.
 *  waiting   - some input is not built yet
 *  ready     - every input is in the cache; queued for a worker
 *  building  - leased to a worker
 *  done      - every output verified in the cache (built here or found there)
 *  failed    - its build failed for good, or a dependency failed
 *  cancelled - no job wants it any more
 */
export type DrvState = "waiting" | "ready" | "building" | "done" | "failed" | "cancelled";

/**
 * A worker's life. Transitions live in worker-state.ts.
 *  active       - connected and heartbeating; takes work
 *  disconnected - stream closed; its leases are kept until the heartbeat deadline
 *  draining     - announced it is going away; takes no new work
 *  lost         - missed its deadline; its builds were requeued
 */
export type WorkerState = "active" | "disconnected" | "draining" | "lost";

export type JobState = "running" | "succeeded" | "failed" | "cancelled";

/** The durable part of a job; which derivations it wants is recorded on each DrvRecord (`jobs`). */
export interface JobRecord {
  jobId: string;
  description: string;
  /** What was asked for (drv paths). */
  roots: DrvPath[];
  /** Same key from the same owner => same job; "" means none. */
  idempotencyKey: string;
  /** Name of the token that submitted it; only it and admins see or cancel the job ("" in records from before owners: admins only). */
  owner?: string;
  /** Publish the roots' outputs in the package index under this name when the job succeeds (absent: keep it out). */
  publish?: { name: string; source: string };
  state: JobState;
  createdAtMs: number;
  /** null while running. */
  finishedAtMs: number | null;
}
