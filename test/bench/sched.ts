// `npm run bench:sched`: the scheduling simulator's benchmark. Runs each DAG
// under hydra-like, fifo, ours (cold) and ours (with history) on the same
// seeded fleet and workload, and prints Markdown tables with ratios measured
// in this run. Numbers are measurements, never assertions.
//   npm run bench:sched
//   npm run bench:sched -- --dag FILE --roots DRV[,DRV] [--fleet SPEC] [--seed N] [--model FILE]
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ALL_VARIANTS, runBenchCase, VARIANT_LABELS, type BenchOutcome, type Variant } from "../../coordinator/sim/bench.js";
import { loadSimDag } from "../../coordinator/sim/dag-input.js";
import { parseFleet } from "../../coordinator/sim/fleet.js";
import { caseTable, seedLine, seedsSummary, targetLines, type SeedLine } from "../../coordinator/sim/report.js";
import type { SimTraceEvent } from "../../coordinator/sim/simulate.js";
import { DEFAULT_SCHEDULER_CONFIG, type SchedulerConfig } from "../../coordinator/core/scheduler-state.js";
import { paramsFromJson, WorkloadModel } from "../../coordinator/sim/workload.js";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const fixtures = join(repo, "test/fixtures/dags");

/** The default set: the issue's DAGs with fleets sized to them. */
const DEFAULT_SET = [
  { name: "hello", file: "hello.jsonl", roots: ["/nix/store/iylhv1jiapks1396jz2fv8wq85q68y6y-hello-2.10.drv"], fleet: "10", hydraTarget: false },
  { name: "gcc", file: "gcc.jsonl", roots: ["/nix/store/flz0r0b1livgxp5jny9dldfx47a0az01-gcc-wrapper-9.3.0.drv"], fleet: "10", hydraTarget: true },
  { name: "chromium", file: "chromium.jsonl.xz", roots: ["/nix/store/c55b72kmfdivfi46xk59qk6y5wx08a1l-chromium-84.0.4147.89.drv"], fleet: "30", hydraTarget: true },
  { name: "nixpkgs-10k", file: "nixpkgs-10k.jsonl.xz", roots: [] as string[], fleet: "100", hydraTarget: false },
];

interface Args {
  dag?: string;
  roots: string[];
  fleet?: string;
  seed: number;
  /** More than one: every case runs at each, and targets are judged on medians. */
  seeds: number[];
  model?: string;
  variants: Variant[];
  only?: string;
  /** Print the timeline of attempts at least this long (hours). */
  traceHours?: number;
  /** Scheduler config overrides (JSON of a Partial<SchedulerConfig>), for every policy. */
  scheduler: Partial<SchedulerConfig>;
}

function usage(msg: string): never {
  console.error(`${msg}\nusage: npm run bench:sched -- [--dag FILE --roots DRV[,DRV]] [--fleet SPEC] [--seed N | --seeds A-B] [--model FILE] [--variants a,b] [--only NAME[,NAME]] [--trace HOURS] [--scheduler JSON]`);
  process.exit(2);
}

/** `--seeds 1-5` or `--seeds 1,4,9`. */
function parseSeeds(v: string): number[] {
  const range = /^(\d+)-(\d+)$/.exec(v);
  const seeds = range ? Array.from({ length: Number(range[2]) - Number(range[1]) + 1 }, (_, i) => Number(range[1]) + i) : v.split(",").map(Number);
  if (seeds.length === 0 || seeds.length > 100 || !seeds.every(Number.isInteger)) usage(`--seeds takes A-B or a comma list of up to 100 integers, got ${v}`);
  return seeds;
}

/** `--scheduler '{"maxBackupCopiesPerBuild":2}'`: known numeric SchedulerConfig fields only. */
function parseSchedulerOverrides(json: string): Partial<SchedulerConfig> {
  let o: unknown;
  try {
    o = JSON.parse(json);
  } catch {
    usage(`--scheduler: not JSON: ${json}`);
  }
  if (typeof o !== "object" || o === null || Array.isArray(o)) usage("--scheduler takes a JSON object");
  for (const [k, v] of Object.entries(o)) {
    if (!(k in DEFAULT_SCHEDULER_CONFIG)) usage(`--scheduler: unknown field ${k} (${Object.keys(DEFAULT_SCHEDULER_CONFIG).join(", ")})`);
    if (typeof v !== typeof DEFAULT_SCHEDULER_CONFIG[k as keyof SchedulerConfig]) usage(`--scheduler: ${k} must be a ${typeof DEFAULT_SCHEDULER_CONFIG[k as keyof SchedulerConfig]}`);
  }
  return o as Partial<SchedulerConfig>;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { roots: [], seed: 1, seeds: [], variants: [...ALL_VARIANTS], scheduler: {} };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    const take = (): string => (v === undefined ? usage(`${argv[i]} needs a value`) : (i++, v));
    switch (argv[i]) {
      case "--dag": a.dag = take(); break;
      case "--roots": a.roots = take().split(",").filter((s) => s !== ""); break;
      case "--fleet": a.fleet = take(); break;
      case "--seed": a.seed = Number(take()); break;
      case "--seeds": a.seeds = parseSeeds(take()); break;
      case "--model": a.model = take(); break;
      case "--only": {
        a.only = take();
        for (const x of a.only.split(",")) if (!DEFAULT_SET.some((c) => c.name === x)) usage(`unknown DAG ${x} (${DEFAULT_SET.map((c) => c.name).join(", ")})`);
        break;
      }
      case "--trace": a.traceHours = Number(take()); break;
      case "--scheduler": a.scheduler = parseSchedulerOverrides(take()); break;
      case "--variants": {
        const list = take().split(",").map((s) => s.trim());
        for (const x of list) if (!ALL_VARIANTS.includes(x as Variant)) usage(`unknown variant ${x} (${ALL_VARIANTS.join(", ")})`);
        a.variants = list as Variant[];
        break;
      }
      default: usage(`unknown argument ${argv[i]}`);
    }
  }
  if (!Number.isInteger(a.seed)) usage("--seed must be an integer");
  if (a.traceHours !== undefined && !(a.traceHours >= 0)) usage("--trace takes a number of hours >= 0");
  return a;
}

/**
 * Keeps the attempts whose derivation takes at least `minHours` in some
 * attempt (or ran that long), per variant, and prints them as a timeline.
 */
function traceRecorder(minHours: number): { record: (v: Variant, e: SimTraceEvent) => void; print: () => string } {
  const h = (ms: number) => (ms / 3_600_000).toFixed(2);
  const starts = new Map<string, SimTraceEvent>();
  const lines = new Map<Variant, string[]>();
  return {
    record(v, e) {
      const key = `${v} ${e.workerId} ${e.name}`;
      if (e.kind === "start") return void starts.set(key, e);
      const s = starts.get(key);
      starts.delete(key);
      if (s === undefined || e.atMs - s.atMs < minHours * 3_600_000) return;
      const line = `| ${h(s.atMs)} | ${h(e.atMs)} | ${e.name} | ${e.kind} | ${e.workerId} | ${s.cores} | ${h(s.remainingMs)} | ${h(s.killInMs)} |`;
      lines.set(v, [...(lines.get(v) ?? []), line]);
    },
    print() {
      const out: string[] = [];
      for (const [v, ls] of lines) {
        out.push(`\nAttempts of ${minHours} h or more, ${VARIANT_LABELS[v]}:\n\n| start h | end h | derivation | outcome | worker | cores | lifetime left at start h | killed after h |\n|---|---|---|---|---|---|---|---|`);
        out.push(...ls);
      }
      return out.join("\n");
    },
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const workload = new WorkloadModel(args.model === undefined ? undefined : paramsFromJson(JSON.parse(readFileSync(args.model, "utf8"))));
  const cases = args.dag !== undefined
    ? [{ name: args.dag, file: resolve(args.dag), roots: args.roots, fleet: args.fleet ?? "20", hydraTarget: false }]
    : DEFAULT_SET.filter((c) => args.only === undefined || args.only.split(",").includes(c.name)).map((c) => ({ ...c, file: join(fixtures, c.file), fleet: args.fleet ?? c.fleet }));
  const command = ["npm run bench:sched", ...(process.argv.length > 2 ? ["--", ...process.argv.slice(2)] : [])].join(" ");
  console.log(`# Scheduler benchmark (simulated)\n\nCommand: \`${command}\`  \nWorkload model: coordinator/sim/workload-params.ts${args.model ? ` + ${args.model}` : ""} (anchors from the tmpnix field notes; the rest assumed).\n`);
  const targets: string[] = [];
  const t0 = performance.now();
  for (const c of cases) {
    const dag = await loadSimDag(c.file, c.roots, c.name);
    const seeds = args.seeds.length > 0 ? args.seeds : [args.seed];
    const lines: SeedLine[] = [];
    for (const seed of seeds) {
      const timeline = args.traceHours === undefined ? undefined : traceRecorder(args.traceHours);
      const outcome: BenchOutcome = runBenchCase({ dag, fleet: parseFleet(c.fleet), workload, seed, variants: args.variants, onTrace: timeline?.record, schedulerConfig: args.scheduler });
      lines.push(seedLine(outcome));
      // Over several seeds, the first one's full table, then a line per seed.
      if (seed !== seeds[0]) continue;
      console.log(caseTable(outcome));
      const wall = outcome.rows.map((r) => `${VARIANT_LABELS[r.variant]} ${(r.wallMs / 1000).toFixed(1)} s`).join(", ");
      console.log(`\nWall time per run: ${wall}.\n`);
      if (timeline !== undefined) console.log(timeline.print());
      if (seeds.length === 1) targets.push(...targetLines(outcome, c.hydraTarget));
    }
    if (seeds.length > 1) {
      const summary = seedsSummary(c.name, lines, c.hydraTarget);
      console.log(`${summary.table}\n`);
      targets.push(...summary.targets);
    }
  }
  if (targets.length > 0) console.log(`## Targets (from the issue), measured\n\n${targets.join("\n")}\n`);
  console.log(`Total wall time ${((performance.now() - t0) / 1000).toFixed(1)} s.`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
