// Parameters of the simulator's workload model: what a derivation costs to
// build. The nixpkgs DAG dumps carry no times or memory, so the model is
// stated here and every number can be overridden (`--model FILE`, JSON of a
// Partial<WorkloadParams>; `packages` entries merge by pname).
//
// Anchors (outside sources, copied from the tmpnix field notes, which cite the
// tmpnix project's public build logs on 1-2 core, low-RAM containers with Nix
// max-jobs = 1):
//   - gcc 10.3: 660 min; binutils 2.35: 64 min; llvm 14: about 9 h 38 min;
//     nodejs 20: about 4 h, nodejs 22: about 7 h (single builds, cores = 1 or 2).
//   - gcc's first attempt "didn't have the right parallelism set, and it went
//     over the RAM limit": gcc's peak grows with -j.
//   - aws-sdk-cpp used about 1.5 GB to compile one file (ub_S3.cpp.o).
//   - v8 could not link mksnapshot in the RAM available; big-parallel packages
//     (chromium, firefox, libreoffice, llvm, rustc, ...) take over 2 h on 2 cores.
//   - Containers restart at least every 12 h; a build longer than that is lost.
// Everything else below is OUR assumption, marked `assumed` in `source`:
// fetches take seconds, trivial wrappers and hooks about 10 s, and other
// packages follow a lognormal (median 3 min) keyed by pname. Named heavy
// packages stay under 12 h on one core so that the DAGs remain buildable on
// the 1-core fleets we simulate.

/** One package's cost, given by hand. */
export interface PackageProfileParams {
  /** Build time on one core, minutes. */
  singleCoreMin: number;
  /** Amdahl parallel fraction (speedup on c cores = 1 / ((1-p) + p/c)); 0 = serial. */
  parallelFraction: number;
  /** Peak memory = baseMB + perCoreMB * make jobs (jobs = cores when parallel, else 1). */
  baseMB: number;
  perCoreMB: number;
  /** When the peak is reached, as a fraction of the build time (links come late). */
  peakAt: number;
  /** Where the numbers come from. */
  source: string;
}

/** A class of derivations whose costs are drawn per pname from lognormals. */
export interface DrawnClassParams {
  /** Median build time on one core, seconds, and the lognormal sigma. */
  medianSec: number;
  sigma: number;
  /** Hard cap on the drawn time, seconds. */
  maxSec: number;
  /** Median base / per-core memory, MB, their sigma, and a cap on each. */
  baseMedianMB: number;
  perCoreMedianMB: number;
  memorySigma: number;
  maxMemoryMB: number;
  /** Parallel fraction for derivations with enableParallelBuilding (others are serial). */
  parallelFraction: number;
  peakAt: number;
}

/** Every knob of the workload model. */
export interface WorkloadParams {
  /** Seeds the per-pname draws (the same seed and pname always give the same profile). */
  seed: number;
  /** Fixed-output fetches and builtin derivations: seconds, light. */
  fetch: DrawnClassParams;
  /** Wrappers, hooks, stdenvs, env builders: a few seconds of shell. */
  trivial: DrawnClassParams;
  /** Names (regular expressions, matched on the drv name) of trivial derivations. */
  trivialPatterns: string[];
  /** big-parallel derivations without a named profile. */
  bigParallel: PackageProfileParams;
  /** Everything else. */
  default: DrawnClassParams;
  /** Named packages by exact pname. */
  packages: Record<string, PackageProfileParams>;
  /** Per-attempt noise (lognormal sigma) on duration and on peak memory. */
  durationJitter: number;
  memoryJitter: number;
}

const heavy = (singleCoreMin: number, baseMB: number, perCoreMB: number, source: string, parallelFraction = 0.9): PackageProfileParams => ({
  singleCoreMin,
  parallelFraction,
  baseMB,
  perCoreMB,
  peakAt: 0.9,
  source,
});

/** The default model (see the file comment for which numbers are anchored). */
export const DEFAULT_WORKLOAD_PARAMS: WorkloadParams = {
  seed: 20_09,
  fetch: {
    medianSec: 5,
    sigma: 0.8,
    maxSec: 120,
    baseMedianMB: 24,
    perCoreMedianMB: 0,
    memorySigma: 0.3,
    maxMemoryMB: 64,
    parallelFraction: 0,
    peakAt: 0.5,
  },
  trivial: {
    medianSec: 10,
    sigma: 0.5,
    maxSec: 120,
    baseMedianMB: 40,
    perCoreMedianMB: 0,
    memorySigma: 0.3,
    maxMemoryMB: 128,
    parallelFraction: 0,
    peakAt: 0.5,
  },
  trivialPatterns: [
    "wrapper",
    "hook",
    "stdenv",
    "-env$",
    "\\.sh$",
    "^expand-response-params",
    "^nuke-references",
    "^bootstrap-tools$",
    "^bootstrap-stage",
  ],
  bigParallel: heavy(300, 1500, 500, "assumed: big-parallel takes > 2 h on 2 cores (anchor); 5 h on 1 core"),
  default: {
    medianSec: 180,
    sigma: 1.2,
    maxSec: 6 * 3600,
    baseMedianMB: 150,
    perCoreMedianMB: 80,
    memorySigma: 0.6,
    maxMemoryMB: 1024,
    parallelFraction: 0.8,
    peakAt: 0.6,
  },
  packages: {
    gcc: heavy(660, 300, 350, "anchor: gcc 10.3 660 min on one core; over the RAM limit with too many jobs"),
    gfortran: heavy(660, 300, 350, "assumed: as gcc"),
    gnat: heavy(660, 300, 350, "assumed: as gcc"),
    binutils: heavy(64, 200, 150, "anchor: binutils 2.35 64 min"),
    llvm: heavy(578, 1000, 500, "anchor: llvm 14 about 9 h 38 min; memory assumed (link)"),
    clang: heavy(480, 1200, 600, "assumed: llvm's order, kept under 12 h"),
    nodejs: heavy(240, 500, 400, "anchor: nodejs 20 about 4 h (nodejs 22 about 7 h)"),
    "aws-sdk-cpp": heavy(180, 300, 1536, "anchor: about 1.5 GB per compile unit; time assumed"),
    "chromium-unwrapped": heavy(480, 2600, 1000, "anchor: big-parallel > 2 h on 2 cores, several GB; v8 link needs more RAM than small hosts have", 0.95),
    "firefox-unwrapped": heavy(420, 2200, 900, "anchor: big-parallel > 2 h on 2 cores, several GB", 0.95),
    "thunderbird-unwrapped": heavy(420, 2200, 900, "assumed: as firefox", 0.95),
    libreoffice: heavy(480, 1800, 800, "anchor: > 2 h on 2 cores, several GB", 0.9),
    qtwebengine: heavy(540, 2600, 1000, "assumed: bundles chromium", 0.95),
    webkitgtk: heavy(360, 1800, 800, "assumed"),
    rustc: heavy(360, 1500, 600, "assumed: big-parallel"),
    ghc: heavy(300, 1500, 500, "assumed"),
    openjdk: heavy(180, 1000, 400, "assumed"),
    spidermonkey: heavy(120, 800, 400, "assumed"),
    qtbase: heavy(180, 700, 400, "assumed"),
    boost: heavy(90, 500, 400, "assumed"),
    linux: heavy(180, 400, 300, "assumed: kernel"),
    glibc: heavy(90, 300, 150, "assumed"),
    python3: heavy(40, 250, 120, "assumed"),
    perl: heavy(30, 150, 80, "assumed"),
    cmake: heavy(40, 250, 150, "assumed"),
    systemd: heavy(30, 300, 150, "assumed"),
    mesa: heavy(60, 400, 250, "assumed"),
    ffmpeg: heavy(50, 300, 150, "assumed"),
    openblas: heavy(90, 300, 100, "assumed"),
    vtk: heavy(240, 1200, 500, "assumed"),
    opencv: heavy(120, 800, 400, "assumed"),
  },
  durationJitter: 0.1,
  memoryJitter: 0.05,
};

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `base` with `override` laid over it (objects merge key by key; arrays and scalars replace). */
export function mergeParams<T>(base: T, override: unknown): T {
  if (!isObject(base) || !isObject(override)) return (override === undefined ? base : override) as T;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(override)) out[k] = k in out ? mergeParams(out[k], v) : v;
  return out as T;
}
