// The states of one connection to the coordinator, as one transition table
// (like the coordinator core's drv-state.ts and worker-state.ts). session.ts
// drives a connection through it; nothing else decides what a state allows.

/**
 * joining  - WorkerJoin sent, waiting for the Welcome
 * active   - welcomed: heartbeats, assignments, logs, results
 * draining - the drain notice is sent; kept builds finish and report
 * closing  - drained and acknowledged: our side of the stream is closed
 * ended    - the connection is over (runOnce has resolved)
 */
export type SessionState = "joining" | "active" | "draining" | "closing" | "ended";

/** Every SessionState, in lifecycle order. */
export const SESSION_STATES: readonly SessionState[] = ["joining", "active", "draining", "closing", "ended"];

/** The one table of legal session moves: from -> allowed targets. */
export const SESSION_TRANSITIONS: Readonly<Record<SessionState, readonly SessionState[]>> = {
  joining: ["active", "ended"],
  active: ["draining", "ended"],
  draining: ["closing", "ended"],
  closing: ["ended"],
  ended: [],
};

/** A session verb tried from a state that does not allow it (a bug in session.ts). */
export class SessionTransitionError extends Error {
  constructor(
    readonly verb: string,
    readonly from: SessionState,
  ) {
    super(`session: ${verb} is not allowed in state ${from}`);
    this.name = "SessionTransitionError";
  }
}

/** Why a connection ended, as runOnce reports it. */
export type SessionEndKind = "closed" | "error" | "auth" | "drained";

/** One connection's state; every change goes through a named verb. */
export class SessionMachine {
  private current: SessionState = "joining";
  private everWelcomed = false;

  /** The state now. */
  get state(): SessionState {
    return this.current;
  }

  /** True once a Welcome was accepted (it stays true after the session ends). */
  get welcomed(): boolean {
    return this.everWelcomed;
  }

  /** True once the connection is over (a method, so a check is never narrowed away across an await). */
  isEnded(): boolean {
    return this.current === "ended";
  }

  /** True while messages may be written: our side of the stream is open. */
  get canSend(): boolean {
    return this.current === "joining" || this.current === "active" || this.current === "draining";
  }

  private move(verb: string, to: SessionState): void {
    if (!SESSION_TRANSITIONS[this.current].includes(to)) throw new SessionTransitionError(verb, this.current);
    this.current = to;
  }

  /** joining -> active: the Welcome came and was accepted. */
  welcome(): void {
    this.move("welcome", "active");
    this.everWelcomed = true;
  }

  /** active -> draining: the drain notice goes out. */
  beginDrain(): void {
    this.move("beginDrain", "draining");
  }

  /** draining -> closing: every kept build reported; we close our side. */
  drained(): void {
    this.move("drained", "closing");
  }

  /**
   * any -> ended. Returns the kind the session ends with, or null when it had
   * already ended. Cut off while closing (a drain done), it counts as drained
   * unless the token was refused.
   */
  end(kind: SessionEndKind): SessionEndKind | null {
    if (this.current === "ended") return null;
    const wasClosing = this.current === "closing";
    this.move("end", "ended");
    return wasClosing && kind !== "auth" ? "drained" : kind;
  }
}
