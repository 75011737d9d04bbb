// The coordinator's Prometheus metrics. One registry per Coordinator instance,
// so tests and simulations stay independent. Counters go up at transitions
// (the shell calls `record*`); gauges are computed when Prometheus scrapes.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { DRV_STATES } from "./core/drv-state.js";
import { WORKER_STATES } from "./core/worker-state.js";
import { LOOP_DELAY_BUCKETS, RecentMax, sampleLoopDelay } from "./loop-delay.js";

/** Numbers the gauges read at scrape time. */
export interface GaugeSource {
  derivationsByState(): Record<string, number>;
  workersByState(): Record<string, number>;
  jobsByState(): Record<string, number>;
  /** Bytes reserved on each worker for running builds. */
  reservedMemoryByWorker(): Record<string, number>;
}

/** Creates the registry and its metrics; `eventLoopDelay` samples the event loop (the live coordinator, not tests). */
export function createCoordinatorMetrics(source: () => GaugeSource | undefined, opts: { defaultMetrics?: boolean; eventLoopDelay?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: "tmpnix_coordinator_" });
  // Everything the coordinator does runs on one loop: a long synchronous stretch
  // (a huge submit, a status of 50k rows) holds up heartbeats and dispatch alike.
  if (opts.eventLoopDelay) {
    const delay = new Histogram({
      name: "tmpnix_event_loop_delay_seconds",
      help: "How late the coordinator's 10 ms loop-delay timer ran, per tick (quantiles over any range: histogram_quantile)",
      buckets: LOOP_DELAY_BUCKETS,
      registers: [registry],
    });
    const longest = new RecentMax();
    new Gauge({
      name: "tmpnix_event_loop_longest_pause_seconds",
      help: "The coordinator's longest event-loop pause in about the last minute",
      registers: [registry],
      collect() {
        this.set(longest.max(Date.now()));
      },
    });
    sampleLoopDelay((late) => {
      delay.observe(late);
      longest.record(Date.now(), late);
    });
  }
  // Known label values are always exported (as 0 when empty) so alerts need no `or vector(0)`.
  const gaugeFrom = (name: string, help: string, label: string, read: (s: GaugeSource) => Record<string, number>, known: readonly string[] = []) =>
    new Gauge({
      name,
      help,
      labelNames: [label],
      registers: [registry],
      collect() {
        this.reset();
        for (const key of known) this.set({ [label]: key }, 0);
        const s = source();
        if (!s) return;
        for (const [key, value] of Object.entries(read(s))) this.set({ [label]: key }, value);
      },
    });
  gaugeFrom("tmpnix_derivations", "Derivations known to the coordinator, by state", "state", (s) => s.derivationsByState(), DRV_STATES);
  gaugeFrom("tmpnix_workers", "Workers, by state", "state", (s) => s.workersByState(), WORKER_STATES);
  gaugeFrom("tmpnix_jobs", "Jobs, by state", "state", (s) => s.jobsByState(), ["running", "succeeded", "failed", "cancelled"]);
  gaugeFrom("tmpnix_reserved_memory_bytes", "Memory reserved for running builds, per worker", "worker", (s) => s.reservedMemoryByWorker());

  return {
    registry,
    builds: new Counter({ name: "tmpnix_builds_total", help: "Build attempts reported by workers, by worker and outcome", labelNames: ["worker", "outcome"], registers: [registry] }),
    buildSeconds: new Histogram({
      name: "tmpnix_build_duration_seconds",
      help: "Wall time of successful builds",
      buckets: [1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600],
      registers: [registry],
    }),
    buildPeakMemory: new Histogram({
      name: "tmpnix_build_peak_memory_bytes",
      help: "Peak memory of builds' process trees",
      buckets: [64, 128, 256, 512, 1024, 2048, 4096, 8192].map((m) => m * 1024 ** 2),
      registers: [registry],
    }),
    oomKills: new Counter({ name: "tmpnix_oom_kills_total", help: "Builds killed for lack of memory", labelNames: ["worker"], registers: [registry] }),
    reassignments: new Counter({ name: "tmpnix_reassignments_total", help: "Builds handed to another worker, by reason", labelNames: ["reason"], registers: [registry] }),
    backupCopies: new Counter({ name: "tmpnix_backup_copies_total", help: "Backup copies of long builds: started on idle workers, or stopped to free a worker for other work", labelNames: ["event"], registers: [registry] }),
    trust: new Counter({ name: "tmpnix_trust_total", help: "Untrusted workers' builds: awaiting confirmation by another worker (unconfirmed), or disagreeing with another build (mismatch: never signed)", labelNames: ["event"], registers: [registry] }),
    staleResults: new Counter({ name: "tmpnix_stale_results_total", help: "Results rejected because their lease was no longer current", registers: [registry] }),
    cachedAtSubmit: new Counter({ name: "tmpnix_cached_derivations_total", help: "Derivations found in the cache at submit (never rebuilt)", registers: [registry] }),
    jobsFinished: new Counter({ name: "tmpnix_jobs_finished_total", help: "Jobs that ended, by final state", labelNames: ["state"], registers: [registry] }),
    submits: new Counter({ name: "tmpnix_submits_total", help: "Submit calls, by result", labelNames: ["result"], registers: [registry] }),
  };
}

export type CoordinatorMetrics = ReturnType<typeof createCoordinatorMetrics>;
