// Learning from finished builds: folding one attempt into a key's learned
// state, and fitting the memory and duration models from it.
//  - Memory: weighted least squares of peak = base + perCore * cores over the
//    core counts seen, then lifted so the line covers every observation
//    (an underestimate costs an OOM kill; an overestimate only packing).
//  - Duration: weighted least squares of time = serial + parallel / cores.
//  - With one core count only, the prior's split is scaled to the observation.
import type { BuildObservation, CoreSample, LearnedEstimate, MemoryFloor, ResourceModel } from "./estimator.js";

/** Tunables of learning. */
export interface LearningConfig {
  /** An OOM-killed build needs at least this times its memory at the kill. */
  oomFactor: number;
  /** EWMA weight of a new peak above the current estimate (rises fast). */
  memoryRiseWeight: number;
  /** EWMA weight of a new peak below it (falls slowly). */
  memoryFallWeight: number;
  /** EWMA weight of a new duration and output size. */
  durationWeight: number;
  /** Disk need = max(prior, this times the outputs' size): a crude build-dir allowance. */
  diskPerOutputByte: number;
}

/** Default learning tunables. */
export const DEFAULT_LEARNING: LearningConfig = {
  oomFactor: 1.25,
  memoryRiseWeight: 0.7,
  memoryFallWeight: 0.2,
  durationWeight: 0.3,
  diskPerOutputByte: 4,
};

const MAX_SAMPLES = 16;
const MAX_FLOORS = 8;
/** Caps one sample's weight in a fit, so an old busy core count cannot drown a new one. */
const MAX_WEIGHT = 5;

/** An empty learned state for `key`. */
export function emptyLearned(key: string): LearnedEstimate {
  return { format: 1, key, samples: [], oomFloors: [], outputBytes: 0, observations: 0, updatedAtMs: 0 };
}

function ewma(current: number, x: number, weight: number): number {
  return current + weight * (x - current);
}

/**
 * Folds one attempt into `entry` (mutated). Successes teach memory, duration
 * and disk; an OOM kill sets a floor at its core count; other outcomes teach
 * nothing. Returns true when the entry changed.
 */
export function foldObservation(entry: LearnedEstimate, obs: BuildObservation, cfg: LearningConfig = DEFAULT_LEARNING): boolean {
  const cores = Math.max(1, Math.floor(obs.cores));
  const peak = obs.memoryNotMeasured ? 0 : obs.peakMemoryBytes;
  if (obs.outcome === "out-of-memory") {
    const killedAt = Math.max(peak, obs.memoryLimitBytes ?? 0);
    if (!(killedAt > 0)) return false;
    const bytes = Math.ceil(killedAt * cfg.oomFactor);
    const same = entry.oomFloors.find((f) => f.cores === cores);
    if (same !== undefined) same.bytes = Math.max(same.bytes, bytes);
    else entry.oomFloors.push({ cores, bytes });
    if (entry.oomFloors.length > MAX_FLOORS) entry.oomFloors.sort((a, b) => b.bytes - a.bytes).length = MAX_FLOORS;
  } else if (obs.outcome === "succeeded") {
    let s = entry.samples.find((x) => x.cores === cores);
    if (s === undefined) {
      s = { cores, peakBytes: 0, durationMs: 0, n: 0 };
      entry.samples.push(s);
    }
    // Not measured (or an old worker's 0): duration and disk are learned, memory keeps what it had.
    if (peak > 0) {
      const w = s.peakBytes === 0 ? 1 : peak > s.peakBytes ? cfg.memoryRiseWeight : cfg.memoryFallWeight;
      s.peakBytes = Math.round(ewma(s.peakBytes, peak, w));
    }
    if (obs.durationMs > 0) s.durationMs = Math.round(s.durationMs === 0 ? obs.durationMs : ewma(s.durationMs, obs.durationMs, cfg.durationWeight));
    s.n++;
    const out = obs.outputBytes ?? 0;
    if (out > 0) entry.outputBytes = Math.round(entry.outputBytes === 0 ? out : ewma(entry.outputBytes, out, cfg.durationWeight));
    // A success at `cores` shows what it takes there; floors at as many cores or fewer are superseded.
    // An unmeasured success says nothing about memory, so it supersedes none.
    if (peak > 0) entry.oomFloors = entry.oomFloors.filter((f) => f.cores > cores);
    if (entry.samples.length > MAX_SAMPLES) {
      entry.samples.sort((a, b) => b.n - a.n || a.cores - b.cores).length = MAX_SAMPLES;
    }
  } else {
    return false;
  }
  entry.samples.sort((a, b) => a.cores - b.cores);
  entry.observations++;
  if (obs.atMs !== undefined) entry.updatedAtMs = obs.atMs;
  return true;
}

interface Point {
  x: number;
  y: number;
  w: number;
}

/** Weighted least squares y = a + b x; null when x does not vary. */
function leastSquares(pts: readonly Point[]): { a: number; b: number } | null {
  let sw = 0;
  let sx = 0;
  let sy = 0;
  for (const p of pts) {
    sw += p.w;
    sx += p.w * p.x;
    sy += p.w * p.y;
  }
  const mx = sx / sw;
  const my = sy / sw;
  let cov = 0;
  let varx = 0;
  for (const p of pts) {
    cov += p.w * (p.x - mx) * (p.y - my);
    varx += p.w * (p.x - mx) ** 2;
  }
  if (varx <= 1e-12) return null;
  const b = cov / varx;
  return { a: my - b * mx, b };
}

function weightedMean(pts: readonly Point[], f: (p: Point) => number): number {
  let sw = 0;
  let s = 0;
  for (const p of pts) {
    sw += p.w;
    s += p.w * f(p);
  }
  return s / sw;
}

function fitMemory(prior: ResourceModel, samples: readonly CoreSample[]): { baseBytes: number; perCoreBytes: number } | null {
  const pts = samples.filter((s) => s.peakBytes > 0).map((s) => ({ x: s.cores, y: s.peakBytes, w: Math.min(s.n, MAX_WEIGHT) }));
  if (pts.length === 0) return null;
  const line = leastSquares(pts);
  let base: number;
  let perCore: number;
  if (line === null) {
    const priorAt = prior.baseBytes + prior.perCoreBytes * pts[0].x;
    const scale = priorAt > 0 ? pts[0].y / priorAt : 0;
    [base, perCore] = scale > 0 ? [prior.baseBytes * scale, prior.perCoreBytes * scale] : [pts[0].y, 0];
  } else if (line.b < 0) {
    // More cores never need less memory: what we saw is noise around a flat need.
    [base, perCore] = [Math.max(...pts.map((p) => p.y)), 0];
  } else if (line.a < 0) {
    [base, perCore] = [0, Math.max(...pts.map((p) => p.y / p.x))];
  } else {
    [base, perCore] = [line.a, line.b];
  }
  // Lift the line to cover every observation.
  for (const p of pts) base = Math.max(base, p.y - perCore * p.x);
  return { baseBytes: base, perCoreBytes: perCore };
}

function fitDuration(prior: ResourceModel, samples: readonly CoreSample[]): { serialMs: number; parallelMs: number } | null {
  const pts = samples.filter((s) => s.durationMs > 0).map((s) => ({ x: 1 / s.cores, y: s.durationMs, w: Math.min(s.n, MAX_WEIGHT) }));
  if (pts.length === 0) return null;
  const line = leastSquares(pts);
  if (line === null) {
    const priorAt = prior.serialMs + prior.parallelMs * pts[0].x;
    const scale = priorAt > 0 ? pts[0].y / priorAt : 0;
    return scale > 0 ? { serialMs: prior.serialMs * scale, parallelMs: prior.parallelMs * scale } : { serialMs: pts[0].y, parallelMs: 0 };
  }
  if (line.b < 0) return { serialMs: weightedMean(pts, (p) => p.y), parallelMs: 0 };
  if (line.a < 0) return { serialMs: 0, parallelMs: weightedMean(pts, (p) => p.y / p.x) };
  return { serialMs: line.a, parallelMs: line.b };
}

/** The model of a key: its learned state fitted over the no-history `prior`. */
export function fitModel(prior: ResourceModel, entry: LearnedEstimate | undefined, cfg: LearningConfig = DEFAULT_LEARNING): ResourceModel {
  if (entry === undefined) return prior;
  const memory = fitMemory(prior, entry.samples);
  const duration = fitDuration(prior, entry.samples);
  const floors: MemoryFloor[] = entry.oomFloors.map((f) => ({ ...f }));
  return {
    baseBytes: memory?.baseBytes ?? prior.baseBytes,
    perCoreBytes: memory?.perCoreBytes ?? prior.perCoreBytes,
    serialMs: duration?.serialMs ?? prior.serialMs,
    parallelMs: duration?.parallelMs ?? prior.parallelMs,
    diskBytes: Math.max(prior.diskBytes, Math.ceil(entry.outputBytes * cfg.diskPerOutputByte)),
    floors,
    source: memory !== null || duration !== null ? "history" : prior.source,
    measured: memory !== null || floors.length > 0,
    successes: entry.samples.reduce((n, x) => n + x.n, 0),
  };
}
