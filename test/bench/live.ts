// `npm run bench:live`: the coordinator at nixpkgs scale, live. For each N it
// starts its own nats-server and a real coordinator, connects N gRPC worker
// sessions with the fake executor (1 ms builds, real uploads to the cache),
// submits the nixpkgs-20.09 graph (../shared/dags, else a synthetic graph of
// the same size and shape) and prints wall time, derivations/s, assignment to
// acceptance latency, event-loop delay, coordinator CPU and peak RSS, and
// workers lost, and, with BENCH_STEPS=1, where a result's time went (its steps,
// from the coordinator's debug log: staged, queued, published, persisted). Then a 100k-node submit to a farm of 50 workers, for its
// longest event-loop pause. Targets are printed beside the figures, never asserted.
// Each row ends with what creating a small file cost just before that run (create-probe.ts): on a
// journal-less ext4 it is several times higher for minutes after many files were deleted, as they are at
// the end of a bench, so runs back to back are compared only where that column agrees.
//   BENCH_N=50,100,200        worker counts
//   BENCH_NODES=5000          a synthetic graph of this size instead of the real one
//   BENCH_BIG_SUBMIT=100000   nodes of the submit probe (0 = skip)
//   BENCH_BASELINE_N=200      worker counts that also run the baseline: NARs stored through a spawned zstd
//                             per upload (FARM_NAR_COMPRESSION=zstd), the upload path before in-process gzip
//                             ('' = none; a baseline run of the full graph takes about 15 minutes)
//   BENCH_UPLOADED_N=         worker counts that also run with every output uploaded over HTTP, none sent
//                             inline in its build report (the output path before inline outputs)
//   BENCH_CPU_POLICY_N=       worker counts that also run the coordinator as started (FARM_CPU_POLICY=inherit)
//                             beside its default SCHED_BATCH, in the order batch, inherit, inherit, batch:
//                             the machine's speed drifts over a series of runs
//   BENCH_STEPS=1             log where each result's time went (the coordinator at log level debug, which costs it CPU)
//   BENCH_TIMEOUT_S=1800      give up on one run after this long
//   BENCH_COORDINATOR_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR"   node options for the coordinator alone
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadJsonlDag } from "../../coordinator/cli/dag/jsonl.js";
import { syntheticDag } from "../../coordinator/cli/dag/synthetic.js";
import { Scheduler } from "../../coordinator/core/scheduler.js";
import type { DrvNode } from "../../coordinator/core/types.js";
import { probeCreateMicros } from "./create-probe.js";
import { runLive, STEPS_LOGGED, type RunResult } from "./live-run.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const REAL_DAG = path.resolve(REPO, "../shared/dags/nixpkgs-20.09.nodes.jsonl.xz");
const REAL_SIZE = 53_797;

const workerCounts = (process.env.BENCH_N ?? "50,100,200").split(",").map(Number).filter((n) => n > 0);
const nodesWanted = process.env.BENCH_NODES ? Number(process.env.BENCH_NODES) : undefined;
const bigSubmit = Number(process.env.BENCH_BIG_SUBMIT ?? 100_000);
const timeoutMs = Number(process.env.BENCH_TIMEOUT_S ?? 1800) * 1000;
const baselineCounts = new Set((process.env.BENCH_BASELINE_N ?? "200").split(",").map(Number).filter((n) => n > 0));
const uploadedCounts = new Set((process.env.BENCH_UPLOADED_N ?? "").split(",").map(Number).filter((n) => n > 0));
const cpuPolicyCounts = new Set((process.env.BENCH_CPU_POLICY_N ?? "").split(",").map(Number).filter((n) => n > 0));
const BASELINE = { label: "baseline: spawned zstd", env: { FARM_NAR_COMPRESSION: "zstd" } };
const UPLOADED = { label: "in-process gzip, outputs uploaded", env: {}, workerEnv: { BENCH_FAKE_UPLOAD: "1" } };
const OURS = { label: "in-process gzip, small outputs inline", env: {} };
const INHERIT = { label: "the same, coordinator not under SCHED_BATCH", env: { FARM_CPU_POLICY: "inherit" } };
type Variant = { label: string; env: Record<string, string>; workerEnv?: Record<string, string> };

function rootsOf(nodes: DrvNode[]): string[] {
  const used = new Set<string>();
  for (const n of nodes) for (const i of n.inputDrvs) used.add(i.drvPath);
  return nodes.filter((n) => !used.has(n.drvPath)).map((n) => n.drvPath);
}

async function loadGraph(): Promise<{ nodes: DrvNode[]; what: string }> {
  if (nodesWanted === undefined && existsSync(REAL_DAG)) return { nodes: await loadJsonlDag(REAL_DAG), what: `nixpkgs-20.09 (${path.relative(REPO, REAL_DAG)})` };
  const n = nodesWanted ?? REAL_SIZE;
  return { nodes: syntheticDag({ nodes: n, seed: 1, storeDir: "/nix/store" }), what: `synthetic, ${n} nodes (seed 1)` };
}

/** Heap the scheduler core holds per node after a submit (needs --expose-gc; NaN without). */
function coreBytesPerNode(nodes: DrvNode[]): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return NaN;
  // The loaded nodes stay alive outside: the core gets copies (as decoded from a submit), counted with it.
  gc();
  const before = process.memoryUsage().heapUsed;
  const copies = nodes.map((n) => structuredClone(n));
  const s = new Scheduler();
  s.submitJob(1, { jobId: "mem", description: "", roots: rootsOf(copies), nodes: copies, idempotencyKey: "", cachedDrvPaths: new Set() });
  copies.length = 0;
  gc();
  const bytes = (process.memoryUsage().heapUsed - before) / nodes.length;
  return s.readyCount() >= 0 ? bytes : NaN; // keeps `s` alive until measured
}

const f = (v: number, digits = 0) => (Number.isFinite(v) ? v.toFixed(digits) : "n/a");

function row(r: RunResult, createMicros: number): string {
  const rate = r.derivations / r.wallS;
  return `| ${r.workers} | ${r.label} | ${r.state} | ${r.derivations} | ${f(r.wallS, 1)} | ${f(rate)} | ${f(r.ackP50Ms)} / ${f(r.ackP99Ms)} | ${f(r.loopP50Ms, 1)} / ${f(r.loopP99Ms)} / ${f(r.loopMaxMs)} (${r.loopOver50Ms}) | ${f(r.slowestScrapeMs)}${r.failedScrapes ? ` (${r.failedScrapes} failed)` : ""} | ${f(r.cpuS, 1)} (${f(r.cpuSysS, 1)}) | ${f(r.natsCpuS, 1)} / ${f(r.workersCpuS, 1)} | ${f(r.peakRssMb)} | ${r.workersLost} | ${f(r.meanBuilding)} / ${f(r.meanReady)} | ${f(createMicros)} |`;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "tmpnix-bench-live-"));
  try {
    const { nodes, what } = await loadGraph();
    const roots = rootsOf(nodes);
    console.log(`# bench:live — ${what}; ${roots.length} roots; fake executor, 1 ms builds, 1 slot per worker\n`);
    console.log(`Scheduler core heap after the submit: ${f(coreBytesPerNode(nodes))} bytes per node (in-process, after GC)\n`);
    console.log("| workers | upload path | state | derivations | wall s | drv/s | assign→accept p50 / p99 ms | loop delay ms: p50 / p99 / longest (10 ms ticks over 50 ms late) | slowest scrape ms | coordinator CPU s (of it in the kernel) | nats / workers CPU s | peak RSS MB | workers lost | mean building / ready | file create µs (probed before the run) |");
    console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    const results: RunResult[] = [];
    for (const n of workerCounts) {
      const variants: Variant[] = [...(baselineCounts.has(n) ? [BASELINE] : []), ...(uploadedCounts.has(n) ? [UPLOADED] : []), OURS, ...(cpuPolicyCounts.has(n) ? [INHERIT, INHERIT, OURS] : [])];
      for (const v of variants) {
        const runDir = path.join(dir, `n${n}-${results.length}`);
        const createMicros = probeCreateMicros(runDir);
        const r = await runLive({ label: v.label, workers: n, nodes, roots, coordinatorEnv: v.env, workerEnv: v.workerEnv, dir: runDir, buildMs: 1, timeoutMs });
        results.push(r);
        console.log(row(r, createMicros));
      }
    }
    for (const n of workerCounts) {
      const base = results.find((r) => r.workers === n && r.label === BASELINE.label);
      const ours = results.find((r) => r.workers === n && r.label === OURS.label);
      if (base && ours) console.log(`\nN=${n}: wall ${f(base.wallS / ours.wallS, 2)}x faster than the baseline, CPU ${f(base.cpuS / ours.cpuS, 2)}x less`);
      const uploaded = results.find((r) => r.workers === n && r.label === UPLOADED.label);
      const wallSum = (label: string) => results.filter((r) => r.workers === n && r.label === label).reduce((sum, r) => sum + r.wallS, 0);
      if (cpuPolicyCounts.has(n)) console.log(`\nN=${n}: wall ${f(wallSum(INHERIT.label) / wallSum(OURS.label), 2)}x faster under SCHED_BATCH than as started (sums of two runs each, in the order batch, inherit, inherit, batch)`);
      if (uploaded && ours) console.log(`\nN=${n}: wall ${f(uploaded.wallS / ours.wallS, 2)}x faster than with outputs uploaded, coordinator CPU ${f(uploaded.cpuS / ours.cpuS, 2)}x less, workers' CPU ${f(uploaded.workersCpuS / ours.workersCpuS, 2)}x less`);
    }
    console.log("\nWhere a result's time went, assignment to acknowledgement (means, ms): to its outputs staged (worker, gRPC, upload) / in the runner's queue / the publishing writes / the persist");
    if (!STEPS_LOGGED) console.log("- not logged in these runs: BENCH_STEPS=1 runs the coordinator at log level debug, which logs them");
    else for (const r of results) {
      const s = r.steps;
      console.log(`- N=${r.workers}, ${r.label}: ${f(s.toStaged)} / ${f(s.queued)} / ${f(s.writes)} / ${f(s.persist)} (${s.leases} leases)`);
    }
    const at200 = results.find((r) => r.workers === 200 && r.label === OURS.label);
    const heap = results.find((r) => r.label === OURS.label);
    if (heap) console.log(`\nCoordinator heap growth from the submit (scraped, before GC, includes garbage): ${f(heap.heapAfterSubmitMb)} MB, ${f((heap.heapAfterSubmitMb * 1024 ** 2) / nodes.length)} bytes per node`);
    console.log("\nTargets (printed, not asserted): full graph at 200 workers <= 60 s (>= 900 drv/s); loop delay p99 <= 50 ms; peak RSS <= 600 MB; 0 workers lost; 100k-node submit with no pause over 200 ms.");
    if (at200) console.log(`At 200 workers: ${f(at200.wallS, 1)} s, ${f(at200.derivations / at200.wallS)} drv/s, loop delay p99 ${f(at200.loopP99Ms)} ms (longest pause ${f(at200.loopMaxMs)} ms), peak RSS ${f(at200.peakRssMb)} MB, lost ${at200.workersLost}`);

    if (bigSubmit > 0) {
      const big = syntheticDag({ nodes: bigSubmit, seed: 2, storeDir: "/nix/store" });
      const r = await runLive({ label: "submit probe", workers: 50, nodes: big, roots: rootsOf(big), coordinatorEnv: {}, dir: path.join(dir, "big"), buildMs: 1, timeoutMs, stopAfterSubmitMs: 3000 });
      console.log(`\n${bigSubmit}-node submit (synthetic, 50 workers connected): call took ${f(r.submitS, 2)} s; event-loop pauses over 200 ms during it: ${r.submitPausesOver200Ms} (target 0; longest in the minute up to its end ${f(r.submitPauseMs)} ms); slowest metrics scrape ${f(r.slowestScrapeMs)} ms (${r.failedScrapes} failed); workers lost ${r.workersLost}`);
    }
  } finally {
    if (!process.env.BENCH_KEEP) rmSync(dir, { recursive: true, force: true });
    else console.log(`kept ${dir}`);
  }
}

// Children are stopped in runLive's finally; make sure a stray rejection cannot skip it.
process.on("unhandledRejection", (err) => console.error("bench: unhandled rejection", err));
await main();
