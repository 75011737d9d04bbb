// The simulated machines: worker incarnations (a container from boot to its
// recycling) and the builds running on them. Kill times and per-attempt
// noise are keyed by worker / derivation, not drawn from one shared stream,
// so every policy meets the same recycling schedule and the same build costs
// (common random numbers make the comparison fair).
import type { AssignmentSpec, DrvNode, DrvPath, Lease, WorkerInfo } from "../core/types.js";
import type { BuildUsage } from "../core/worker-state.js";
import type { FleetSpec, WorkerGroup } from "./fleet.js";
import { exponential, keyedRandom } from "./sim-random.js";
import { exhaustionTimeMs, type WorkloadModel } from "./workload.js";

/** One attempt running on a simulated worker. */
export interface SimBuild {
  id: number;
  workerId: string;
  spec: AssignmentSpec;
  node: DrvNode;
  startMs: number;
  endMs: number;
  outcome: "succeeded" | "out-of-memory";
  /** True peak of the attempt (what it would reach unkilled). */
  truePeakBytes: number;
  /** Memory limit the attempt ran under (min of its reservation and the machine). */
  limitBytes: number;
  /** Memory ramps linearly from 0 to the true peak over this long. */
  rampMs: number;
  /** Cores it really computes on (granted, capped by the machine). */
  cpuCores: number;
}

/** One worker slot of the fleet across its incarnations. */
export interface SimWorker {
  id: string;
  group: WorkerGroup;
  features: string[];
  alive: boolean;
  incarnation: number;
  joinedAtMs: number;
  /** Uptime when it joined (ms). */
  uptimeAtJoinMs: number;
  killAtMs: number;
  killReason: "lifetime" | "random";
  /** When the last incarnation died (valid while not alive). */
  diedAtMs: number;
  /** Last deadline the scheduler gave it. */
  deadlineMs: number;
  builds: Map<DrvPath, SimBuild>;
}

/** Workers of `fleet`, not yet joined (ids w000, w001, ... in group order). */
export function createWorkers(fleet: FleetSpec): SimWorker[] {
  const out: SimWorker[] = [];
  for (const group of fleet.groups) {
    const features = group.memoryBytes >= fleet.bigParallelMinMemoryBytes ? ["big-parallel"] : [];
    for (let i = 0; i < group.count; i++) {
      out.push({
        id: `w${String(out.length).padStart(3, "0")}`,
        group,
        features,
        alive: false,
        incarnation: 0,
        joinedAtMs: 0,
        uptimeAtJoinMs: 0,
        killAtMs: Infinity,
        killReason: "lifetime",
        diedAtMs: 0,
        deadlineMs: 0,
        builds: new Map(),
      });
    }
  }
  return out;
}

/** Brings up the next incarnation at `now`; draws its uptime and when it will be killed. */
export function bootWorker(w: SimWorker, fleet: FleetSpec, seed: number, now: number): void {
  w.incarnation++;
  const rnd = keyedRandom(seed, `${w.id}#${w.incarnation}`);
  w.uptimeAtJoinMs = w.incarnation === 1 && fleet.initialUptime === "random" ? Math.floor(rnd.next() * fleet.maxLifetimeMs) : 0;
  const lifetimeLeft = fleet.maxLifetimeMs - w.uptimeAtJoinMs;
  const randomKill = fleet.randomKillMeanMs > 0 ? exponential(rnd, fleet.randomKillMeanMs) : Infinity;
  w.killReason = randomKill < lifetimeLeft ? "random" : "lifetime";
  w.killAtMs = now + Math.max(1, Math.floor(Math.min(lifetimeLeft, randomKill)));
  w.alive = true;
  w.joinedAtMs = now;
  w.builds.clear();
}

/** What the worker tells the scheduler when it joins. */
export function workerInfo(w: SimWorker, fleet: FleetSpec): WorkerInfo {
  return {
    workerId: w.id,
    softwareVersion: "sim",
    systems: [...fleet.systems],
    features: [...w.features],
    cores: w.group.cores,
    memoryBytes: w.group.memoryBytes,
    freeDiskBytes: 50 * 2 ** 30,
    storeDir: "/tmp/nix/store",
    uptimeSeconds: Math.floor(w.uptimeAtJoinMs / 1000),
    maxLifetimeSeconds: Math.floor(fleet.maxLifetimeMs / 1000),
    maxBuilds: w.group.maxBuilds,
  };
}

/** Uptime (s) of the current incarnation at `now`. */
export function uptimeSeconds(w: SimWorker, now: number): number {
  return Math.floor((w.uptimeAtJoinMs + now - w.joinedAtMs) / 1000);
}

/** Leases the worker is running. */
export function runningLeases(w: SimWorker): Lease[] {
  return [...w.builds.values()].map((b) => ({ ...b.spec.lease }));
}

/**
 * Starts the `attempt`-th attempt (1-based, counted per derivation) of `node`
 * on `w` as `spec` grants it; decides now whether and when it runs out of memory.
 */
export function startBuild(
  id: number,
  w: SimWorker,
  spec: AssignmentSpec,
  node: DrvNode,
  model: WorkloadModel,
  seed: number,
  now: number,
  attempt: number,
): SimBuild {
  // Keyed by attempt number (not epoch: two copies of a build with a backup copy share one): the same noise for the n-th attempt under every policy.
  const rnd = keyedRandom(seed, `${node.drvPath}#${attempt}`);
  const cost = model.attempt(node, spec.cores, w.group.cores, rnd);
  const machine = w.group.memoryBytes;
  const limitBytes = spec.memoryLimitBytes > 0 ? Math.min(spec.memoryLimitBytes, machine) : machine;
  const killAfter = exhaustionTimeMs(cost, model.profile(node).peakAt, limitBytes);
  const build: SimBuild = {
    id,
    workerId: w.id,
    spec,
    node,
    startMs: now,
    endMs: now + (killAfter ?? cost.durationMs),
    outcome: killAfter === null ? "succeeded" : "out-of-memory",
    truePeakBytes: cost.peakBytes,
    limitBytes,
    rampMs: Math.max(1, cost.durationMs * model.profile(node).peakAt),
    cpuCores: Math.max(1, Math.min(spec.cores, w.group.cores)),
  };
  w.builds.set(node.drvPath, build);
  return build;
}

/** Memory `b` holds at `now` (a linear ramp to its peak; it never passes its limit alive). */
export function memoryOf(b: SimBuild, now: number): number {
  return Math.round(Math.min(b.limitBytes, b.truePeakBytes * Math.min(1, (now - b.startMs) / b.rampMs)));
}

/** Memory the worker's running builds hold at `now`. */
export function memoryInUse(w: SimWorker, now: number): number {
  let used = 0;
  for (const b of w.builds.values()) used += memoryOf(b, now);
  return used;
}

/** Per running build, its memory now and its peak so far (the ramp only grows), as heartbeats carry it. */
export function buildUsage(w: SimWorker, now: number): BuildUsage[] {
  return [...w.builds.values()].map((b) => ({ lease: { ...b.spec.lease }, memoryBytes: memoryOf(b, now), peakMemoryBytes: memoryOf(b, now) }));
}
