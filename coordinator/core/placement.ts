// Placement: which worker takes a ready derivation, with how many cores and
// how much memory. The scheduler only asks the policy; smarter policies
// (memory estimates, cores chosen to fit RAM, remaining-lifetime checks) plug
// in here without changing it.
import type { DrvRecord } from "./drv-state.js";
import type { Estimate } from "./estimator.js";
import { BUILTIN_SYSTEM, type DrvNode, type WorkerInfo } from "./types.js";
import type { WorkerRecord } from "./worker-state.js";

/** A worker the derivation could go to, with what its leases already reserve (see LeaseIndex). */
export interface WorkerCandidate {
  worker: WorkerRecord;
  /** Builds it runs. */
  running: number;
  reservedCores: number;
  reservedMemoryBytes: number;
  /** Estimated disk of the builds it runs (0 when absent). */
  reservedDiskBytes?: number;
}

/** Everything a policy may look at to place one ready derivation. */
export interface PlacementRequest {
  now: number;
  node: DrvNode;
  record: DrvRecord;
  estimate: Estimate;
  /** Active workers with a free slot that run the derivation's platform. */
  candidates: readonly WorkerCandidate[];
  /** Active workers of that platform without a free slot now (for decisions to wait for one); may be absent. */
  busy?: readonly WorkerCandidate[];
  /**
   * Every active worker of that platform the record may go to, free or busy, without its load: for facts
   * of the fleet (its largest worker, its longest lifetime). Absent: read from `candidates` and `busy`.
   */
  fleet?: readonly WorkerRecord[];
  /** When placement first passed this ready derivation over (it has waited since); absent when it has not. */
  passedOverSinceMs?: number;
}

/** A policy's answer: a worker and its grant, or why nothing fits now. */
export type PlacementDecision =
  | { ok: true; workerId: string; cores: number; memoryReservationBytes: number; diskReservationBytes?: number }
  | { ok: false; reason: string };

/** Chooses a worker for a ready derivation. Must be pure and deterministic. */
export interface PlacementPolicy {
  readonly name: string;
  /** Places `req.node` on one of `req.candidates`, or says why none fits. */
  place(req: PlacementRequest): PlacementDecision;
}

/** Hard constraint every policy shares: the worker runs the system and has every required feature. */
export function platformMatches(info: WorkerInfo, system: string, requiredFeatures: readonly string[]): boolean {
  // builtin derivations (builtin:fetchurl) run inside Nix itself, on any worker.
  if (system !== BUILTIN_SYSTEM && !info.systems.includes(system)) return false;
  // A loop, not every(): asked for every worker on every dispatch pass, and a closure each time added up.
  for (const f of requiredFeatures) if (!info.features.includes(f)) return false;
  return true;
}

/** A map key for the workers of one platform, as a build asks for it (the features as the build lists them). */
export function fleetKey(system: string, features: readonly string[]): string {
  return `${system}\0${features.join(",")}`;
}

/** True when the candidate takes new work: active with a free build slot (and not waiting out a declined assignment). */
export function hasFreeSlot(c: Pick<WorkerCandidate, "worker" | "running">): boolean {
  return c.worker.state === "active" && c.worker.declinedWork !== true && c.running < c.worker.info.maxBuilds;
}

/** Clamps `cores` to the record's OOM-driven cap (if any) and to at least 1. */
export function applyCoreLimit(cores: number, record: DrvRecord): number {
  const capped = record.coreLimit > 0 ? Math.min(cores, record.coreLimit) : cores;
  return Math.max(1, Math.floor(capped));
}

/** Explains why no candidate fits, most specific reason first. */
export function noFitReason(node: DrvNode, candidates: readonly WorkerCandidate[]): string {
  const free = candidates.filter((c) => hasFreeSlot(c));
  if (free.length === 0) return "no active worker has a free slot";
  const sys = free.filter((c) => platformMatches(c.worker.info, node.system, []));
  if (sys.length === 0) return `no free worker builds system ${node.system}`;
  return `no free worker has features [${node.requiredSystemFeatures.join(", ")}]`;
}

/**
 * simple-fit: any active worker with a free slot that matches system and
 * features; the least loaded wins (ties by workerId, so runs are repeatable).
 * Each slot gets an equal share of the worker's cores and memory.
 */
export class SimpleFit implements PlacementPolicy {
  readonly name = "simple-fit";

  /** Places on the least-loaded fitting worker. */
  place(req: PlacementRequest): PlacementDecision {
    let best: WorkerCandidate | null = null;
    for (const c of req.candidates) {
      const w = c.worker;
      if (!hasFreeSlot(c) || !platformMatches(w.info, req.node.system, req.node.requiredSystemFeatures)) continue;
      if (best === null || loadOf(c) < loadOf(best) || (loadOf(c) === loadOf(best) && w.info.workerId < best.worker.info.workerId)) {
        best = c;
      }
    }
    if (best === null) return { ok: false, reason: noFitReason(req.node, req.candidates) };
    const info = best.worker.info;
    const slots = Math.max(1, info.maxBuilds);
    return {
      ok: true,
      workerId: info.workerId,
      cores: applyCoreLimit(Math.floor(info.cores / slots), req.record),
      memoryReservationBytes: Math.floor(info.memoryBytes / slots),
    };
  }
}

function loadOf(c: WorkerCandidate): number {
  return c.running / Math.max(1, c.worker.info.maxBuilds);
}
