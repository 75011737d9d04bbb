// Builders for tests and the simulator: valid-looking store paths, nodes,
// workers and a tiny harness that drives a Scheduler on a virtual clock.
import { VirtualClock } from "./clock.js";
import type { Submission } from "./dag-validate.js";
import { effectsOf, type Effect, type EffectOf } from "./effects.js";
import { Scheduler, type SchedulerConfig } from "./scheduler.js";
import type { DrvRecord } from "./drv-state.js";
import type { LearnedEstimate } from "./estimator.js";
import type { Snapshot } from "./snapshot.js";
import type { BuildOutcome, BuildReport, DrvNode, DrvPath, JobRecord, WorkerInfo } from "./types.js";

const NIX32 = "0123456789abcdfghijklmnpqrsvwxyz";

/** A deterministic 32-char nix-base32 hash of `s` (not cryptographic). */
export function fakeHash(s: string): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  let out = "";
  for (let round = 0; out.length < 32; round++) {
    for (let i = 0; i < s.length; i++) {
      h1 = Math.imul(h1 ^ s.charCodeAt(i), 16777619) >>> 0;
      h2 = Math.imul(h2 + s.charCodeAt(i) + round, 2246822519) >>> 0;
    }
    h1 = Math.imul(h1 ^ round ^ (h2 >>> 7), 2654435761) >>> 0;
    for (let k = 0; k < 6 && out.length < 32; k++) out += NIX32[(h1 >>> (k * 5)) & 31];
  }
  return out;
}

/** Store dir used by fixtures. */
export const STORE = "/tmp/nix/store";

/** The .drv path of a fixture named `name`. */
export function drvPathOf(name: string): DrvPath {
  return `${STORE}/${fakeHash(name)}-${name}.drv`;
}

/** The output path `output` of fixture `name`. */
export function outPathOf(name: string, output = "out"): string {
  return `${STORE}/${fakeHash(`${name}!${output}`)}-${name}${output === "out" ? "" : `-${output}`}`;
}

/** An input: a fixture name (uses its `out`) or [name, outputs used]. */
export type InputSpec = string | [string, string[]];

/** A node named `name` with the given inputs; `opts` overrides fields (outputs by name list). */
export function mkNode(
  name: string,
  inputs: InputSpec[] = [],
  opts: Partial<Omit<DrvNode, "outputs">> & { outputs?: string[] } = {},
): DrvNode {
  const { outputs = ["out"], ...rest } = opts;
  return {
    drvPath: drvPathOf(name),
    name,
    pname: name,
    version: "1.0",
    system: "x86_64-linux",
    outputs: Object.fromEntries(outputs.map((o) => [o, outPathOf(name, o)])),
    inputDrvs: inputs.map((i) =>
      typeof i === "string" ? { drvPath: drvPathOf(i), outputs: ["out"] } : { drvPath: drvPathOf(i[0]), outputs: i[1] },
    ),
    inputSrcs: [],
    fixedOutput: false,
    requiredSystemFeatures: [],
    preferLocalBuild: false,
    allowSubstitutes: true,
    enableParallelBuilding: true,
    ...rest,
  };
}

/** A submission of `nodes` with roots given by name. */
export function mkSubmission(jobId: string, nodes: DrvNode[], roots: string[], extra: Partial<Submission> = {}): Submission {
  return {
    jobId,
    description: `test ${jobId}`,
    roots: roots.map(drvPathOf),
    nodes,
    idempotencyKey: "",
    cachedDrvPaths: new Set(),
    ...extra,
  };
}

/** A worker's join info; x86_64-linux, 4 cores, 8 GiB, 2 slots unless overridden. */
export function mkWorker(workerId: string, opts: Partial<WorkerInfo> = {}): WorkerInfo {
  return {
    workerId,
    softwareVersion: "test",
    systems: ["x86_64-linux"],
    features: [],
    cores: 4,
    memoryBytes: 8 * 2 ** 30,
    freeDiskBytes: 100 * 2 ** 30,
    storeDir: STORE,
    uptimeSeconds: 0,
    maxLifetimeSeconds: 0,
    maxBuilds: 2,
    ...opts,
  };
}

/** A build report for an assignment. */
export function mkReport(assign: EffectOf<"assign">, outcome: BuildOutcome = "succeeded", error = ""): BuildReport {
  return {
    lease: { ...assign.spec.lease },
    outcome,
    outputs: outcome === "succeeded"
      ? Object.entries(assign.spec.outputs).map(([name, path]) => ({ name, path, narHash: "sha256:x", narSize: 1 }))
      : [],
    durationMs: 1000,
    peakMemoryBytes: 100 * 2 ** 20,
    cores: assign.spec.cores,
    error,
  };
}

/** Drives a Scheduler on a virtual clock, remembering every effect. */
export class Harness {
  readonly clock = new VirtualClock(1_000_000);
  readonly scheduler: Scheduler;
  readonly log: Effect[] = [];

  constructor(config: Partial<SchedulerConfig> = {}, scheduler?: Scheduler) {
    this.scheduler = scheduler ?? new Scheduler({ heartbeatTimeoutMs: 10_000, ...config });
  }

  /** Runs one event at the current virtual time; returns its effects. */
  run(event: (s: Scheduler, now: number) => Effect[]): Effect[] {
    const effects = event(this.scheduler, this.clock.now());
    this.log.push(...effects);
    return effects;
  }

  /** Assign effects of one event. */
  assigns(effects: Effect[]): EffectOf<"assign">[] {
    return effectsOf(effects, "assign");
  }

  /** Reports `assign` as finished with `outcome` (verified outputs unless told). */
  report(assign: EffectOf<"assign">, outcome: BuildOutcome = "succeeded", verified = true): Effect[] {
    return this.run((s, now) => s.buildReported(now, assign.workerId, mkReport(assign, outcome), verified));
  }
}

/** Applies persist effects to in-memory maps, as a store would: what a restart would load. */
export class PersistedEffects {
  readonly nodes = new Map<DrvPath, DrvNode>();
  readonly drvs = new Map<DrvPath, DrvRecord>();
  readonly jobs = new Map<string, JobRecord>();
  readonly estimates = new Map<string, LearnedEstimate>();

  /** Records every persist effect in `effects`. */
  apply(effects: readonly Effect[]): void {
    for (const e of effects) {
      if (e.kind === "persistNodes") for (const n of e.nodes) this.nodes.set(n.drvPath, n);
      if (e.kind === "persistDrvs") for (const r of e.records) this.drvs.set(r.drvPath, r);
      if (e.kind === "persistJob") this.jobs.set(e.job.jobId, e.job);
      if (e.kind === "persistEstimate") this.estimates.set(e.estimate.key, e.estimate);
    }
  }

  /** What a store would load. */
  snapshot(): Snapshot {
    return {
      nodes: [...this.nodes.values()],
      drvs: [...this.drvs.values()],
      jobs: [...this.jobs.values()],
      estimates: [...this.estimates.values()],
    };
  }
}
