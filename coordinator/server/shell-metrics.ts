// The shell's metrics: counters that go up at the core's events (with a log
// line for the notable ones), and the numbers the gauges read at scrape time.
import type { Logger } from "pino";
import type { FarmEvent } from "../core/effects.js";
import type { Scheduler } from "../core/scheduler.js";
import type { CoordinatorMetrics } from "../metrics.js";
import type { GaugeSource } from "../metrics.js";

/** Counts (and logs) one core event. */
export function countEvent(ev: FarmEvent, metrics: CoordinatorMetrics | undefined, logger: Logger): void {
  const m = metrics;
  if (ev.type === "worker.lost") {
    logger.warn({ worker: ev.workerId, requeued: ev.requeued.length }, "worker lost; its builds were requeued");
    m?.reassignments.inc({ reason: "worker-lost" }, ev.requeued.length);
  } else if (ev.type === "assignment.declined") {
    // Counted with the other reassignments when the report arrives (reason "declined").
    logger.warn({ worker: ev.workerId, drv: ev.lease.drvPath, epoch: ev.lease.epoch, reason: ev.reason }, "worker declined an assignment; requeued, no work for it until its next heartbeat");
  } else if (ev.type === "drv.backup-copy-started") {
    logger.info({ drv: ev.drvPath, epoch: ev.epoch, worker: ev.workerId }, "backup copy of a long build started");
    m?.backupCopies.inc({ event: "started" });
  } else if (ev.type === "drv.backup-copy-preempted") {
    logger.info({ drv: ev.drvPath, epoch: ev.epoch, worker: ev.workerId, for: ev.forDrvPath }, "backup copy stopped to free its worker");
    m?.backupCopies.inc({ event: "preempted" });
  } else if (ev.type === "drv.unconfirmed") {
    logger.info({ drv: ev.drvPath, worker: ev.workerId }, "untrusted build awaits confirmation by another worker");
    m?.trust.inc({ event: "unconfirmed" });
  } else if (ev.type === "drv.trust-mismatch") {
    logger.warn({ drv: ev.drvPath, worker: ev.workerId }, "builds disagree: nothing signed, rebuilding on a trusted worker");
    m?.trust.inc({ event: "mismatch" });
  } else if (ev.type === "worker.draining") {
    m?.reassignments.inc({ reason: "drain" }, ev.handedBack);
  } else if (ev.type === "job.finished") {
    logger.info({ job: ev.jobId, state: ev.state }, "job finished");
    m?.jobsFinished.inc({ state: ev.state });
  } else if (ev.type === "drv.state" && ev.to === "failed") {
    logger.info({ drv: ev.drvPath, reason: ev.reason }, "derivation failed");
  }
}

/** The gauges' numbers now: derivations, workers and jobs by state, memory reserved per worker. O(workers + states). */
export function gaugeSource(scheduler: Scheduler): GaugeSource {
  const drvs = scheduler.stateCounts();
  const jobs = scheduler.jobStateCounts();
  const { byState: workers, reservedMemoryBytes: reserved } = scheduler.workerLoads();
  return { derivationsByState: () => drvs, workersByState: () => workers, jobsByState: () => jobs, reservedMemoryByWorker: () => reserved };
}
