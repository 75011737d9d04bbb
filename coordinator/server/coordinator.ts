// The coordinator shell: it feeds worker and CLI events into the pure
// Scheduler, persists the resulting state changes to the FarmStore *before*
// any message leaves (so no worker ever holds a lease the store doesn't know),
// then delivers messages and publishes events. All core calls run one at a
// time through a serial queue, in arrival order.
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { status } from "@grpc/grpc-js";
import type { Scheduler } from "../core/scheduler.js";
import type { Effect } from "../core/effects.js";
import type { Clock } from "../core/clock.js";
import { holdsLease } from "../core/drv-state.js";
import type { BuildReport, DrvNode, DrvPath, Lease, WorkerInfo } from "../core/types.js";
import { SerialQueue, type FarmStore } from "../store/farm-store.js";
import type { CacheStorage } from "../cache/storage.js";
import { readValidNarInfo } from "../cache/http-server.js";
import { baseName, hashPart, mapLimit } from "../../proto/nix/mod.js";
import { assignmentToWire, PROTOCOL_VERSION } from "../../proto/convert/mod.js";
import { jobStatusToWire, workerViewToWire } from "./status-wire.js";
import type { FarmInfo, JobStatus, WorkerStatus } from "../../proto/gen/farm.js";
import type { HeartbeatInfo, WorkerHub, WorkerSession } from "./worker-service.js";
import type { FarmApi } from "./farm-service.js";
import { BuildLogs } from "./build-logs.js";
import { Persister } from "./persister.js";
import { mayAccess, type Principal } from "./auth.js";
import { checkNodesAgainstDrvs } from "./drv-check.js";
import type { OutputPublisher } from "../cache/staged-output.js";
import type { CoordinatorMetrics } from "../metrics.js";

/** Everything the shell needs; main.ts wires it. */
export interface CoordinatorDeps {
  scheduler: Scheduler;
  store: FarmStore;
  cache: CacheStorage;
  clock: Clock;
  logger: Logger;
  metrics?: CoordinatorMetrics;
  info: FarmInfo & { heartbeatIntervalMs: number };
  /** Called when the store says another coordinator wrote behind our back. */
  onFenced?: (err: Error) => void;
  /** Skip checking submitted nodes against their .drv files (load tests with no .drv files only). */
  trustSubmittedNodes?: boolean;
  /** Signs and publishes the staged outputs of accepted builds. */
  publisher: OutputPublisher;
}

const LOG_TAIL_LINES = 25;
const MAX_REMEMBERED_TAILS = 2000;

/** Implements the worker and CLI services on top of the scheduler. */
export class Coordinator implements WorkerHub, FarmApi {
  private readonly queue = new SerialQueue();
  private readonly sessions = new Map<string, WorkerSession>();
  private readonly watchers = new Set<() => void>();
  private readonly logs = new BuildLogs();
  private readonly tails = new Map<DrvPath, string[]>();
  private readonly persister: Persister;
  private tickQueued = false;
  private lastTickAtMs = 0;

  constructor(private readonly d: CoordinatorDeps) {
    const lossHoldMs = d.scheduler.config.heartbeatTimeoutMs;
    this.persister = new Persister(d.store, d.clock, d.logger, { lossHoldMs }, d.onFenced);
  }

  /** Runs one core event: compute, persist, then deliver. */
  private step(what: string, event: (now: number) => Effect[]): Promise<Effect[]> {
    return this.stepAfter(what, async () => undefined, event);
  }

  /** Like step, with an async `prepare` run in the same turn of the queue, so nothing changes between it and the event. */
  private stepAfter<T>(what: string, prepare: () => Promise<T>, event: (now: number, prepared: T) => Effect[]): Promise<Effect[]> {
    return this.queue.run(async () => {
      const prepared = await prepare();
      const effects = event(this.d.clock.now(), prepared);
      await this.persister.persist(what, effects);
      this.deliver(effects);
      return effects;
    });
  }

  private deliver(effects: Effect[]): void {
    let changed = false;
    for (const e of effects) {
      switch (e.kind) {
        case "assign": {
          const s = this.sessions.get(e.workerId);
          this.d.logger.info({ worker: e.workerId, drv: e.spec.lease.drvPath, epoch: e.spec.lease.epoch, cores: e.spec.cores, memoryLimit: e.spec.memoryLimitBytes }, "assigned");
          // With no session the lease simply expires at the worker's deadline and is requeued.
          s?.send({ msg: { $case: "assign", value: assignmentToWire(e.spec) } });
          break;
        }
        case "abort":
          this.d.logger.info({ worker: e.workerId, drv: e.lease.drvPath, epoch: e.lease.epoch, reason: e.reason }, "abort sent");
          this.sessions.get(e.workerId)?.send({ msg: { $case: "abort", value: { lease: e.lease, reason: e.reason } } });
          break;
        case "ack":
          if (!e.accepted) {
            this.d.metrics?.staleResults.inc();
            this.d.logger.warn({ worker: e.workerId, drv: e.lease.drvPath, epoch: e.lease.epoch, reason: e.reason }, "result rejected");
          } else {
            this.d.logger.info({ worker: e.workerId, drv: e.lease.drvPath, epoch: e.lease.epoch }, "result accepted");
          }
          this.sessions.get(e.workerId)?.send({ msg: { $case: "resultAck", value: { lease: e.lease, accepted: e.accepted, reason: e.reason } } });
          break;
        case "event":
          changed = true;
          this.countEvent(e.event);
          break;
      }
    }
    if (changed) for (const w of this.watchers) w();
  }

  private countEvent(ev: Extract<Effect, { kind: "event" }>["event"]): void {
    const m = this.d.metrics;
    if (ev.type === "worker.lost") {
      this.d.logger.warn({ worker: ev.workerId, requeued: ev.requeued.length }, "worker lost; its builds were requeued");
      this.logs.dropWorker(ev.workerId); // its attempts will never report
      m?.reassignments.inc({ reason: "worker-lost" }, ev.requeued.length);
    } else if (ev.type === "drv.hedged") {
      this.d.logger.info({ drv: ev.drvPath, epoch: ev.epoch, worker: ev.workerId }, "backup copy of a long build started");
      m?.hedges.inc({ event: "started" });
    } else if (ev.type === "drv.hedge-preempted") {
      this.d.logger.info({ drv: ev.drvPath, epoch: ev.epoch, worker: ev.workerId, for: ev.forDrvPath }, "backup copy stopped to free its worker");
      m?.hedges.inc({ event: "preempted" });
    } else if (ev.type === "worker.draining") {
      m?.reassignments.inc({ reason: "drain" }, ev.handedBack);
    } else if (ev.type === "job.finished") {
      this.d.logger.info({ job: ev.jobId, state: ev.state }, "job finished");
      m?.jobsFinished.inc({ state: ev.state });
    } else if (ev.type === "drv.state" && ev.to === "failed") {
      this.d.logger.info({ drv: ev.drvPath, reason: ev.reason }, "derivation failed");
    }
  }

  // ---------------------------------------------------------------- workers

  async join(session: WorkerSession, info: WorkerInfo, running: Lease[]): Promise<void> {
    const previous = this.sessions.get(info.workerId);
    if (previous && previous.sessionId !== session.sessionId) previous.close(status.ABORTED, "replaced by a newer connection of the same worker");
    this.sessions.set(info.workerId, session);
    session.send({
      msg: {
        $case: "welcome",
        value: { protocolVersion: PROTOCOL_VERSION, sessionId: session.sessionId, cacheUrl: this.d.info.cacheUrl, cachePublicKey: this.d.info.cachePublicKey, heartbeatIntervalMs: this.d.info.heartbeatIntervalMs, abort: [] },
      },
    });
    this.d.logger.info({ worker: info.workerId, cores: info.cores, memory: info.memoryBytes, systems: info.systems, running: running.length }, "worker joined");
    await this.step("join", (now) => this.d.scheduler.workerJoined(now, info, running));
  }

  async heartbeat(session: WorkerSession, hb: HeartbeatInfo): Promise<number> {
    const effects = await this.step("heartbeat", (now) => this.d.scheduler.heartbeat(now, session.workerId, hb));
    const ack = effects.find((e) => e.kind === "heartbeatAck");
    return ack && ack.kind === "heartbeatAck" ? ack.deadlineMs : this.d.clock.now() + this.d.info.heartbeatIntervalMs * 3;
  }

  logLines(session: WorkerSession, lease: Lease, lines: string[]): void {
    // Only the current holder of a lease may log for it: otherwise made-up leases could each fill a buffer.
    const rec = this.d.scheduler.drv(lease.drvPath)?.record;
    if (rec === undefined || !holdsLease(rec, session.workerId, lease.epoch)) return;
    this.logs.append(lease, session.workerId, lines);
  }

  async result(session: WorkerSession, report: BuildReport): Promise<void> {
    const { lease } = report;
    const current = this.d.scheduler.drv(lease.drvPath);
    const isCurrent = current !== undefined && holdsLease(current.record, session.workerId, lease.epoch);
    // Logs are buffered per worker: a report (even a stale one, e.g. the losing copy of a hedged build) ends its own.
    const lines = this.logs.take(lease, session.workerId);
    // A stale lease's log must not overwrite the current attempt's log.
    if (isCurrent && lines.length) {
      await this.d.cache.put("log", baseName(lease.drvPath), lines.join("\n") + "\n").catch((err) => this.d.logger.warn({ err }, "storing build log failed"));
      if (report.outcome !== "succeeded") this.rememberTail(lease.drvPath, lines.slice(-LOG_TAIL_LINES));
    }
    this.d.metrics?.builds.inc({ worker: session.workerId, outcome: report.outcome });
    if (report.outcome === "succeeded") {
      this.d.metrics?.buildSeconds.observe(report.durationMs / 1000);
      if (report.peakMemoryBytes) this.d.metrics?.buildPeakMemory.observe(report.peakMemoryBytes);
    }
    if (report.outcome === "out-of-memory") this.d.metrics?.oomKills.inc({ worker: session.workerId });
    if (isCurrent && !["succeeded", "failed"].includes(report.outcome)) this.d.metrics?.reassignments.inc({ reason: report.outcome });
    // Publishing and the scheduler's verdict share one turn of the queue: the lease can't change in between,
    // so only a result the scheduler accepts has its outputs signed.
    await this.stepAfter(
      "result",
      async () => {
        const now = this.d.scheduler.drv(lease.drvPath);
        const holds = now !== undefined && holdsLease(now.record, session.workerId, lease.epoch);
        return report.outcome === "succeeded" && holds ? this.publishOutputs(now.node, now.record.jobs, report, session.workerId) : false;
      },
      (now, verified) => {
        this.d.logger.info(
          { worker: session.workerId, drv: lease.drvPath, epoch: lease.epoch, outcome: report.outcome, verified, durationMs: report.durationMs, peakMemory: report.peakMemoryBytes, error: report.error || undefined },
          "build reported",
        );
        return this.d.scheduler.buildReported(now, session.workerId, report, verified);
      },
    );
  }

  /**
   * A derivation counts as built only when every output is published: staged by
   * this worker under this lease with the NAR hash it reported (then signed now),
   * or published by an accepted build before.
   */
  private async publishOutputs(node: DrvNode, jobs: string[], report: BuildReport, workerId: string): Promise<boolean> {
    const reported = new Map(report.outputs.map((o) => [o.path, o.narHash]));
    for (const path of Object.values(node.outputs)) {
      const outcome = await this.d.publisher.publish(path, report.lease, workerId, reported.get(path), jobs).catch((err) => {
        this.d.logger.error({ err, path }, "publishing an output failed");
        return "missing" as const;
      });
      if (outcome === "missing") return false;
    }
    return true;
  }

  private rememberTail(drvPath: DrvPath, lines: string[]): void {
    this.tails.delete(drvPath);
    this.tails.set(drvPath, lines);
    if (this.tails.size > MAX_REMEMBERED_TAILS) this.tails.delete(this.tails.keys().next().value!);
  }

  async drain(session: WorkerSession, reason: string, deadlineUnixMs: number, handedBack: Lease[]): Promise<void> {
    this.d.logger.info({ worker: session.workerId, reason, handedBack: handedBack.length }, "worker draining");
    await this.step("drain", (now) => this.d.scheduler.workerDraining(now, session.workerId, { handedBack, deadlineMs: deadlineUnixMs }));
  }

  disconnected(session: WorkerSession, why?: "revoked"): void {
    if (this.sessions.get(session.workerId)?.sessionId !== session.sessionId) return;
    this.sessions.delete(session.workerId);
    if (why === "revoked") {
      // A revoked worker cannot report back: its builds requeue now rather than at its deadline.
      this.d.logger.warn({ worker: session.workerId }, "worker token revoked; worker dropped");
      void this.step("revoked", (now) => this.d.scheduler.workerRevoked(now, session.workerId));
      return;
    }
    this.d.logger.info({ worker: session.workerId }, "worker disconnected");
    void this.step("disconnect", (now) => this.d.scheduler.workerDisconnected(now, session.workerId));
  }

  /**
   * Time passes: lost workers, then dispatch. Called by a timer; at most one
   * tick waits in the queue. Right after a store stall nobody is declared lost
   * (heartbeats were held up behind it): the tick does nothing then, and the
   * other events keep dispatching.
   */
  async tick(): Promise<Effect[]> {
    if (this.tickQueued) return [];
    this.tickQueued = true;
    try {
      return await this.step("tick", (now) => {
        this.tickQueued = false;
        // A tick long after the previous one means the coordinator itself was stuck (a 100k-node
        // submit, a blocked event loop): heartbeats still wait behind us, so nobody is lost in this one.
        const stuck = this.lastTickAtMs > 0 && now - this.lastTickAtMs > 2 * this.d.info.heartbeatIntervalMs + 1000;
        this.lastTickAtMs = now;
        return this.persister.holdsLosses(now) || stuck ? [] : this.d.scheduler.advanceTo(now);
      });
    } finally {
      this.tickQueued = false;
    }
  }

  // ---------------------------------------------------------------- CLI

  info(): FarmInfo {
    const { version, storeDir, cacheUrl, cachePublicKey } = this.d.info;
    return { version, storeDir, cacheUrl, cachePublicKey };
  }

  async submit(req: { nodes: DrvNode[]; roots: string[]; description: string; idempotencyKey: string; owner: string }): Promise<{ jobId: string; existing: boolean }> {
    const started = Date.now();
    const jobId = `j-${new Date(this.d.clock.now()).toISOString().slice(0, 10).replace(/-/g, "")}-${randomBytes(4).toString("hex")}`;
    try {
      if (!this.d.trustSubmittedNodes) await checkNodesAgainstDrvs(this.d.cache, req.nodes, this.d.logger);
      const cached = await this.cachedDerivations(req.nodes);
      const effects = await this.step("submit", (now) => this.d.scheduler.submitJob(now, { jobId, ...req, cachedDrvPaths: cached }));
      const accepted = effects.find((e) => e.kind === "jobAccepted");
      if (!accepted || accepted.kind !== "jobAccepted") throw new Error("scheduler accepted no job");
      this.d.metrics?.submits.inc({ result: accepted.existing ? "existing" : "accepted" });
      if (!accepted.existing) this.d.metrics?.cachedAtSubmit.inc(cached.size);
      this.d.logger.info({ job: accepted.jobId, owner: req.owner, existing: accepted.existing, nodes: req.nodes.length, cached: cached.size, ms: Date.now() - started, description: req.description }, "job submitted");
      return { jobId: accepted.jobId, existing: accepted.existing };
    } catch (err) {
      this.d.metrics?.submits.inc({ result: "rejected" });
      this.d.logger.warn({ owner: req.owner, nodes: req.nodes.length, err: (err as Error).message }, "submit refused");
      throw err;
    }
  }

  /** Derivations whose every output the cache already holds: they are never rebuilt. */
  private async cachedDerivations(nodes: DrvNode[]): Promise<Set<DrvPath>> {
    const cached = new Set<DrvPath>();
    await mapLimit(nodes, 64, async (n) => {
      if (this.d.scheduler.drv(n.drvPath)?.record.state === "done") return;
      for (const p of Object.values(n.outputs)) if (!(await this.d.cache.has("narinfo", hashPart(p)))) return;
      cached.add(n.drvPath);
    });
    return cached;
  }

  job(jobId: string, derivations: boolean, viewer: Principal): JobStatus | undefined {
    if (!mayAccess(viewer, this.d.scheduler.job(jobId)?.owner)) return undefined;
    const view = this.d.scheduler.jobStatus(jobId, this.d.clock.now(), { derivations });
    return view && jobStatusToWire(view, (p) => this.tails.get(p) ?? []);
  }

  jobs(viewer: Principal): JobStatus[] {
    return this.d.scheduler
      .jobs()
      .map((j) => this.job(j.jobId, false, viewer))
      .filter((j): j is JobStatus => j !== undefined);
  }

  workers(): WorkerStatus[] {
    return this.d.scheduler.workers(this.d.clock.now()).map(workerViewToWire);
  }

  async log(drvPath: string, viewer: Principal): Promise<string | undefined> {
    if (!/^[^/]+$/.test(baseName(drvPath))) return undefined;
    const wantedBy = this.d.scheduler.drv(drvPath)?.record.jobs ?? [];
    if (viewer.role !== "admin" && !wantedBy.some((j) => mayAccess(viewer, this.d.scheduler.job(j)?.owner))) return undefined;
    return (await this.d.cache.getText("log", baseName(drvPath))) ?? undefined;
  }

  async cancel(jobId: string, viewer: Principal): Promise<JobStatus | undefined> {
    const job = this.d.scheduler.job(jobId);
    if (!job || !mayAccess(viewer, job.owner)) return undefined;
    await this.step("cancel", (now) => this.d.scheduler.cancelJob(now, jobId));
    this.d.logger.info({ job: jobId, by: viewer.name }, "job cancelled");
    return this.job(jobId, false, viewer);
  }

  watch(_jobId: string, onChange: () => void): () => void {
    this.watchers.add(onChange);
    return () => this.watchers.delete(onChange);
  }

  /** Numbers for the Prometheus gauges. */
  gauges() {
    const drvs: Record<string, number> = {};
    const jobs: Record<string, number> = {};
    for (const j of this.d.scheduler.jobs()) jobs[j.state] = (jobs[j.state] ?? 0) + 1;
    const snapshotCounts = this.d.scheduler.stateCounts();
    Object.assign(drvs, snapshotCounts);
    const workers: Record<string, number> = {};
    const reserved: Record<string, number> = {};
    for (const w of this.d.scheduler.workers(this.d.clock.now())) {
      workers[w.state] = (workers[w.state] ?? 0) + 1;
      reserved[w.workerId] = w.running.reduce((sum, r) => sum + r.reservedMemoryBytes, 0);
    }
    return { derivationsByState: () => drvs, workersByState: () => workers, jobsByState: () => jobs, reservedMemoryByWorker: () => reserved };
  }
}
