// The worker side of the gRPC server: one WorkerSession per Connect stream.
// It authenticates, insists on a join first, validates every message through
// proto/convert/, and hands domain values to the WorkerHub (the coordinator
// shell). It never touches scheduling state itself.
import { randomUUID } from "node:crypto";
import { status, type ServerDuplexStream } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { CoordinatorMessage, WorkerMessage, WorkerServiceServer } from "../../proto/gen/farm.js";
import { drainFromWire, heartbeatFromWire, leaseFromWire, reportFromWire, workerInfoFromJoin } from "../../proto/convert/mod.js";
import type { HeartbeatInfo } from "../../proto/types.js";
import type { BuildReport, Lease, WorkerInfo } from "../core/types.js";
import { AuthError, InvalidInputError } from "../core/errors.js";
import type { Principal, TokenRegistry } from "./auth.js";

/** A connected worker as the coordinator sees it. */
export interface WorkerSession {
  readonly sessionId: string;
  readonly workerId: string;
  /** Its token's tier: an untrusted worker's outputs are signed only once another build agrees (absent = trusted). */
  readonly trusted?: boolean;
  send(msg: CoordinatorMessage): void;
  /** Ends the stream with a status the worker will see. */
  close(code: status, reason: string): void;
}

/** The coordinator shell's entry points for worker events. */
export interface WorkerHub {
  /** Registers the session and sends its Welcome before anything else. */
  join(session: WorkerSession, info: WorkerInfo, running: Lease[]): Promise<void>;
  heartbeat(session: WorkerSession, hb: HeartbeatInfo): Promise<number>;
  logLines(session: WorkerSession, lease: Lease, lines: string[]): void;
  result(session: WorkerSession, report: BuildReport): Promise<void>;
  /** The builder of `lease` is done and the worker uploads its outputs: its slot is free for the next build. */
  buildStepDone(session: WorkerSession, lease: Lease): Promise<void>;
  drain(session: WorkerSession, reason: string, deadlineUnixMs: number, handedBack: Lease[]): Promise<void>;
  /** The stream ended; "revoked" when the worker's token was revoked (its builds must not wait for it). */
  disconnected(session: WorkerSession, why?: "revoked"): void;
}

/** Limits that keep a misbehaving worker from hurting the coordinator. */
export interface SessionLimits {
  joinTimeoutMs: number;
  maxLogLinesPerMessage: number;
  maxLogLineBytes: number;
}

/** Builds the WorkerService implementation. */
export function createWorkerService(deps: { hub: WorkerHub; tokens: TokenRegistry; storeDir: string; logger: Logger; limits: SessionLimits }): WorkerServiceServer {
  const { hub, tokens, storeDir, logger, limits } = deps;
  return {
    connect(call: ServerDuplexStream<WorkerMessage, CoordinatorMessage>) {
      const sessionId = randomUUID();
      const log = logger.child({ session: sessionId.slice(0, 8), peer: call.getPeer() });
      let session: WorkerSession | undefined;
      let ended = false;
      let reportedGone = false;
      let joinTimer: NodeJS.Timeout | undefined;
      let revoked = false;
      let unwatchTokens = () => {};
      const end = (code: status, details: string) => {
        if (ended) return;
        ended = true;
        clearTimeout(joinTimer);
        if (code === status.OK) call.end();
        else call.emit("error", { code, details });
        gone();
      };
      const authHeader = call.metadata.get("authorization")[0]?.toString();
      let principal: Principal;
      try {
        principal = tokens.authenticate(authHeader, ["worker"]);
      } catch (err) {
        log.warn({ err: (err as Error).message }, "worker refused: bad token");
        end(status.UNAUTHENTICATED, (err as Error).message);
        return;
      }
      // A revoked token cuts the open stream too: checked on every message and whenever the tokens file changes.
      const revoke = (err: Error) => {
        if (revoked) return;
        log.warn({ worker: session?.workerId, err: err.message }, "worker token revoked; closing stream");
        revoked = true;
        end(status.UNAUTHENTICATED, err.message);
      };
      unwatchTokens = tokens.onChange(() => {
        try {
          tokens.recheck(authHeader, principal, ["worker"]);
        } catch (err) {
          if (err instanceof AuthError) revoke(err);
          else log.error({ err }, "re-checking the worker token failed");
        }
      });
      joinTimer = setTimeout(() => end(status.DEADLINE_EXCEEDED, "no join message in time"), limits.joinTimeoutMs);

      const handle = async (msg: WorkerMessage) => {
        tokens.recheck(authHeader, principal, ["worker"]);
        const m = msg.msg;
        if (!m) throw new InvalidInputError("empty worker message");
        if (!session) {
          if (m.$case !== "join") throw new InvalidInputError(`expected a join first, got ${m.$case}`);
          const joined = workerInfoFromJoin(m.value, storeDir);
          const running = joined.running;
          // The tier comes from the token, never from what the worker says.
          const info = { ...joined.info, trusted: principal.trusted !== false, ...(principal.owner ? { owner: principal.owner } : {}) };
          // A per-worker token names its worker: it can't join as (and push off) another one.
          if (principal.role === "worker" && principal.name !== info.workerId) {
            throw new AuthError(`the token of worker '${principal.name}' may not join as '${info.workerId}' (set FARM_WORKER_ID=${principal.name})`);
          }
          const s: WorkerSession = {
            sessionId,
            workerId: info.workerId,
            trusted: info.trusted,
            send: (out) => {
              if (!ended) call.write(out);
            },
            close: end,
          };
          clearTimeout(joinTimer);
          session = s;
          await hub.join(s, info, running);
          return;
        }
        switch (m.$case) {
          case "join":
            throw new InvalidInputError("second join on one stream");
          case "heartbeat": {
            const deadline = await hub.heartbeat(session, heartbeatFromWire(m.value, storeDir));
            session.send({ msg: { $case: "heartbeatAck", value: { deadlineUnixMs: deadline } } });
            return;
          }
          case "log": {
            const lease = leaseFromWire(m.value.lease, storeDir);
            const lines = m.value.lines.slice(0, limits.maxLogLinesPerMessage).map((l) => (l.length > limits.maxLogLineBytes ? `${l.slice(0, limits.maxLogLineBytes)}…` : l));
            if (m.value.lines.length > lines.length) lines.push(`[farm: ${m.value.lines.length - lines.length} log lines dropped]`);
            hub.logLines(session, lease, lines);
            return;
          }
          case "result":
            await hub.result(session, reportFromWire(m.value, storeDir));
            return;
          case "built":
            await hub.buildStepDone(session, leaseFromWire(m.value.lease, storeDir));
            return;
          case "drain": {
            const d = drainFromWire(m.value, storeDir);
            await hub.drain(session, d.reason, d.deadlineUnixMs, d.handedBack);
            return;
          }
        }
      };

      // Messages are handled one at a time, in order, so a result never overtakes its logs.
      let chain = Promise.resolve();
      call.on("data", (msg: WorkerMessage) => {
        chain = chain.then(() => handle(msg)).catch((err) => {
          if (err instanceof AuthError) revoke(err);
          else if (err instanceof InvalidInputError) {
            log.warn({ worker: session?.workerId, err: err.message }, "bad worker message; closing stream");
            end(status.INVALID_ARGUMENT, err.message);
          } else {
            log.error({ worker: session?.workerId, err }, "worker message failed");
            end(status.INTERNAL, "coordinator error; reconnect");
          }
        });
      });
      function gone() {
        clearTimeout(joinTimer);
        unwatchTokens();
        ended = true;
        if (!session || reportedGone) return;
        reportedGone = true;
        chain = chain.then(() => hub.disconnected(session!, revoked ? "revoked" : undefined));
      }
      call.on("end", () => {
        gone();
        call.end();
      });
      call.on("cancelled", gone);
      call.on("error", (err) => {
        log.debug({ err: err.message }, "worker stream error");
        gone();
      });
    },
  };
}
