// The connected workers: one session per worker id (a newer connection of the
// same worker replaces the older one). A session's messages are held back
// until its Welcome has gone out, so the Welcome is always the first thing a
// worker hears, even when the join is settled after other events.
import { status } from "@grpc/grpc-js";
import type { CoordinatorMessage } from "../../proto/gen/farm.js";
import type { WorkerSession } from "./worker-service.js";

/** The live session of each worker. */
export class SessionRegistry {
  private readonly sessions = new Map<string, WorkerSession>();
  /** Messages for sessions not yet welcomed, by session id. */
  private readonly held = new Map<string, CoordinatorMessage[]>();

  /** Makes `session` its worker's live one (closing an older one); its messages wait for `welcome`. */
  register(session: WorkerSession): void {
    const previous = this.sessions.get(session.workerId);
    if (previous && previous.sessionId !== session.sessionId) {
      this.held.delete(previous.sessionId);
      previous.close(status.ABORTED, "replaced by a newer connection of the same worker");
    }
    this.sessions.set(session.workerId, session);
    this.held.set(session.sessionId, []);
  }

  /** Sends `session` its Welcome, then what was held back for it. */
  welcome(session: WorkerSession, welcome: CoordinatorMessage): void {
    const held = this.held.get(session.sessionId) ?? [];
    this.held.delete(session.sessionId);
    session.send(welcome);
    for (const m of held) session.send(m);
  }

  /** Sends to the worker's live session (held until its Welcome); dropped when it has none. */
  send(workerId: string, msg: CoordinatorMessage): void {
    const s = this.sessions.get(workerId);
    if (s === undefined) return;
    const held = this.held.get(s.sessionId);
    if (held !== undefined) held.push(msg);
    else s.send(msg);
  }

  /** Forgets `session` if it is still its worker's live one; returns whether it was. */
  remove(session: WorkerSession): boolean {
    this.held.delete(session.sessionId);
    if (this.sessions.get(session.workerId)?.sessionId !== session.sessionId) return false;
    this.sessions.delete(session.workerId);
    return true;
  }
}
