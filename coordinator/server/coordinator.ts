// The coordinator shell: it feeds worker and CLI events into the pure
// Scheduler and wires the parts that carry out what comes back: the effect
// runner (one event at a time, persisted before delivery), the session
// registry, output checking, log tails, job ids and the shell's metrics.
import type { Logger } from "pino";
import type { Scheduler } from "../core/scheduler.js";
import { effectsOf, type Effect, type EffectOf } from "../core/effects.js";
import type { Clock } from "../core/clock.js";
import { holdsLease } from "../core/drv-state.js";
import type { BuildReport, DrvNode, DrvPath, Lease, WorkerInfo } from "../core/types.js";
import type { FarmStore } from "../store/farm-store.js";
import type { CacheStorage } from "../cache/storage.js";
import type { OutputPublisher } from "../cache/staged-output.js";
import type { InlineOutputStager } from "../cache/inline-output.js";
import type { HeldNar } from "../cache/upload.js";
import { baseName, hashPart, mapLimit } from "../../proto/nix/mod.js";
import { PROTOCOL_VERSION } from "../../proto/convert/mod.js";
import { jobStatusToWire, workerViewToWire } from "./status-wire.js";
import type { FarmInfo, JobStatus, WorkerStatus } from "../../proto/gen/farm.js";
import type { HeartbeatInfo } from "../core/worker-state.js";
import type { WorkerHub, WorkerSession } from "./worker-service.js";
import type { FarmApi } from "./farm-service.js";
import { BuildLogs } from "./build-logs.js";
import { SessionRegistry } from "./session-registry.js";
import { Persister } from "./persister.js";
import type { CoordinatorMetrics, GaugeSource } from "../metrics.js";
import { EffectRunner, workerMessage } from "./effect-runner.js";
import { LogTails } from "./log-tails.js";
import { acceptOutputs, type OutputDecision } from "./output-check.js";
import { mayAccess, type Principal } from "./auth.js";
import { checkFixedOutput, checkNodesAgainstDrvs } from "./drv-check.js";
import type { LeaseCredentials } from "./lease-credentials.js";
import { newJobId } from "./job-ids.js";
import { countEvent, gaugeSource } from "./shell-metrics.js";
import type { PackagePublishing, PublishAnswer } from "./package-publishing.js";
import type { PublishRequest, PublishSpec } from "../../proto/convert/mod.js";

/** Nodes plus edges the scheduler admits per step of a submit: a few ms of work, so a 100k-node submit never holds the loop for long. */
const SUBMIT_SLICE = 5000;

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
  /** Stages the outputs a build report carries inline, as their uploads would be. */
  inlineOutputs: InlineOutputStager;
  /** Mints each assignment's lease-scoped upload credential (absent: assignments carry none). */
  credentials?: LeaseCredentials;
  /** Publishes succeeded jobs' names in the package index (absent: no index). */
  packages?: PackagePublishing;
}

/** Implements the worker and CLI services on top of the scheduler. */
export class Coordinator implements WorkerHub, FarmApi {
  private readonly sessions = new SessionRegistry();
  private readonly watchers = new Set<() => void>();
  private readonly logs = new BuildLogs();
  private readonly tails = new LogTails();
  private readonly persister: Persister;
  private readonly runner: EffectRunner;
  private tickQueued = false;
  private lastTickAtMs = 0;

  constructor(private readonly d: CoordinatorDeps) {
    const lossHoldMs = d.scheduler.config.heartbeatTimeoutMs;
    this.persister = new Persister(d.store, d.clock, d.logger, { lossHoldMs }, d.onFenced);
    this.runner = new EffectRunner(d.clock, this.persister, (effects) => this.deliver(effects), (what, part, ms) =>
      d.logger.warn({ what, part, ms: Math.round(ms) }, `a ${what} event held the event loop ${Math.round(ms)} ms`),
    );
  }

  /** Runs one core event: compute, persist, then deliver (what `first` leaves of the effects, after it ran). */
  private step(what: string, event: (now: number) => Effect[], first?: (effects: Effect[]) => Effect[]): Promise<Effect[]> {
    return this.runner.step(what, event, first);
  }

  /**
   * For shutdown, once the servers are closed: lets the events already queued
   * (the disconnects of closing streams) persist for up to `graceMs`, then
   * stops retrying writes, so a store about to close can't hold the process.
   */
  async quiesce(graceMs = 5000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.runner.idle(), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    this.persister.stop();
    this.d.publisher.stop();
  }

  private deliver(effects: Effect[]): void {
    let changed = false;
    for (const e of effects) {
      if (e.kind === "assign") {
        this.d.logger.info({ worker: e.workerId, drv: e.spec.lease.drvPath, epoch: e.spec.lease.epoch, cores: e.spec.cores, memoryLimit: e.spec.memoryLimitBytes }, "assigned");
      } else if (e.kind === "abort") {
        this.d.logger.info({ worker: e.workerId, drv: e.lease.drvPath, epoch: e.lease.epoch, reason: e.reason }, "abort sent");
      } else if (e.kind === "ack" && !e.accepted) {
        this.d.metrics?.staleResults.inc();
        this.d.logger.warn({ worker: e.workerId, drv: e.lease.drvPath, epoch: e.lease.epoch, reason: e.reason }, "result rejected");
      } else if (e.kind === "ack") {
        this.d.logger.info({ worker: e.workerId, drv: e.lease.drvPath, epoch: e.lease.epoch }, "result accepted");
      } else if (e.kind === "event") {
        changed = true;
        if (e.event.type === "worker.lost") this.logs.dropWorker(e.event.workerId); // its attempts will never report
        countEvent(e.event, this.d.metrics, this.d.logger);
        // After the job's record is persisted (effects are delivered after persisting): a restart finds it in catchUp.
        if (e.event.type === "job.finished" && e.event.state === "succeeded") void this.d.packages?.jobFinished(e.event.jobId);
      }
      // With no session an assignment's lease simply expires at the worker's deadline and is requeued.
      const out = workerMessage(e);
      if (out !== null && e.kind === "assign" && out.msg.msg?.$case === "assign" && this.d.credentials) {
        // Good for the build's time limit (a day when it has none) and an hour more for the uploads.
        const expiresAtMs = this.d.clock.now() + (e.spec.timeoutMs || 24 * 3600_000) + 3600_000;
        out.msg.msg.value.uploadCredential = this.d.credentials.mint({ lease: e.spec.lease, workerId: e.workerId, expiresAtMs });
      }
      if (out !== null) this.sessions.send(out.workerId, out.msg);
    }
    if (changed) for (const w of this.watchers) w();
  }

  // ---------------------------------------------------------------- workers

  async join(session: WorkerSession, info: WorkerInfo, running: Lease[]): Promise<void> {
    this.sessions.register(session);
    this.d.logger.info({ worker: info.workerId, cores: info.cores, memory: info.memoryBytes, systems: info.systems, running: running.length }, "worker joined");
    // The Welcome goes out once the join is settled: it names the running builds the worker must abort (stale leases), before any new work.
    await this.step("join", (now) => this.d.scheduler.workerJoined(now, info, running), (effects) => {
      const abort = effectsOf(effects, "abort").filter((e) => e.workerId === info.workerId);
      for (const e of abort) this.d.logger.info({ worker: e.workerId, drv: e.lease.drvPath, epoch: e.lease.epoch, reason: e.reason }, "abort sent in Welcome");
      const { cacheUrl, cachePublicKey, heartbeatIntervalMs } = this.d.info;
      this.sessions.welcome(session, {
        msg: {
          $case: "welcome",
          value: { protocolVersion: PROTOCOL_VERSION, sessionId: session.sessionId, cacheUrl, cachePublicKey, heartbeatIntervalMs, abort: abort.map((e) => e.lease) },
        },
      });
      return effects.filter((e) => !(abort as Effect[]).includes(e));
    });
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
    // Logs are buffered per worker: a report (even a stale one, e.g. the losing copy of a build with a backup copy) ends its own.
    const lines = this.logs.take(lease, session.workerId);
    // A stale lease's log must not overwrite the current attempt's log. It is written while the result is
    // judged (the verdict does not read it), and is in place when this report's handling ends.
    let logStored: Promise<unknown> = Promise.resolve();
    if (isCurrent && lines.length) {
      logStored = this.d.cache.put("log", baseName(lease.drvPath), lines.join("\n") + "\n").catch((err) => this.d.logger.warn({ err }, "storing build log failed"));
      if (report.outcome !== "succeeded") this.tails.remember(lease.drvPath, lines);
    }
    try {
      // Only the lease's holder stages anything: a stale or made-up lease's inline outputs are dropped unread.
      let held: ReadonlyMap<string, HeldNar> | undefined;
      if (isCurrent && report.outcome === "succeeded" && report.outputs.some((o) => o.inline)) {
        held = await this.d.inlineOutputs.stage(lease, session.workerId, report.outputs, new Set(Object.values(current.node.outputs)), session.trusted !== false);
      }
      await this.judge(session, report, isCurrent, held);
    } finally {
      await logStored;
    }
  }

  /**
   * Counts a report in the metrics, then publishes its outputs and tells the scheduler, in one turn of the runner.
   * `held`: NAR files its inline outputs left in memory (written only if they are published).
   */
  private async judge(session: WorkerSession, report: BuildReport, isCurrent: boolean, held?: ReadonlyMap<string, HeldNar>): Promise<void> {
    const { lease } = report;
    this.d.metrics?.builds.inc({ worker: session.workerId, outcome: report.outcome });
    if (report.outcome === "succeeded") {
      this.d.metrics?.buildSeconds.observe(report.durationMs / 1000);
      if (report.peakMemoryBytes) this.d.metrics?.buildPeakMemory.observe(report.peakMemoryBytes);
    }
    if (report.outcome === "out-of-memory") this.d.metrics?.oomKills.inc({ worker: session.workerId });
    if (isCurrent && !["succeeded", "failed"].includes(report.outcome)) this.d.metrics?.reassignments.inc({ reason: report.outcome });
    // Deciding on the outputs and the scheduler's verdict share one turn of the runner: the lease can't change
    // in between, so only a result the scheduler accepts has its outputs signed. The files that publish them are
    // written after the turn, beside the next events', and the verdict is stored and told only once they are in place.
    await this.runner.stepAfter(
      "result",
      async (): Promise<OutputDecision> => {
        const now = this.d.scheduler.drv(lease.drvPath);
        const holds = now !== undefined && holdsLease(now.record, session.workerId, lease.epoch);
        if (report.outcome !== "succeeded" || !holds) return { verified: false };
        return acceptOutputs({
          publisher: this.d.publisher,
          node: now.node,
          record: now.record,
          report,
          workerId: session.workerId,
          trusted: session.trusted,
          heldNars: held,
          fixedOutputCheck: () => checkFixedOutput(this.d.cache, this.d.publisher, now.node, lease, session.workerId),
          logger: this.d.logger,
        });
      },
      (now, { verified, trust }) => {
        this.d.logger.info(
          { worker: session.workerId, drv: lease.drvPath, epoch: lease.epoch, outcome: report.outcome, verified, trust, durationMs: report.durationMs, peakMemory: report.peakMemoryBytes, error: report.error || undefined },
          "build reported",
        );
        return this.d.scheduler.buildReported(now, session.workerId, report, verified, trust);
      },
      { writes: (decision) => decision.written },
    );
  }

  async buildStepDone(session: WorkerSession, lease: Lease): Promise<void> {
    await this.step("built", (now) => this.d.scheduler.buildStepDone(now, session.workerId, lease));
  }

  async drain(session: WorkerSession, reason: string, deadlineUnixMs: number, handedBack: Lease[]): Promise<void> {
    this.d.logger.info({ worker: session.workerId, reason, handedBack: handedBack.length }, "worker draining");
    await this.step("drain", (now) => this.d.scheduler.workerDraining(now, session.workerId, { handedBack, deadlineMs: deadlineUnixMs }));
  }

  disconnected(session: WorkerSession, why?: "revoked"): void {
    if (!this.sessions.remove(session)) return;
    if (why === "revoked") {
      // A revoked worker cannot report back: its builds requeue now rather than at its deadline.
      this.d.logger.warn({ worker: session.workerId }, "worker token revoked; worker dropped");
      this.stepInBackground("revoked", (now) => this.d.scheduler.workerRevoked(now, session.workerId));
      return;
    }
    this.d.logger.info({ worker: session.workerId }, "worker disconnected");
    this.stepInBackground("disconnect", (now) => this.d.scheduler.workerDisconnected(now, session.workerId));
  }

  /** A step nobody awaits (a stream's end): its failure is logged, never an unhandled rejection. */
  private stepInBackground(what: string, event: (now: number) => Effect[]): void {
    this.step(what, event).catch((err: unknown) => {
      // While stopping, the streams that close after the store did are expected to find it closed.
      const log = this.persister.isStopped ? this.d.logger.debug.bind(this.d.logger) : this.d.logger.warn.bind(this.d.logger);
      log({ err: (err as Error).message, what }, "event not stored");
    });
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

  async submit(req: { nodes: DrvNode[]; roots: string[]; description: string; idempotencyKey: string; owner: string; publish?: PublishSpec }): Promise<{ jobId: string; existing: boolean }> {
    const started = Date.now();
    const jobId = newJobId(this.d.clock.now());
    try {
      if (!this.d.trustSubmittedNodes) await checkNodesAgainstDrvs(this.d.cache, req.nodes, this.d.logger);
      const cached = await this.cachedDerivations(req.nodes);
      // In slices, each a step of its own: heartbeats, results and dispatch go on between them.
      const admission = this.d.scheduler.beginSubmit({ jobId, ...req, cachedDrvPaths: cached }, SUBMIT_SLICE);
      let accepted: EffectOf<"jobAccepted"> | undefined;
      for (let done = false; !done; ) {
        if (accepted === undefined) await new Promise((r) => setImmediate(r));
        const effects = await this.step("submit", (now) => {
          const r = admission.step(now);
          done = r.done;
          return r.effects;
        });
        accepted ??= effectsOf(effects, "jobAccepted")[0];
      }
      if (accepted === undefined) throw new Error("scheduler accepted no job");
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
    // The cache answers narinfo lookups from memory, so a chain of them never waits for I/O:
    // a slice at a time, with the loop let go between slices, or 100k nodes would hold it.
    for (let i = 0; i < nodes.length; i += SUBMIT_SLICE) {
      if (i > 0) await new Promise((r) => setImmediate(r));
      await mapLimit(nodes.slice(i, i + SUBMIT_SLICE), 64, async (n) => {
        if (this.d.scheduler.drv(n.drvPath)?.record.state === "done") return;
        for (const p of Object.values(n.outputs)) if (!(await this.d.cache.has("narinfo", hashPart(p)))) return;
        cached.add(n.drvPath);
      });
    }
    return cached;
  }

  job(jobId: string, derivations: boolean, viewer: Principal): JobStatus | undefined {
    if (!mayAccess(viewer, this.d.scheduler.job(jobId)?.owner)) return undefined;
    const view = this.d.scheduler.jobStatus(jobId, this.d.clock.now(), { derivations });
    return view && jobStatusToWire(view, (p) => this.tails.of(p));
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

  async withdraw(workerId: string, dryRun: boolean): Promise<{ storePaths: string[]; drvPaths: string[] }> {
    // One turn of the runner: no result of that worker is published while its outputs are being withdrawn.
    let storePaths: string[] = [];
    let drvPaths: string[] = [];
    await this.runner.stepAfter(
      "withdraw",
      async () => {
        await this.d.publisher.settled(); // outputs accepted just before are on disk, with their provenance
        const alone = await this.d.publisher.withdraw(workerId, !dryRun);
        storePaths = alone.map((p) => p.storePath).sort();
        drvPaths = [...new Set(alone.map((p) => p.drvPath))].sort();
      },
      (now) => (dryRun ? [] : this.d.scheduler.outputsWithdrawn(now, drvPaths, `withdrawn: built by ${workerId} alone`)),
    );
    this.d.logger.warn({ worker: workerId, dryRun, outputs: storePaths.length, derivations: drvPaths.length }, "withdrew what a worker built alone");
    return { storePaths, drvPaths };
  }

  async publishPackage(req: PublishRequest): Promise<PublishAnswer> {
    if (!this.d.packages) throw new Error("this coordinator keeps no package index");
    return this.d.packages.publish(req);
  }

  async unpublishPackage(name: string): Promise<PublishAnswer> {
    if (!this.d.packages) throw new Error("this coordinator keeps no package index");
    return this.d.packages.unpublish(name);
  }

  watch(_jobId: string, onChange: () => void): () => void {
    this.watchers.add(onChange);
    return () => this.watchers.delete(onChange);
  }

  /** Numbers for the Prometheus gauges. */
  gauges(): GaugeSource {
    return gaugeSource(this.d.scheduler);
  }
}
