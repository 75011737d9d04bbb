// What a build is assumed to need before it has any history, in order:
// fetches (fixed-output or builtin) as tiny, then the heavy-packages table,
// then `big-parallel` in requiredSystemFeatures, then preferLocalBuild as
// tiny, then a default.
import type { ResourceModel } from "./estimator.js";
import type { HeavyTable } from "./heavy-packages.js";
import { BUILTIN_SYSTEM, type DrvNode } from "./types.js";

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const MINUTE = 60_000;

/** A guess in the same terms as a heavy-table entry. */
export interface PriorSpec {
  oneCoreMs: number;
  /** Share of the one-core time that spreads over cores (0..1). */
  parallelFraction: number;
  baseBytes: number;
  perCoreBytes: number;
  diskBytes: number;
}

/** The guesses used when the heavy table has no entry. */
export interface PriorDefaults {
  /** requiredSystemFeatures contains big-parallel. */
  bigParallel: PriorSpec;
  /** Fixed-output derivations (fetches): network bound, tiny. */
  fetch: PriorSpec;
  /** preferLocalBuild (writeText, symlinkJoin, ...): tiny. */
  local: PriorSpec;
  /** Anything else. */
  default: PriorSpec;
}

/**
 * Built-in guesses; a typical nixpkgs package builds in minutes in a few
 * hundred MB. Even tiny builds count nix-store itself (the worker measures
 * its whole process tree), hence no less than 128 MiB.
 */
export const DEFAULT_PRIORS: PriorDefaults = {
  bigParallel: { oneCoreMs: 240 * MINUTE, parallelFraction: 0.9, baseBytes: 1024 * MiB, perCoreBytes: 512 * MiB, diskBytes: 8 * GiB },
  fetch: { oneCoreMs: 1 * MINUTE, parallelFraction: 0, baseBytes: 192 * MiB, perCoreBytes: 0, diskBytes: 512 * MiB },
  local: { oneCoreMs: 10_000, parallelFraction: 0, baseBytes: 128 * MiB, perCoreBytes: 0, diskBytes: 64 * MiB },
  default: { oneCoreMs: 5 * MINUTE, parallelFraction: 0.7, baseBytes: 256 * MiB, perCoreBytes: 128 * MiB, diskBytes: 1 * GiB },
};

/** A ResourceModel from a spec. */
export function modelOf(spec: PriorSpec, source: ResourceModel["source"]): ResourceModel {
  return {
    baseBytes: spec.baseBytes,
    perCoreBytes: spec.perCoreBytes,
    serialMs: spec.oneCoreMs * (1 - spec.parallelFraction),
    parallelMs: spec.oneCoreMs * spec.parallelFraction,
    diskBytes: spec.diskBytes,
    floors: [],
    source,
    measured: false,
  };
}

// Without enableParallelBuilding, make runs one job whatever NIX_BUILD_CORES
// says: extra cores neither speed it up nor cost memory.
function serialized(spec: PriorSpec): PriorSpec {
  return { ...spec, parallelFraction: Math.min(spec.parallelFraction, 0.1), perCoreBytes: spec.perCoreBytes / 4 };
}

/** A download rather than a build: fixed-output, or run inside Nix itself (builtin:fetchurl). */
export function isFetch(node: DrvNode): boolean {
  return node.fixedOutput || node.system === BUILTIN_SYSTEM;
}

/** The no-history model of `node`. */
export function priorModel(node: DrvNode, heavy: HeavyTable, d: PriorDefaults = DEFAULT_PRIORS): ResourceModel {
  // Before the heavy table: `gcc-9.3.0.tar.xz` is gcc's source download, not an 11-hour build.
  if (isFetch(node)) return modelOf(d.fetch, "fetch");
  const entry = heavy.lookup(node.pname);
  if (entry !== undefined) {
    const spec: PriorSpec = {
      oneCoreMs: entry.oneCoreMinutes * MINUTE,
      parallelFraction: entry.parallelFraction,
      baseBytes: entry.baseMiB * MiB,
      perCoreBytes: entry.perCoreMiB * MiB,
      diskBytes: entry.diskGiB * GiB,
    };
    return modelOf(spec, "heavy-table");
  }
  const parallel = (s: PriorSpec) => (node.enableParallelBuilding ? s : serialized(s));
  if (node.requiredSystemFeatures.includes("big-parallel")) return modelOf(parallel(d.bigParallel), "big-parallel");
  if (node.preferLocalBuild) return modelOf(d.local, "local");
  return modelOf(parallel(d.default), "default");
}
