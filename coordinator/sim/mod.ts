// The scheduling simulator's public surface.
export { ALL_VARIANTS, runBenchCase, VARIANT_LABELS, type BenchCase, type BenchOutcome, type BenchRow, type Variant } from "./bench.js";
export { loadSimDag, sinks, type SimDag } from "./dag-input.js";
export { EventQueue } from "./event-queue.js";
export { defaultFleet, describeFleet, fleetCores, parseFleet, type FleetSpec, type WorkerGroup } from "./fleet.js";
export { BackoffPlacement, HydraRetries, HYDRA_RETRIES, type HydraRetrySettings } from "./hydra-retries.js";
export { lowerBound, type LowerBound } from "./lower-bound.js";
export { makePolicy, POLICY_DESCRIPTIONS, type PolicyInstance, type PolicyName } from "./policies.js";
export { caseTable, fmtDuration, targetLines } from "./report.js";
export { decisionsPerSecond, type RunEnd, type SimResult } from "./sim-result.js";
export { simulate, type SimulateOptions, type SimTraceEvent } from "./simulate.js";
export { durationOn, paramsFromJson, peakOn, WorkloadModel, type AttemptCost, type BuildProfile } from "./workload.js";
export { DEFAULT_WORKLOAD_PARAMS, type WorkloadParams } from "./workload-params.js";
