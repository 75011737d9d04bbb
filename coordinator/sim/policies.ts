// The scheduling policies the benchmark compares, each a recipe for a fresh
// Scheduler (plus the Hydra retry emulation for the hydra-like baseline).
import type { Estimator } from "../core/estimator.js";
import { NoEstimates } from "../core/estimator.js";
import { LearnedEstimator } from "../core/learned-estimator.js";
import { SimpleFit } from "../core/placement.js";
import { FifoPriority, LongestPathPriority } from "../core/priority.js";
import { Scheduler, type SchedulerConfig } from "../core/scheduler.js";
import { BackoffPlacement, HYDRA_RETRIES, HydraRetries, type HydraRetrySettings } from "./hydra-retries.js";

/** Names of the compared policies. */
export type PolicyName = "ours" | "fifo" | "hydra-like";

/** What one simulated run drives. */
export interface PolicyInstance {
  name: PolicyName;
  scheduler: Scheduler;
  /** The estimator the scheduler learns into (keep it to give a later run history). */
  estimator: Estimator;
  /** Hydra's retry budget, for the hydra-like baseline only. */
  hydra: HydraRetries | null;
}

/** One line per policy, for the report. */
export const POLICY_DESCRIPTIONS: Record<PolicyName, string> = {
  ours: "the scheduler's defaults: learned estimator, memory-fit placement (cores, lifetime), upward rank by estimated duration, backup copies of long builds on idle workers",
  fifo: "FIFO priority (submission order), simple-fit placement, no memory model",
  "hydra-like": "maxJobs slots, step-count critical path, no memory model, OOM/lost = retry (5, 60 s x3 backoff)",
};

/**
 * A fresh scheduler for `name`. `history` (ours only) is an estimator that
 * already learned from an earlier run; without it "ours" starts cold.
 */
/** How makePolicy sets a policy up beyond the scheduler config. */
export interface PolicyOptions {
  /** "ours": an estimator that already learned (the history run's). */
  history?: Estimator;
  /** "ours": cores a typical worker of the fleet gives one build (priority weighs durations there). */
  referenceCores?: number;
  /** hydra-like: its retry budget and backoff. */
  retries?: HydraRetrySettings;
  /** hydra-like: seeds its random choice among idle machines. */
  seed?: number;
}

/** The simulated fleet's heartbeat timeout, unless the config sets one (the README's simulator tables were measured with it). */
export const SIM_HEARTBEAT_TIMEOUT_MS = 30_000;

export function makePolicy(name: PolicyName, given: Partial<SchedulerConfig>, opts: PolicyOptions = {}): PolicyInstance {
  const { history, referenceCores, retries = HYDRA_RETRIES, seed = 0 } = opts;
  const config = { heartbeatTimeoutMs: SIM_HEARTBEAT_TIMEOUT_MS, ...given };
  switch (name) {
    case "ours": {
      // The scheduler's own defaults (placement, priority), with a learned estimator we keep hold of.
      const estimator = history ?? new LearnedEstimator({ referenceCores });
      return { name, scheduler: new Scheduler(config, { estimator }), estimator, hydra: null };
    }
    case "fifo": {
      const estimator = new NoEstimates();
      return { name, scheduler: new Scheduler({ ...config, backupCopyMinRemainingMs: 0 }, new SimpleFit(), new FifoPriority(), estimator), estimator, hydra: null };
    }
    case "hydra-like": {
      const hydra = new HydraRetries(retries);
      const estimator = new NoEstimates();
      // Hydra's budget, not the core's halving, decides how often an OOM is retried.
      const scheduler = new Scheduler(
        { ...config, maxOomRetries: 1_000_000, backupCopyMinRemainingMs: 0 },
        new BackoffPlacement(new SimpleFit(), hydra, seed),
        new LongestPathPriority(),
        estimator,
      );
      return { name, scheduler, estimator, hydra };
    }
  }
}
