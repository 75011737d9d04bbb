// One benchmark case: a DAG on a fleet under each compared policy, all with
// the same seed (same recycling schedule, same build costs). "ours, with
// history" gets the estimator of an earlier cold run of the same DAG at
// another seed, as a farm that built this package set before would have.
import type { SchedulerConfig } from "../core/scheduler.js";
import type { SimDag } from "./dag-input.js";
import { typicalCores, type FleetSpec } from "./fleet.js";
import { lowerBound, type LowerBound } from "./lower-bound.js";
import { HYDRA_RETRIES, PATIENT_RETRIES } from "./hydra-retries.js";
import { makePolicy, type PolicyName } from "./policies.js";
import { simulate, type SimTraceEvent } from "./simulate.js";
import type { SimResult } from "./sim-result.js";
import type { WorkloadModel } from "./workload.js";

/** Policy variants a benchmark reports. */
export type Variant = "hydra-like" | "hydra-patient" | "fifo" | "ours-cold" | "ours-history";

/** Every variant, baselines first. */
export const ALL_VARIANTS: readonly Variant[] = ["hydra-like", "hydra-patient", "fifo", "ours-cold", "ours-history"];

/** How the report names each variant. */
export const VARIANT_LABELS: Record<Variant, string> = {
  "hydra-like": "hydra-like",
  "hydra-patient": "hydra-like, retries unlimited",
  fifo: "fifo",
  "ours-cold": "ours, cold",
  "ours-history": "ours, with history",
};

/** What one case needs. */
export interface BenchCase {
  dag: SimDag;
  fleet: FleetSpec;
  workload: WorkloadModel;
  seed: number;
  variants?: readonly Variant[];
  schedulerConfig?: Partial<SchedulerConfig>;
  /** Sees every attempt of every reported variant's run (not the history run). */
  onTrace?: (variant: Variant, e: SimTraceEvent) => void;
}

/** One variant's run. */
export interface BenchRow {
  variant: Variant;
  result: SimResult;
  /** Wall time of the whole run (simulator included). */
  wallMs: number;
}

/** A case's runs and its lower bound. */
export interface BenchOutcome {
  dag: SimDag;
  fleet: FleetSpec;
  seed: number;
  bound: LowerBound;
  rows: BenchRow[];
  /** The history run behind "ours, with history" (not a reported variant). */
  historyRun: SimResult | null;
}

const POLICY_OF: Record<Variant, PolicyName> = {
  "hydra-like": "hydra-like",
  "hydra-patient": "hydra-like",
  fifo: "fifo",
  "ours-cold": "ours",
  "ours-history": "ours",
};

/** Runs every variant of `c` and computes the lower bound. */
export function runBenchCase(c: BenchCase): BenchOutcome {
  const variants = c.variants ?? ALL_VARIANTS;
  const config = { ...c.schedulerConfig };
  const base = { nodes: c.dag.nodes, roots: c.dag.roots, fleet: c.fleet, workload: c.workload };
  const rows: BenchRow[] = [];
  const referenceCores = typicalCores(c.fleet);
  let historyRun: SimResult | null = null;
  for (const variant of variants) {
    let history;
    if (variant === "ours-history") {
      const earlier = makePolicy("ours", config, { referenceCores });
      historyRun = simulate({ ...base, policy: earlier, seed: c.seed + 1 });
      history = earlier.estimator;
    }
    const retries = variant === "hydra-patient" ? PATIENT_RETRIES : HYDRA_RETRIES;
    const policy = makePolicy(POLICY_OF[variant], config, { history, referenceCores, retries, seed: c.seed });
    const t0 = performance.now();
    const onTrace = c.onTrace === undefined ? undefined : (e: SimTraceEvent) => c.onTrace!(variant, e);
    const result = simulate({ ...base, policy, seed: c.seed, onTrace });
    rows.push({ variant, result, wallMs: performance.now() - t0 });
  }
  return { dag: c.dag, fleet: c.fleet, seed: c.seed, bound: lowerBound(c.dag.nodes, c.fleet, c.workload), rows, historyRun };
}
