// What durable storage holds and a restarted coordinator rebuilds from.
import type { DrvRecord } from "./drv-state.js";
import type { LearnedEstimate } from "./estimator.js";
import type { DrvNode, JobRecord } from "./types.js";
import type { WorkerSnapshot } from "./worker-state.js";

/**
 * Stored state: static nodes, dynamic drv records, jobs (workers optional:
 * they reconnect; estimates optional: without them a restore relearns from
 * the finished records it has).
 */
export interface Snapshot {
  nodes: DrvNode[];
  drvs: DrvRecord[];
  jobs: JobRecord[];
  workers?: WorkerSnapshot[];
  /** Learned estimates, as persistEstimate effects stored them. */
  estimates?: LearnedEstimate[];
}
