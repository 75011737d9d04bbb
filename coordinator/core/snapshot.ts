// What durable storage holds and a restarted coordinator rebuilds from.
import type { DrvRecord } from "./drv-state.js";
import type { LearnedEstimate } from "./estimator.js";
import type { DrvNode, JobRecord } from "./types.js";

/**
 * Stored state: static nodes, dynamic drv records, jobs, and optionally
 * estimates (without them a restore relearns from the finished records it
 * has). Workers are not stored: they reconnect, and the leases on the records
 * say which builds they ran. (A `workers` list in an older snapshot is ignored.)
 */
export interface Snapshot {
  nodes: DrvNode[];
  drvs: DrvRecord[];
  jobs: JobRecord[];
  /** Learned estimates, as persistEstimate effects stored them. */
  estimates?: LearnedEstimate[];
}
