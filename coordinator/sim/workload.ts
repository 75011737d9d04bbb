// The workload model: for each derivation, a true single-core build time, an
// Amdahl parallel fraction (efficiency < 1 on more cores) and a memory model
// `base + perCore * jobs`, where jobs = cores for parallel builds, else 1.
// Memory grows linearly to its peak at `peakAt` of the build, so a build
// over its limit is killed part-way, after burning CPU. Profiles are fixed
// per (seed, pname); each attempt adds small lognormal noise from the run's
// generator. The parameters and their outside anchors are in workload-params.ts.
import type { Random } from "../core/clock.js";
import { InvalidInputError } from "../core/errors.js";
import { BUILTIN_SYSTEM, type DrvNode } from "../core/types.js";
import { keyedRandom, lognormal } from "./sim-random.js";
import {
  DEFAULT_WORKLOAD_PARAMS,
  mergeParams,
  type DrawnClassParams,
  type PackageProfileParams,
  type WorkloadParams,
} from "./workload-params.js";

const MB = 2 ** 20;

/** Which rule of the model produced a profile. */
export type ProfileClass = "fetch" | "trivial" | "named" | "big-parallel" | "default";

/** The true cost of building one derivation. */
export interface BuildProfile {
  class: ProfileClass;
  singleCoreMs: number;
  /** Amdahl parallel fraction; 0 = serial (more cores neither help nor cost memory). */
  parallelFraction: number;
  baseBytes: number;
  perCoreBytes: number;
  /** Fraction of the build time at which memory peaks. */
  peakAt: number;
  source: string;
}

/** One simulated attempt: how long it takes and how much memory it peaks at. */
export interface AttemptCost {
  durationMs: number;
  peakBytes: number;
}

/** Build time of `p` on `cores` cores (Amdahl). */
export function durationOn(p: BuildProfile, cores: number): number {
  const c = Math.max(1, cores);
  return p.singleCoreMs * (1 - p.parallelFraction + p.parallelFraction / c);
}

/** Peak memory of `p` when granted `cores` (make -j cores; serial builds use one job). */
export function peakOn(p: BuildProfile, cores: number): number {
  const jobs = p.parallelFraction > 0 ? Math.max(1, cores) : 1;
  return p.baseBytes + p.perCoreBytes * jobs;
}

/**
 * When a build whose memory ramps to `peakBytes` at `peakAt * durationMs`
 * reaches `limitBytes`, or null when it never does.
 */
export function exhaustionTimeMs(cost: AttemptCost, peakAt: number, limitBytes: number): number | null {
  if (cost.peakBytes <= limitBytes) return null;
  return Math.max(1, Math.floor(cost.durationMs * peakAt * (limitBytes / cost.peakBytes)));
}

function fromPackage(cls: ProfileClass, p: PackageProfileParams): BuildProfile {
  return {
    class: cls,
    singleCoreMs: p.singleCoreMin * 60_000,
    parallelFraction: p.parallelFraction,
    baseBytes: p.baseMB * MB,
    perCoreBytes: p.perCoreMB * MB,
    peakAt: p.peakAt,
    source: p.source,
  };
}

function drawn(cls: ProfileClass, c: DrawnClassParams, rnd: Random, parallel: boolean): BuildProfile {
  const capMem = (mb: number): number => Math.min(c.maxMemoryMB, mb) * MB;
  return {
    class: cls,
    singleCoreMs: Math.round(Math.min(c.maxSec, lognormal(rnd, c.medianSec, c.sigma)) * 1000),
    parallelFraction: parallel ? c.parallelFraction : 0,
    baseBytes: Math.round(capMem(lognormal(rnd, c.baseMedianMB, c.memorySigma))),
    perCoreBytes: c.perCoreMedianMB > 0 ? Math.round(capMem(lognormal(rnd, c.perCoreMedianMB, c.memorySigma))) : 0,
    peakAt: c.peakAt,
    source: `assumed: lognormal ${cls} class`,
  };
}

/** Costs of derivations under a set of WorkloadParams. Deterministic. */
export class WorkloadModel {
  readonly params: WorkloadParams;
  private readonly trivial: RegExp[];
  private readonly cache = new Map<string, BuildProfile>();

  constructor(params: WorkloadParams = DEFAULT_WORKLOAD_PARAMS) {
    this.params = params;
    this.trivial = params.trivialPatterns.map((p) => new RegExp(p));
  }

  /** Which class `node` falls in. */
  classOf(node: DrvNode): ProfileClass {
    if (node.fixedOutput || node.system === BUILTIN_SYSTEM) return "fetch";
    if (Object.hasOwn(this.params.packages, node.pname)) return "named";
    if (node.requiredSystemFeatures.includes("big-parallel")) return "big-parallel";
    if (this.trivial.some((re) => re.test(node.name))) return "trivial";
    return "default";
  }

  /** The true profile of `node` (same seed and pname, same profile). */
  profile(node: DrvNode): BuildProfile {
    const cls = this.classOf(node);
    const parallel = node.enableParallelBuilding;
    const key = `${cls}|${parallel ? "p" : "s"}|${node.pname}`;
    let p = this.cache.get(key);
    if (p === undefined) {
      p = this.makeProfile(cls, node, parallel);
      this.cache.set(key, p);
    }
    return p;
  }

  private makeProfile(cls: ProfileClass, node: DrvNode, parallel: boolean): BuildProfile {
    const rnd = keyedRandom(this.params.seed, `${cls}|${node.pname}`);
    switch (cls) {
      case "named":
        return fromPackage(cls, this.params.packages[node.pname]);
      case "big-parallel":
        return fromPackage(cls, this.params.bigParallel);
      case "fetch":
        return drawn(cls, this.params.fetch, rnd, false);
      case "trivial":
        return drawn(cls, this.params.trivial, rnd, false);
      case "default":
        return drawn(cls, this.params.default, rnd, parallel);
    }
  }

  /** One attempt on `cores` granted cores, of which the worker really has `cpus`; noise from `rnd`. */
  attempt(node: DrvNode, cores: number, cpus: number, rnd: Random): AttemptCost {
    const p = this.profile(node);
    const speedCores = Math.max(1, Math.min(cores, cpus));
    return {
      durationMs: Math.max(1, Math.round(lognormal(rnd, durationOn(p, speedCores), this.params.durationJitter))),
      peakBytes: Math.round(lognormal(rnd, peakOn(p, cores), this.params.memoryJitter)),
    };
  }
}

/** Defaults for a package that a model file names without giving every field. */
const NEW_PACKAGE: PackageProfileParams = {
  singleCoreMin: 10,
  parallelFraction: 0.8,
  baseMB: 200,
  perCoreMB: 100,
  peakAt: 0.6,
  source: "model file",
};

function checkPackage(name: string, p: PackageProfileParams): void {
  const nums: (keyof PackageProfileParams)[] = ["singleCoreMin", "parallelFraction", "baseMB", "perCoreMB", "peakAt"];
  for (const k of nums) {
    if (typeof p[k] !== "number" || !Number.isFinite(p[k] as number) || (p[k] as number) < 0) {
      throw new InvalidInputError(`model: packages.${name}.${k} must be a number >= 0`);
    }
  }
  if (p.parallelFraction > 1 || p.peakAt > 1) throw new InvalidInputError(`model: packages.${name}: fractions must be <= 1`);
}

/** Default params with a model file's JSON laid over them (validated). */
export function paramsFromJson(json: unknown): WorkloadParams {
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new InvalidInputError("model: must be a JSON object");
  const o = json as Partial<WorkloadParams>;
  const params = mergeParams(DEFAULT_WORKLOAD_PARAMS, { ...o, packages: {} });
  const packages = { ...DEFAULT_WORKLOAD_PARAMS.packages };
  for (const [name, p] of Object.entries(o.packages ?? {})) {
    packages[name] = mergeParams(packages[name] ?? NEW_PACKAGE, p);
    checkPackage(name, packages[name]);
  }
  checkPackage("bigParallel", params.bigParallel);
  if (!Array.isArray(params.trivialPatterns)) throw new InvalidInputError("model: trivialPatterns must be a list");
  return { ...params, packages };
}
