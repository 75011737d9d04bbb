// Builds the live coordinator's Scheduler from its config and what NATS holds:
// the learned estimates and the operator's heavy-package table go into the
// estimator, and a non-empty snapshot is restored rather than started afresh.
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import type { CoordinatorConfig } from "./config.js";
import { Scheduler } from "./core/scheduler.js";
import { LearnedEstimator } from "./core/learned-estimator.js";
import { loadHeavyTable } from "./core/heavy-packages.js";
import type { Snapshot } from "./core/snapshot.js";
import type { LifetimePolicy } from "./core/memory-fit.js";

/** The scheduler, restored from `snapshot` when it holds any job or derivation. */
export function createScheduler(config: CoordinatorConfig, snapshot: Snapshot, now: number, logger: Logger): Scheduler {
  const heavy = config.heavyPackagesFile ? loadHeavyTable(readFileSync(config.heavyPackagesFile, "utf8")) : undefined;
  const estimator = new LearnedEstimator({ heavy, referenceCores: config.referenceCores });
  const estimates = snapshot.estimates ?? [];
  const imported = estimator.importEstimates(estimates);
  if (imported.rejected.length) logger.warn({ rejected: imported.rejected }, "some stored estimates were unreadable and were skipped");
  const schedulerConfig = {
    heartbeatTimeoutMs: config.heartbeatTimeout,
    buildTimeoutMs: config.buildTimeout,
    restoreGraceMs: Math.max(config.heartbeatTimeout * 2, 30_000),
    lifetimePolicy: config.lifetimePolicy as LifetimePolicy,
    memorySafetyMarginFraction: config.memorySafetyMarginPercent / 100,
    memorySafetyMarginMinBytes: config.memorySafetyMarginMin,
    memorySafetyMarginMaxBytes: config.memorySafetyMarginMax,
    memoryHeadroomFraction: config.memoryHeadroomPercent / 100,
    backupCopyMinRemainingMs: config.backupCopyMinRemaining,
    maxBackupCopiesPerBuild: config.maxBackupCopiesPerBuild,
  };
  const restored = snapshot.jobs.length > 0 || snapshot.drvs.length > 0;
  logger.info({ jobs: snapshot.jobs.length, derivations: snapshot.drvs.length, estimates: imported.imported, restored }, "state loaded from NATS");
  // Estimates are always passed on restore (even []) so it doesn't relearn on top of the imported ones.
  return restored ? Scheduler.restore(now, { ...snapshot, estimates }, schedulerConfig, { estimator }) : new Scheduler(schedulerConfig, { estimator });
}
