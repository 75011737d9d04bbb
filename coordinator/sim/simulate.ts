// The discrete-event simulator: drives the same Scheduler class as the live
// coordinator on virtual time. It joins the fleet, submits one job, turns
// `assign` effects into simulated builds (costs from the workload model),
// heartbeats every live worker, recycles containers (12 h lifetime plus
// random kills; a killed worker just goes silent, so the scheduler must
// notice through its deadline) and calls advanceTo at every event time.
// Only this shell reads the wall clock, to time the Scheduler calls.
import { VirtualClock } from "../core/clock.js";
import type { Effect } from "../core/effects.js";
import { InvalidInputError } from "../core/errors.js";
import type { BuildReport, DrvNode, DrvPath } from "../core/types.js";
import { EventQueue } from "./event-queue.js";
import type { FleetSpec } from "./fleet.js";
import type { PolicyInstance } from "./policies.js";
import { emptyResult, stuckReasons, type SimResult } from "./sim-result.js";
import {
  bootWorker,
  createWorkers,
  buildUsage,
  memoryInUse,
  runningLeases,
  startBuild,
  uptimeSeconds,
  workerInfo,
  type SimBuild,
  type SimWorker,
} from "./sim-fleet.js";
import type { WorkloadModel } from "./workload.js";

/** Inputs of one run. */
export interface SimulateOptions {
  nodes: DrvNode[];
  roots: DrvPath[];
  fleet: FleetSpec;
  policy: PolicyInstance;
  workload: WorkloadModel;
  seed: number;
  /** Default: two thirds of the scheduler's heartbeat timeout (fewer calls; a deadline is never missed). */
  heartbeatIntervalMs?: number;
  /** Stop as stalled after this long with no build running or finishing (default 24 h). */
  stallLimitMs?: number;
  /** Stop after this much simulated time (default 60 days). */
  maxSimMs?: number;
  /** Called at every attempt's start and end (for timelines; the run does not depend on it). */
  onTrace?: (e: SimTraceEvent) => void;
}

/** One line of an attempt's life, for timelines. */
export interface SimTraceEvent {
  atMs: number;
  kind: "start" | "succeeded" | "out-of-memory" | "lost" | "aborted";
  name: string;
  drvPath: string;
  workerId: string;
  cores: number;
  /** The worker's remaining lifetime at `atMs` as it reports it (ms), and when it will really die. */
  remainingMs: number;
  killInMs: number;
}

type SimEvent =
  | { kind: "buildEnd"; build: SimBuild }
  | { kind: "kill"; worker: SimWorker; incarnation: number }
  | { kind: "join"; worker: SimWorker }
  | { kind: "heartbeats" }
  | { kind: "giveUp"; workerId: string; build: SimBuild }
  | { kind: "wake" };

const JOB_ID = "sim";
const MAX_ANOMALIES = 20;

class Simulation {
  private readonly clock = new VirtualClock(0);
  private readonly queue = new EventQueue<SimEvent>();
  private readonly workers: SimWorker[];
  private readonly byId = new Map<string, SimWorker>();
  private readonly nodes = new Map<DrvPath, DrvNode>();
  private readonly r: SimResult;
  private nextBuildId = 1;
  private readonly attemptsOf = new Map<DrvPath, number>();
  private jobEnd: { state: string; atMs: number } | null = null;
  private lastActivityMs = 0;

  constructor(private readonly o: SimulateOptions) {
    for (const n of o.nodes) this.nodes.set(n.drvPath, n);
    this.workers = createWorkers(o.fleet);
    for (const w of this.workers) this.byId.set(w.id, w);
    this.r = emptyResult(0);
  }

  private get timeoutMs(): number {
    return this.o.policy.scheduler.config.heartbeatTimeoutMs;
  }

  run(): SimResult {
    const stallLimit = this.o.stallLimitMs ?? 24 * 3_600_000;
    const maxSim = this.o.maxSimMs ?? 60 * 24 * 3_600_000;
    for (const w of this.workers) this.join(w);
    this.call((s, now) =>
      s.submitJob(now, { jobId: JOB_ID, description: "simulation", roots: this.o.roots, nodes: this.o.nodes, idempotencyKey: "", cachedDrvPaths: new Set() }),
    );
    this.r.derivations = this.o.policy.scheduler.jobStatus(JOB_ID, 0)?.counts.total ?? this.o.nodes.length;
    this.queue.push(this.heartbeatInterval(), { kind: "heartbeats" });
    while (this.jobEnd === null) {
      const t = this.queue.peekTime();
      if (t === undefined) break;
      if (t > maxSim) return this.finish("time-limit", maxSim);
      if (t - this.lastActivityMs > stallLimit && this.running() === 0) return this.finish("stalled", this.lastActivityMs);
      this.clock.set(t);
      while (this.queue.peekTime() === t) this.handle(this.queue.pop()!.event);
      this.call((s, now) => s.advanceTo(now));
    }
    if (this.jobEnd === null) return this.finish("stalled", this.clock.now());
    return this.finish(this.jobEnd.state === "succeeded" ? "succeeded" : "failed", this.jobEnd.atMs);
  }

  private heartbeatInterval(): number {
    return this.o.heartbeatIntervalMs ?? Math.max(1, Math.floor((this.timeoutMs * 2) / 3));
  }

  private running(): number {
    let n = 0;
    for (const w of this.workers) n += w.builds.size;
    return n;
  }

  private finish(end: SimResult["end"], atMs: number): SimResult {
    const st = this.o.policy.scheduler.jobStatus(JOB_ID, atMs, { derivations: end !== "succeeded" });
    if (st !== undefined && end !== "succeeded") this.r.stuck = stuckReasons(st);
    this.r.end = end;
    this.r.makespanMs = atMs;
    this.r.failedDerivations = st?.counts.failed ?? 0;
    this.r.extraBuilds = this.r.buildsStarted - this.r.buildsSucceeded;
    return this.r;
  }

  private trace(kind: SimTraceEvent["kind"], b: SimBuild, now: number): void {
    const w = this.byId.get(b.workerId)!;
    this.o.onTrace?.({
      atMs: now,
      kind,
      name: b.node.name,
      drvPath: b.node.drvPath,
      workerId: b.workerId,
      cores: b.spec.cores,
      remainingMs: this.o.fleet.maxLifetimeMs - uptimeSeconds(w, now) * 1000,
      killInMs: w.killAtMs - now,
    });
  }

  private anomaly(msg: string): void {
    if (this.r.anomalies.length < MAX_ANOMALIES) this.r.anomalies.push(`t=${(this.clock.now() / 3_600_000).toFixed(2)}h ${msg}`);
  }

  /** Runs one Scheduler call, timing it, and carries out its effects. */
  private call(fn: (s: PolicyInstance["scheduler"], now: number) => Effect[]): void {
    const now = this.clock.now();
    const t0 = performance.now();
    const effects = fn(this.o.policy.scheduler, now);
    this.r.schedulerWallMs += performance.now() - t0;
    this.r.schedulerCalls++;
    for (const e of effects) this.apply(e, now);
  }

  private apply(e: Effect, now: number): void {
    switch (e.kind) {
      case "assign":
        return this.assign(e.workerId, e.spec, now);
      case "abort": {
        const b = this.byId.get(e.workerId)?.builds.get(e.lease.drvPath);
        if (b !== undefined && b.spec.lease.epoch === e.lease.epoch) {
          this.byId.get(e.workerId)!.builds.delete(e.lease.drvPath);
          this.r.abortedBuilds++;
          this.trace("aborted", b, now);
          this.r.busyCpuMs += (now - b.startMs) * b.cpuCores;
        }
        return;
      }
      case "heartbeatAck": {
        const w = this.byId.get(e.workerId);
        if (w !== undefined) w.deadlineMs = e.deadlineMs;
        return;
      }
      case "event":
        if (e.event.type === "job.finished" && e.event.jobId === JOB_ID) this.jobEnd = { state: e.event.state, atMs: now };
        if (e.event.type === "worker.lost") this.workerLost(e.event.workerId, now);
        return;
      default:
        return;
    }
  }

  private assign(workerId: string, spec: Parameters<typeof startBuild>[2], now: number): void {
    const w = this.byId.get(workerId);
    const node = this.nodes.get(spec.lease.drvPath);
    if (w === undefined || node === undefined) return this.anomaly(`assign to unknown worker ${workerId} or drv ${spec.lease.drvPath}`);
    if (!w.alive) {
      // The scheduler cannot know yet: the lease is lost until the worker's deadline passes.
      this.r.assignsToDeadWorkers++;
      if (this.o.policy.hydra !== null) this.hydraFailed(node.drvPath, this.noticeTime(w, now));
      return;
    }
    if (w.builds.size >= w.group.maxBuilds) this.anomaly(`${workerId} got a build beyond its ${w.group.maxBuilds} slot(s)`);
    const attempt = (this.attemptsOf.get(node.drvPath) ?? 0) + 1;
    this.attemptsOf.set(node.drvPath, attempt);
    const b = startBuild(this.nextBuildId++, w, spec, node, this.o.workload, this.o.seed, now, attempt);
    this.lastActivityMs = now;
    if (this.o.policy.hydra?.exhausted(node.drvPath)) {
      // Hydra would have failed this step instead of starting it: report that so the core fails it with its dependents.
      this.queue.push(now, { kind: "giveUp", workerId, build: b });
      return;
    }
    this.r.buildsStarted++;
    this.trace("start", b, now);
    this.queue.push(b.endMs, { kind: "buildEnd", build: b });
  }

  private workerLost(workerId: string, now: number): void {
    const w = this.byId.get(workerId);
    if (w !== undefined && w.alive) this.anomaly(`scheduler declared live worker ${workerId} lost`);
    else if (w !== undefined) {
      this.r.deathsNoticed++;
      this.r.noticeDelayMs += now - w.diedAtMs;
    }
  }

  private hydraFailed(drvPath: DrvPath, now: number): void {
    const at = this.o.policy.hydra!.failed(drvPath, now);
    if (at !== null) this.queue.push(at, { kind: "wake" });
  }

  private handle(ev: SimEvent): void {
    const now = this.clock.now();
    switch (ev.kind) {
      case "buildEnd":
        return this.buildEnd(ev.build, now);
      case "giveUp":
        return this.giveUp(ev.workerId, ev.build, now);
      case "kill":
        return this.kill(ev.worker, ev.incarnation, now);
      case "join":
        return this.join(ev.worker);
      case "heartbeats":
        for (const w of this.workers) if (w.alive) this.heartbeat(w, now);
        this.queue.push(now + this.heartbeatInterval(), { kind: "heartbeats" });
        return;
      case "wake":
        return; // advanceTo follows every event time
    }
  }

  private current(b: SimBuild): boolean {
    return this.byId.get(b.workerId)?.builds.get(b.node.drvPath) === b;
  }

  private report(b: SimBuild, now: number, outcome: BuildReport["outcome"], peak: number, error: string): void {
    if (outcome === "succeeded" || outcome === "out-of-memory") this.trace(outcome, b, now);
    this.byId.get(b.workerId)!.builds.delete(b.node.drvPath);
    this.r.busyCpuMs += (now - b.startMs) * b.cpuCores;
    this.lastActivityMs = now;
    const report: BuildReport = {
      lease: { ...b.spec.lease },
      outcome,
      outputs: outcome === "succeeded"
        ? Object.entries(b.spec.outputs).map(([name, path]) => ({ name, path, narHash: "sha256:sim", narSize: 1 }))
        : [],
      durationMs: now - b.startMs,
      peakMemoryBytes: peak,
      cores: b.spec.cores,
      error,
    };
    this.call((s, t) => {
      const effects = s.buildReported(t, b.workerId, report, outcome === "succeeded");
      for (const e of effects) {
        if (e.kind === "ack" && e.workerId === b.workerId && !e.accepted) this.anomaly(`report of ${b.node.name} rejected: ${e.reason}`);
      }
      return effects;
    });
  }

  private buildEnd(b: SimBuild, now: number): void {
    if (!this.current(b)) return; // aborted or its worker died
    if (b.outcome === "succeeded") {
      this.r.buildsSucceeded++;
      return this.report(b, now, "succeeded", b.truePeakBytes, "");
    }
    this.r.oomKills++;
    this.r.oomCpuMs += (now - b.startMs) * b.cpuCores;
    if (this.o.policy.hydra !== null) this.hydraFailed(b.node.drvPath, now);
    this.report(b, now, "out-of-memory", b.limitBytes, `killed at the ${Math.round(b.limitBytes / 2 ** 20)} MiB memory limit`);
  }

  private giveUp(workerId: string, b: SimBuild, now: number): void {
    if (!this.current(b)) return;
    const used = this.o.policy.hydra!.retriesUsed(b.node.drvPath);
    this.report(b, now, "failed", 0, `hydra-like: gave up after ${used - 1} retries`);
  }

  private kill(w: SimWorker, incarnation: number, now: number): void {
    if (!w.alive || w.incarnation !== incarnation) return;
    for (const b of w.builds.values()) {
      // Hydra counts a lost builder's step as a failed attempt once it notices (its backoff starts then).
      if (this.o.policy.hydra !== null) this.hydraFailed(b.node.drvPath, this.noticeTime(w, now));
      this.r.recycleLostBuilds++;
      this.trace("lost", b, now);
      this.r.recycleLostCpuMs += (now - b.startMs) * b.cpuCores;
      this.r.busyCpuMs += (now - b.startMs) * b.cpuCores;
    }
    w.builds.clear();
    w.alive = false;
    w.diedAtMs = now;
    // Silent: no disconnect, no drain. The scheduler learns only from the missed deadline.
    this.queue.push(this.noticeTime(w, now), { kind: "wake" });
    this.queue.push(now + this.o.fleet.bootDelayMs, { kind: "join", worker: w });
  }

  /** When the scheduler will declare dead `w` lost: just past its deadline (a wake event is queued there). */
  private noticeTime(w: SimWorker, now: number): number {
    return Math.max(now, w.deadlineMs) + 1;
  }

  private join(w: SimWorker): void {
    const now = this.clock.now();
    bootWorker(w, this.o.fleet, this.o.seed, now);
    this.r.workerIncarnations++;
    w.deadlineMs = now + this.timeoutMs;
    this.queue.push(w.killAtMs, { kind: "kill", worker: w, incarnation: w.incarnation });
    this.call((s, t) => s.workerJoined(t, workerInfo(w, this.o.fleet), []));
  }

  private heartbeat(w: SimWorker, now: number): void {
    const hb = {
      freeMemoryBytes: Math.max(0, w.group.memoryBytes - memoryInUse(w, now)),
      freeDiskBytes: 50 * 2 ** 30,
      uptimeSeconds: uptimeSeconds(w, now),
      running: runningLeases(w),
      usage: buildUsage(w, now),
    };
    try {
      this.call((s, t) => s.heartbeat(t, w.id, hb));
    } catch (err) {
      if (!(err instanceof InvalidInputError)) throw err;
      // A real worker reconnects and rejoins with what it runs.
      this.anomaly(`heartbeat of live ${w.id} refused (${err.message}); rejoining`);
      this.call((s, t) => s.workerJoined(t, { ...workerInfo(w, this.o.fleet), uptimeSeconds: hb.uptimeSeconds }, hb.running));
    }
  }
}

/** Runs one simulation to the end of the job (or a stall / the time limit). */
export function simulate(opts: SimulateOptions): SimResult {
  return new Simulation(opts).run();
}
