// The estimator the scheduler uses by default: learns from every finished
// build, keyed by package name and version family (drv hashes change on every
// rebuild, `gcc-10.3.0` and `gcc-10.2.0` build alike, `gcc-9` does not), and
// falls back to the heavy-packages table and the priors when it has no history.
// Its learned state is plain data: exportEstimates()/importEstimates() for a
// durable store, and `observe` returns what changed so the shell persists it.
import { InvalidInputError } from "./errors.js";
import { DEFAULT_LEARNING, emptyLearned, fitModel, foldObservation, type LearningConfig } from "./estimate-fit.js";
import { DEFAULT_PRIORS, isFetch, priorModel, type PriorDefaults } from "./estimate-priors.js";
import {
  durationAt,
  memoryAt,
  type BuildObservation,
  type CoreSample,
  type Estimate,
  type Estimator,
  type ImportResult,
  type LearnedEstimate,
  type MemoryFloor,
  type ResourceModel,
} from "./estimator.js";
import { DEFAULT_HEAVY_PACKAGES, HeavyTable, type HeavyPackage } from "./heavy-packages.js";
import type { DrvNode } from "./types.js";

/**
 * The version family: the major version (`10.3.0` -> `10`), or major.minor
 * for 0.x releases, whose minor bumps are the big ones. Versions without a
 * number are their own family.
 */
export function versionFamily(version: string): string {
  const m = /^\D*?(\d+)(?:\.(\d+))?/.exec(version);
  if (m === null) return version;
  return m[1] === "0" && m[2] !== undefined ? `0.${m[2]}` : String(Number(m[1]));
}

/** The key learned estimates are stored under: `pname@family` (just `pname` when there is no version). */
export function estimateKey(pname: string, version: string): string {
  const family = versionFamily(version);
  return family === "" ? pname : `${pname}@${family}`;
}

/** Prefix of the keys of fixed-output and builtin derivations (fetches). */
export const FETCH_KEY_PREFIX = "fetch:";

/**
 * The key `node` learns under. Fetches get their own (`fetch:perl@5`): the
 * tarball `perl-5.30.3.tar.gz` parses to pname perl, and a download's few MB
 * must never become perl's build history. (Nix names contain no ':'.)
 */
export function estimateKeyOf(node: DrvNode): string {
  const key = estimateKey(node.pname, node.version);
  return isFetch(node) ? FETCH_KEY_PREFIX + key : key;
}

/** `key` made safe for a NATS KV key: bytes outside [A-Za-z0-9_-] become `=XX` (UTF-8 hex). */
export function estimateStoreKey(key: string): string {
  let out = "";
  for (const byte of new TextEncoder().encode(key)) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9_-]/.test(ch) ? ch : `=${byte.toString(16).padStart(2, "0")}`;
  }
  return out;
}

/** Options of a LearnedEstimator. */
export interface LearnedEstimatorOptions {
  /** Heavy-packages table (default: the built-in one; see loadHeavyTable for operator overrides). */
  heavy?: readonly HeavyPackage[];
  priors?: PriorDefaults;
  learning?: Partial<LearningConfig>;
  /**
   * Cores the scalar memoryBytes/durationMs of an Estimate are given at: what a
   * typical worker gives one build. Priority weighs durations at this many, so
   * on 1-core workers a 2-core figure would rank builds that scale well too low.
   */
  referenceCores?: number;
}

/** Learns per pname + version family; falls back to the heavy table, big-parallel, fetch/local and a default. */
export class LearnedEstimator implements Estimator {
  private readonly learned = new Map<string, LearnedEstimate>();
  /** Bumped per key whenever its learned state changes; a memoised estimate of an older revision is stale. */
  private readonly revisions = new Map<string, number>();
  /** The dispatch and backup-copy passes ask for the same nodes on every event: fitting each time dominated the simulator's profile. */
  private readonly memo = new WeakMap<DrvNode, { key: string; revision: number; estimate: Estimate }>();
  private readonly heavy: HeavyTable;
  private readonly priors: PriorDefaults;
  private readonly learning: LearningConfig;
  private readonly referenceCores: number;

  constructor(opts: LearnedEstimatorOptions = {}) {
    this.heavy = new HeavyTable(opts.heavy ?? DEFAULT_HEAVY_PACKAGES);
    this.priors = opts.priors ?? DEFAULT_PRIORS;
    this.learning = { ...DEFAULT_LEARNING, ...opts.learning };
    this.referenceCores = Math.max(1, Math.floor(opts.referenceCores ?? 2));
  }

  /** The model of `node`: learned history over its prior. */
  model(node: DrvNode): ResourceModel {
    const prior = priorModel(node, this.heavy, this.priors);
    return fitModel(prior, this.learned.get(estimateKeyOf(node)), this.learning);
  }

  /** Needs of `node`, with scalars at the reference core count. */
  estimate(node: DrvNode): Estimate {
    const hit = this.memo.get(node);
    if (hit !== undefined && hit.revision === (this.revisions.get(hit.key) ?? 0)) return hit.estimate;
    const key = hit?.key ?? estimateKeyOf(node);
    const model = this.model(node);
    const estimate: Estimate = Object.freeze({ memoryBytes: memoryAt(model, this.referenceCores), durationMs: durationAt(model, this.referenceCores), model });
    this.memo.set(node, { key, revision: this.revisions.get(key) ?? 0, estimate });
    return estimate;
  }

  private touch(key: string): void {
    this.revisions.set(key, (this.revisions.get(key) ?? 0) + 1);
  }

  /** Folds one attempt in; returns a copy of the key's learned state when it changed, else null. */
  observe(node: DrvNode, obs: BuildObservation): LearnedEstimate | null {
    const key = estimateKeyOf(node);
    const entry = this.learned.get(key) ?? emptyLearned(key);
    if (!foldObservation(entry, obs, this.learning)) return null;
    this.learned.set(key, entry);
    this.touch(key);
    return copyLearned(entry);
  }

  /** The learned state of one key, if any (a copy). */
  learnedFor(key: string): LearnedEstimate | undefined {
    const e = this.learned.get(key);
    return e === undefined ? undefined : copyLearned(e);
  }

  /** Every learned entry as plain JSON-able data, sorted by key. */
  exportEstimates(): LearnedEstimate[] {
    return [...this.learned.values()].map(copyLearned).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /**
   * Loads stored entries (replacing same-key ones). A malformed entry is
   * skipped and reported, never fatal: a bad record must not stop the farm.
   */
  importEstimates(values: readonly unknown[]): ImportResult {
    const result: ImportResult = { imported: 0, rejected: [] };
    values.forEach((v, index) => {
      try {
        const e = checkLearned(v);
        this.learned.set(e.key, e);
        this.touch(e.key);
        result.imported++;
      } catch (err) {
        result.rejected.push({ index, reason: (err as Error).message });
      }
    });
    return result;
  }
}

function copyLearned(e: LearnedEstimate): LearnedEstimate {
  return { ...e, samples: e.samples.map((s) => ({ ...s })), oomFloors: e.oomFloors.map((f) => ({ ...f })) };
}

function num(o: Record<string, unknown>, k: string, min: number, where: string): number {
  const v = o[k];
  if (typeof v !== "number" || !Number.isFinite(v) || v < min) throw new InvalidInputError(`${where}: ${k} must be a number >= ${min}`);
  return v;
}

function objectAt(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new InvalidInputError(`${where}: expected an object`);
  return v as Record<string, unknown>;
}

function listAt(v: unknown, where: string, max: number): unknown[] {
  if (!Array.isArray(v) || v.length > max) throw new InvalidInputError(`${where}: expected a list of at most ${max}`);
  return v;
}

/** Validates one stored entry (throws InvalidInputError saying what is wrong). */
export function checkLearned(v: unknown): LearnedEstimate {
  const o = objectAt(v, "estimate");
  if (o.format !== 1) throw new InvalidInputError(`estimate: unsupported format ${String(o.format)}`);
  if (typeof o.key !== "string" || o.key === "") throw new InvalidInputError("estimate: key must be a non-empty string");
  const where = `estimate ${o.key}`;
  const samples: CoreSample[] = listAt(o.samples, `${where}: samples`, 64).map((raw) => {
    const s = objectAt(raw, `${where}: sample`);
    return {
      cores: Math.floor(num(s, "cores", 1, where)),
      peakBytes: num(s, "peakBytes", 0, where),
      durationMs: num(s, "durationMs", 0, where),
      n: Math.floor(num(s, "n", 1, where)),
    };
  });
  const oomFloors: MemoryFloor[] = listAt(o.oomFloors, `${where}: oomFloors`, 64).map((raw) => {
    const f = objectAt(raw, `${where}: floor`);
    return { cores: Math.floor(num(f, "cores", 1, where)), bytes: num(f, "bytes", 0, where) };
  });
  return {
    format: 1,
    key: o.key,
    samples: samples.sort((a, b) => a.cores - b.cores),
    oomFloors,
    outputBytes: num(o, "outputBytes", 0, where),
    observations: Math.floor(num(o, "observations", 0, where)),
    updatedAtMs: num(o, "updatedAtMs", 0, where),
  };
}
