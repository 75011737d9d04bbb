// One connection's life: WorkerJoin -> Welcome -> heartbeats, assignments, logs,
// results -> the stream ends (or we drain). runOnce() returns why it ended;
// main.ts decides whether to reconnect.
import { Metadata, status as GrpcStatus, type ClientDuplexStream, type ServiceError } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { BuildReport, Lease, WorkerInfo } from "../coordinator/core/types.js";
import type { Assignment, CoordinatorMessage, Welcome, WorkerMessage, WorkerServiceClient } from "../proto/gen/farm.js";
import type { BuildRunner } from "./build-runner.js";
import { failureReport } from "./executor.js";
import { assignmentFromWire, drainToWire, heartbeatToWire, joinToWire, leaseFromWire, logToWire, PROTOCOL_VERSION, resultToWire, type RunningUsage } from "./wire.js";

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

/** Runs one connection to the coordinator until it ends; never throws. */
export function runOnce(opts: SessionOptions): Promise<SessionEnd> {
  const log = opts.logger;
  const md = new Metadata();
  md.set("authorization", `Bearer ${opts.token}`);
  const call: ClientDuplexStream<WorkerMessage, CoordinatorMessage> = opts.client.connect(md);
  let welcomed = false;
  let open = true;
  let heartbeat: NodeJS.Timeout | undefined;
  let watchdog: NodeJS.Timeout | undefined;
  // Armed by each HeartbeatAck: the coordinator's deadline for our next heartbeat.
  let ackDeadline: NodeJS.Timeout | undefined;
  let lastHeard = Date.now();

  return new Promise<SessionEnd>((resolve) => {
    let ended = false;
    let draining = false;
    let drainDone = false;
    const welcomeTimer = setTimeout(() => end("error", "no Welcome from the coordinator"), opts.welcomeTimeoutMs ?? 30_000);
    const end = (kind: SessionEnd["kind"], message: string) => {
      if (ended) return;
      ended = true;
      // Cut off mid-drain with builds still to report: an error, so the loop reconnects and finishes the drain.
      if (drainDone && kind !== "auth") kind = "drained";
      open = false;
      clearInterval(heartbeat);
      clearInterval(watchdog);
      clearTimeout(ackDeadline);
      clearTimeout(welcomeTimer);
      opts.drain.removeEventListener("abort", onDrain);
      opts.runner.attach(undefined);
      call.removeAllListeners("data");
      call.on("error", () => {}); // a late error after cancel must not crash the process
      call.cancel();
      resolve({ kind, welcomed, message });
    };
    const send = (m: WorkerMessage) => {
      if (!open) return;
      try {
        call.write(m);
      } catch (err) {
        end("error", `write failed: ${(err as Error).message}`);
      }
    };
    const sendResult = (r: BuildReport) => {
      log.info({ drv: r.lease.drvPath, epoch: r.lease.epoch, outcome: r.outcome, durationMs: r.durationMs, peakMemoryBytes: r.peakMemoryBytes, error: r.error || undefined }, `result sent: ${r.outcome}`);
      send(resultToWire(r));
    };
    const sendHeartbeat = () => {
      const running: RunningUsage[] = opts.runner.usage();
      send(heartbeatToWire({ ...opts.vitals(), running }));
    };
    // The coordinator declares us lost if it hears no heartbeat by its deadline; with no HeartbeatAck by then, the connection is as good as lost.
    const onHeartbeatAck = (deadlineUnixMs: number) => {
      clearTimeout(ackDeadline);
      if (deadlineUnixMs > 0) ackDeadline = setTimeout(() => end("error", "no HeartbeatAck by the coordinator's deadline"), Math.max(0, deadlineUnixMs - Date.now()));
    };

    const onWelcome = (m: Welcome) => {
      clearTimeout(welcomeTimer);
      if (m.protocolVersion !== PROTOCOL_VERSION) return end("error", `coordinator speaks protocol ${m.protocolVersion}, this worker ${PROTOCOL_VERSION}`);
      if (!m.cacheUrl || !m.cachePublicKey) return end("error", "Welcome names no cache URL or public key");
      welcomed = true;
      opts.runner.setCache({ cacheUrl: m.cacheUrl, cachePublicKey: m.cachePublicKey });
      const interval = opts.heartbeatIntervalMs || m.heartbeatIntervalMs || 5000;
      log.info({ session: m.sessionId, cacheUrl: m.cacheUrl, heartbeatMs: interval, running: opts.runner.leases().length }, "joined the coordinator");
      for (const wl of m.abort) {
        const lease = safeLease(wl);
        if (lease && opts.runner.abort(lease, "coordinator no longer wants it")) log.info({ drv: lease.drvPath }, "aborting stale build named in Welcome");
      }
      opts.runner.attach({ log: (lease, lines) => send(logToWire(lease, lines)), result: sendResult });
      for (const r of opts.runner.unackedResults()) sendResult(r);
      if (opts.drain.aborted) onDrain();
      heartbeat = setInterval(sendHeartbeat, interval);
      // A coordinator that stops answering heartbeats is gone even if TCP doesn't say so.
      const silence = Math.max(10 * interval, 60_000);
      watchdog = setInterval(() => Date.now() - lastHeard > silence && end("error", `coordinator silent for ${Math.round(silence / 1000)}s`), Math.min(interval, 5000));
      sendHeartbeat();
    };

    const onAssign = (m: Assignment) => {
      let spec;
      try {
        spec = assignmentFromWire(m);
      } catch (err) {
        log.warn({ err: (err as Error).message }, "ignoring a malformed assignment");
        const lease = safeLease(m.lease);
        if (lease) send(resultToWire(failureReport({ lease, name: "", outputs: {}, inputPaths: [], cores: 0, memoryLimitBytes: 0, timeoutMs: 0 }, "worker-error", (err as Error).message, Date.now())));
        return;
      }
      const started = opts.runner.start(spec);
      log.info({ drv: spec.lease.drvPath, epoch: spec.lease.epoch, cores: spec.cores, memoryLimitBytes: spec.memoryLimitBytes, start: started }, `assigned ${spec.name} with ${spec.cores} cores`);
      if (started === "full" || started === "draining") {
        const outcome = started === "draining" ? "aborted" : "worker-error";
        sendResult(failureReport(spec, outcome, started === "draining" ? "worker is draining" : "worker is already running its maximum number of builds", Date.now()));
      }
    };

    call.on("data", (msg: CoordinatorMessage) => {
      lastHeard = Date.now();
      const m = msg.msg;
      if (!m) return;
      if (!welcomed && m.$case !== "welcome") return end("error", `expected Welcome, got ${m.$case}`);
      switch (m.$case) {
        case "welcome":
          return onWelcome(m.value);
        case "assign":
          return onAssign(m.value);
        case "abort": {
          const lease = safeLease(m.value.lease);
          if (lease && opts.runner.abort(lease, m.value.reason || "aborted by the coordinator")) log.info({ drv: lease.drvPath, reason: m.value.reason }, "aborting build");
          return;
        }
        case "heartbeatAck":
          return onHeartbeatAck(m.value.deadlineUnixMs);
        // The one acknowledgement of a result: until it comes, the result is resent on every (re)connect.
        case "resultAck": {
          const lease = safeLease(m.value.lease);
          if (!lease) return;
          opts.runner.ack(lease);
          if (!m.value.accepted) log.warn({ drv: lease.drvPath, epoch: lease.epoch, reason: m.value.reason }, "coordinator rejected a result");
          return;
        }
      }
    });
    call.on("error", (err: ServiceError) => {
      const code = err.code;
      if (code === GrpcStatus.CANCELLED && ended) return;
      end(AUTH_CODES.has(code) ? "auth" : "error", `${GrpcStatus[code] ?? code}: ${err.details || err.message}`);
    });
    call.on("end", () => end("closed", draining ? "drained" : "coordinator closed the stream"));

    // Runs once per session, after Welcome (a notice needs a coordinator that knows us).
    const onDrain = () => {
      if (draining || !welcomed || ended) return;
      draining = true;
      const deadline = opts.drainDeadline?.() ?? Date.now() + (opts.drainGraceMs ?? 10_000);
      const reason = `worker going away: ${String(opts.drain.reason ?? "drain")}`;
      const { kept, handedBack } = opts.runner.beginDrain(Date.now(), deadline, reason);
      log.info({ handedBack: handedBack.length, kept: kept.length, deadline: new Date(deadline).toISOString() }, `draining: handing back ${handedBack.length} build(s), finishing ${kept.length}`);
      send(drainToWire(reason, deadline, handedBack));
      void finishDrain(deadline, reason);
    };
    // Kept builds report as usual; at the deadline whatever still runs is handed back too.
    const finishDrain = async (deadline: number, reason: string) => {
      const idle = await opts.runner.idle(Math.max(0, deadline - Date.now()));
      if (ended) return;
      if (!idle) {
        const late = opts.runner.handBackAll("drain deadline reached");
        log.info({ handedBack: late.length }, `drain deadline reached: handing back ${late.length} build(s)`);
        send(drainToWire(reason, deadline, late));
      }
      // Results sent in the meantime must be acknowledged before we go, or they would be rebuilt.
      for (let i = 0; i < 50 && opts.runner.unackedResults().length > 0 && !ended; i++) await new Promise((r) => setTimeout(r, 100));
      drainDone = true;
      if (open) call.end();
      open = false;
      // Give the coordinator a moment to read the notice and close its side ('end' resolves sooner).
      setTimeout(() => end("drained", "drained"), 2000).unref();
    };

    send(joinToWire(opts.info(), opts.runner.joinLeases()));
    opts.drain.addEventListener("abort", onDrain, { once: true });
  });
}

function safeLease(l: { drvPath: string; epoch: number } | undefined): Lease | undefined {
  try {
    return leaseFromWire(l, "message");
  } catch {
    return undefined;
  }
}
