// What one simulated run measured, and the counters the loop fills in.
import type { JobStatusView } from "../core/job-status.js";

/** How a run ended. */
export type RunEnd = "succeeded" | "failed" | "stalled" | "time-limit";

/** Measurements of one run. Times are simulated ms unless named wall. */
export interface SimResult {
  end: RunEnd;
  /** Submit to job finish (or to where the run stopped). */
  makespanMs: number;
  derivations: number;
  buildsStarted: number;
  buildsSucceeded: number;
  /** Attempts beyond one per derivation built: started - succeeded. */
  extraBuilds: number;
  oomKills: number;
  /** CPU time burnt by attempts killed for memory. */
  oomCpuMs: number;
  /** Attempts lost when their worker was recycled or killed. */
  recycleLostBuilds: number;
  recycleLostCpuMs: number;
  /** Assignments sent to a worker that had just died unnoticed (lost until its deadline). */
  assignsToDeadWorkers: number;
  /** Attempts the scheduler aborted (stale lease or cancel). */
  abortedBuilds: number;
  /** Derivations that failed (build, dependency, or a spent retry budget). */
  failedDerivations: number;
  /** CPU time of every attempt, useful or not. */
  busyCpuMs: number;
  workerIncarnations: number;
  /** Dead workers the scheduler declared lost, and the summed time it took to notice. */
  deathsNoticed: number;
  noticeDelayMs: number;
  schedulerCalls: number;
  /** Wall time spent inside Scheduler calls (performance.now in this shell). */
  schedulerWallMs: number;
  /** When the run did not succeed: why derivations failed or still wait (scheduler's own reasons, deduplicated). */
  stuck: string[];
  /** Things the scheduler did that a real worker would not expect (see simulate.ts). */
  anomalies: string[];
}

/** A result with every counter at zero. */
export function emptyResult(derivations: number): SimResult {
  return {
    end: "stalled",
    makespanMs: 0,
    derivations,
    buildsStarted: 0,
    buildsSucceeded: 0,
    extraBuilds: 0,
    oomKills: 0,
    oomCpuMs: 0,
    recycleLostBuilds: 0,
    recycleLostCpuMs: 0,
    assignsToDeadWorkers: 0,
    abortedBuilds: 0,
    failedDerivations: 0,
    busyCpuMs: 0,
    workerIncarnations: 0,
    deathsNoticed: 0,
    noticeDelayMs: 0,
    schedulerCalls: 0,
    schedulerWallMs: 0,
    stuck: [],
    anomalies: [],
  };
}

/** Scheduler calls per wall second. */
export function decisionsPerSecond(r: SimResult): number {
  return r.schedulerWallMs > 0 ? r.schedulerCalls / (r.schedulerWallMs / 1000) : Infinity;
}

/** Root-cause failures and the hold reasons of ready derivations, "name: reason", at most 8 distinct. */
export function stuckReasons(st: JobStatusView): string[] {
  const out = new Set<string>();
  for (const f of st.failures) if (!f.reason.startsWith("dependency failed")) out.add(`${f.name} failed: ${f.reason}`);
  for (const d of st.derivations) if (d.state === "ready" && d.holdReason !== "") out.add(`${d.name} waits: ${d.holdReason}`);
  return [...out].slice(0, 8);
}
