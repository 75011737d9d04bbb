// One connection's life: WorkerJoin -> Welcome -> heartbeats, assignments, logs,
// results -> the stream ends (or we drain), through the states of
// session-state.ts. runOnce() returns why it ended; the reconnect loop
// (reconnect.ts) decides whether to connect again.
import { Metadata, status as GrpcStatus, type ClientDuplexStream, type ServiceError } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { BuildReport, Lease, RunningUsage, WorkerInfo } from "../proto/types.js";
import type { Assignment, CoordinatorMessage, Welcome, WorkerMessage, WorkerServiceClient } from "../proto/gen/farm.js";
import { declineReason, type BuildRunner } from "./build-runner.js";
import { failureReport } from "./executor.js";
import { SessionMachine } from "./session-state.js";
import { assignmentFromWire, builtToWire, drainToWire, heartbeatToWire, joinToWire, leaseFromWire, logToWire, PROTOCOL_VERSION, resultToWire } from "../proto/convert/mod.js";

/** Why a connection ended. */
export type SessionEnd =
  | { kind: "closed"; welcomed: boolean; message: string }
  | { kind: "error"; welcomed: boolean; message: string }
  | { kind: "auth"; welcomed: boolean; message: string }
  | { kind: "drained"; welcomed: boolean; message: string };

/** What one connection needs. */
export interface SessionOptions {
  client: WorkerServiceClient;
  token: string;
  runner: BuildRunner;
  logger: Logger;
  /** Fresh facts about this worker for WorkerJoin. */
  info(): WorkerInfo;
  /** Free memory/disk and uptime for heartbeats. */
  vitals(): { freeMemoryBytes: number; freeDiskBytes: number; uptimeSeconds: number };
  /** Overrides the coordinator's heartbeat interval when > 0. */
  heartbeatIntervalMs?: number;
  /** Give up on a connection whose Welcome doesn't come within this. */
  welcomeTimeoutMs?: number;
  /**
   * Aborted when the worker is going away (SIGTERM, end of life; the abort
   * reason says why): it takes no new work, hands back what would not finish
   * by the drain deadline, lets the rest finish, then ends the session.
   */
  drain: AbortSignal;
  /** When the worker will be gone (unix ms); default: `drainGraceMs` after the drain began. */
  drainDeadline?: () => number;
  /** Used when no `drainDeadline` is given. Default 10 s. */
  drainGraceMs?: number;
}

const AUTH_CODES = new Set([GrpcStatus.UNAUTHENTICATED, GrpcStatus.PERMISSION_DENIED]);

/** Runs one connection to the coordinator until it ends; never throws. One iteration of the reconnect loop. */
export function runOnce(opts: SessionOptions): Promise<SessionEnd> {
  return new Promise<SessionEnd>((resolve) => new Connection(opts, resolve).start());
}

/** One connection: the session state machine (session-state.ts) driven by stream messages, timers and the drain signal. */
class Connection {
  private readonly m = new SessionMachine();
  private readonly timers = new Timers();
  private readonly log: Logger;
  private readonly call: ClientDuplexStream<WorkerMessage, CoordinatorMessage>;
  private lastHeard = Date.now();
  /** The store dir this worker joined with: inbound leases and paths must lie in it. */
  private storeDir = "";
  private readonly onDrain = () => this.drain();

  constructor(
    private readonly opts: SessionOptions,
    private readonly resolve: (end: SessionEnd) => void,
  ) {
    this.log = opts.logger;
    const md = new Metadata();
    md.set("authorization", `Bearer ${opts.token}`);
    this.call = opts.client.connect(md);
  }

  /** joining: sends the WorkerJoin and waits for the Welcome. */
  start(): void {
    this.timers.after("welcome", this.opts.welcomeTimeoutMs ?? 30_000, () => this.end("error", "no Welcome from the coordinator"));
    this.call.on("data", (msg: CoordinatorMessage) => this.onMessage(msg));
    this.call.on("error", (err: ServiceError) => {
      const code = err.code;
      if (code === GrpcStatus.CANCELLED && this.m.isEnded()) return;
      this.end(AUTH_CODES.has(code) ? "auth" : "error", `${GrpcStatus[code] ?? code}: ${err.details || err.message}`);
    });
    this.call.on("end", () => this.end("closed", this.m.state === "draining" || this.m.state === "closing" ? "drained" : "coordinator closed the stream"));
    const info = this.opts.info();
    this.storeDir = info.storeDir;
    this.send(joinToWire(info, this.opts.runner.joinLeases()));
    this.opts.drain.addEventListener("abort", this.onDrain, { once: true });
  }

  /** any -> ended: stops every timer, detaches the runner, cancels the call and resolves runOnce. */
  private end(kind: SessionEnd["kind"], message: string): void {
    const welcomed = this.m.welcomed;
    const ended = this.m.end(kind);
    if (ended === null) return;
    this.timers.clearAll();
    this.opts.drain.removeEventListener("abort", this.onDrain);
    this.opts.runner.attach(undefined);
    this.call.removeAllListeners("data");
    this.call.on("error", () => {}); // a late error after cancel must not crash the process
    this.call.cancel();
    this.resolve({ kind: ended, welcomed, message });
  }

  private send(m: WorkerMessage): void {
    if (!this.m.canSend) return;
    try {
      this.call.write(m);
    } catch (err) {
      this.end("error", `write failed: ${(err as Error).message}`);
    }
  }

  private sendResult(r: BuildReport): void {
    this.log.info({ drv: r.lease.drvPath, epoch: r.lease.epoch, outcome: r.outcome, durationMs: r.durationMs, peakMemoryBytes: r.peakMemoryBytes, error: r.error || undefined }, `result sent: ${r.outcome}`);
    this.send(resultToWire(r));
  }

  private sendHeartbeat(): void {
    const running: RunningUsage[] = this.opts.runner.usage();
    this.send(heartbeatToWire({ ...this.opts.vitals(), running }));
  }

  private onMessage(msg: CoordinatorMessage): void {
    this.lastHeard = Date.now();
    const m = msg.msg;
    if (!m) return;
    if (this.m.state === "joining" && m.$case !== "welcome") return this.end("error", `expected Welcome, got ${m.$case}`);
    switch (m.$case) {
      case "welcome":
        if (this.m.state !== "joining") return this.log.warn("ignoring a second Welcome");
        return this.onWelcome(m.value);
      case "assign":
        return this.onAssign(m.value);
      case "abort": {
        const lease = safeLease(m.value.lease, this.storeDir);
        if (lease && this.opts.runner.abort(lease, m.value.reason || "aborted by the coordinator")) this.log.info({ drv: lease.drvPath, reason: m.value.reason }, "aborting build");
        return;
      }
      case "heartbeatAck":
        return this.onHeartbeatAck(m.value.deadlineUnixMs);
      // The one acknowledgement of a result: until it comes, the result is resent on every (re)connect.
      case "resultAck": {
        const lease = safeLease(m.value.lease, this.storeDir);
        if (!lease) return;
        this.opts.runner.ack(lease);
        if (!m.value.accepted) this.log.warn({ drv: lease.drvPath, epoch: lease.epoch, reason: m.value.reason }, "coordinator rejected a result");
        return;
      }
    }
  }

  /** joining -> active: checks the Welcome, aborts the builds it names, resends unacknowledged results, starts heartbeats. */
  private onWelcome(m: Welcome): void {
    const { opts, log } = this;
    this.timers.clear("welcome");
    if (m.protocolVersion !== PROTOCOL_VERSION) return this.end("error", `coordinator speaks protocol ${m.protocolVersion}, this worker ${PROTOCOL_VERSION}`);
    if (!m.cacheUrl || !m.cachePublicKey) return this.end("error", "Welcome names no cache URL or public key");
    this.m.welcome();
    opts.runner.setCache({ cacheUrl: m.cacheUrl, cachePublicKey: m.cachePublicKey });
    const interval = opts.heartbeatIntervalMs || m.heartbeatIntervalMs || 5000;
    log.info({ session: m.sessionId, cacheUrl: m.cacheUrl, heartbeatMs: interval, running: opts.runner.leases().length }, "joined the coordinator");
    for (const wl of m.abort) {
      const lease = safeLease(wl, this.storeDir);
      if (lease && opts.runner.abort(lease, "coordinator no longer wants it")) log.info({ drv: lease.drvPath }, "aborting stale build named in Welcome");
    }
    opts.runner.attach({ log: (lease, lines) => this.send(logToWire(lease, lines)), built: (lease) => this.send(builtToWire(lease)), result: (r) => this.sendResult(r) });
    for (const r of opts.runner.unackedResults()) this.sendResult(r);
    if (opts.drain.aborted) this.drain();
    this.timers.every("heartbeat", interval, () => this.sendHeartbeat());
    // A coordinator that stops answering heartbeats is gone even if TCP doesn't say so.
    const silence = Math.max(10 * interval, 60_000);
    this.timers.every("watchdog", Math.min(interval, 5000), () => Date.now() - this.lastHeard > silence && this.end("error", `coordinator silent for ${Math.round(silence / 1000)}s`));
    this.sendHeartbeat();
  }

  // The coordinator declares us lost if it hears no heartbeat by its deadline; with no HeartbeatAck by then, the connection is as good as lost.
  private onHeartbeatAck(deadlineUnixMs: number): void {
    this.timers.clear("heartbeatAck");
    if (deadlineUnixMs > 0) this.timers.after("heartbeatAck", Math.max(0, deadlineUnixMs - Date.now()), () => this.end("error", "no HeartbeatAck by the coordinator's deadline"));
  }

  private onAssign(m: Assignment): void {
    const { opts, log } = this;
    let spec;
    try {
      spec = assignmentFromWire(m, this.storeDir);
    } catch (err) {
      log.warn({ err: (err as Error).message }, "ignoring a malformed assignment");
      const lease = safeLease(m.lease, this.storeDir);
      if (lease) this.send(resultToWire(failureReport({ lease, name: "", outputs: {}, inputPaths: [], cores: 0, memoryLimitBytes: 0, timeoutMs: 0 }, "worker-error", (err as Error).message, Date.now())));
      return;
    }
    const started = opts.runner.start(spec);
    log.info({ drv: spec.lease.drvPath, epoch: spec.lease.epoch, cores: spec.cores, memoryLimitBytes: spec.memoryLimitBytes, start: started }, `assigned ${spec.name} with ${spec.cores} cores`);
    const why = declineReason(started, opts.runner.busyLeases());
    if (why !== null) {
      this.sendResult(failureReport(spec, "declined", why, Date.now()));
      // The coordinator gives us no work until it has reconciled our running builds: tell it now.
      this.sendHeartbeat();
    }
  }

  /** active -> draining, once per session and only after Welcome (a notice needs a coordinator that knows us). */
  private drain(): void {
    const { opts, log } = this;
    if (this.m.state !== "active") return;
    this.m.beginDrain();
    const deadline = opts.drainDeadline?.() ?? Date.now() + (opts.drainGraceMs ?? 10_000);
    const reason = `worker going away: ${String(opts.drain.reason ?? "drain")}`;
    const { kept, handedBack } = opts.runner.beginDrain(Date.now(), deadline, reason);
    log.info({ handedBack: handedBack.length, kept: kept.length, deadline: new Date(deadline).toISOString() }, `draining: handing back ${handedBack.length} build(s), finishing ${kept.length}`);
    this.send(drainToWire(reason, deadline, handedBack));
    void this.finishDrain(deadline, reason);
  }

  /** draining -> closing: kept builds report as usual; at the deadline whatever still runs is handed back too. */
  private async finishDrain(deadline: number, reason: string): Promise<void> {
    const { opts, log } = this;
    const idle = await opts.runner.idle(Math.max(0, deadline - Date.now()));
    if (this.m.isEnded()) return;
    if (!idle) {
      const late = opts.runner.handBackAll("drain deadline reached");
      log.info({ handedBack: late.length }, `drain deadline reached: handing back ${late.length} build(s)`);
      this.send(drainToWire(reason, deadline, late));
    }
    // Results sent in the meantime must be acknowledged before we go, or they would be rebuilt.
    for (let i = 0; i < 50 && opts.runner.unackedResults().length > 0 && !this.m.isEnded(); i++) await new Promise((r) => setTimeout(r, 100));
    if (this.m.isEnded()) return;
    this.m.drained();
    this.call.end();
    // Give the coordinator a moment to read the notice and close its side ('end' resolves sooner).
    setTimeout(() => this.end("drained", "drained"), 2000).unref();
  }
}

/** Named one-shot and repeating timers, all cleared when the session ends. */
class Timers {
  private readonly handles = new Map<string, NodeJS.Timeout>();

  /** Runs `fn` once after `ms` (replacing a timer of the same name). */
  after(name: string, ms: number, fn: () => void): void {
    this.clear(name);
    this.handles.set(name, setTimeout(fn, ms));
  }

  /** Runs `fn` every `ms` (replacing a timer of the same name). */
  every(name: string, ms: number, fn: () => void): void {
    this.clear(name);
    this.handles.set(name, setInterval(fn, ms));
  }

  /** Stops the timer `name`, if any. */
  clear(name: string): void {
    clearTimeout(this.handles.get(name));
    this.handles.delete(name);
  }

  /** Stops every timer. */
  clearAll(): void {
    for (const h of this.handles.values()) clearTimeout(h);
    this.handles.clear();
  }
}

function safeLease(l: { drvPath: string; epoch: number } | undefined, storeDir: string): Lease | undefined {
  try {
    return leaseFromWire(l, storeDir);
  } catch {
    return undefined;
  }
}
