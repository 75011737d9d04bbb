import { describe, expect, it } from "vitest";
import { SESSION_STATES, SESSION_TRANSITIONS, SessionMachine, SessionTransitionError } from "./session-state.js";

describe("session state machine", () => {
  it("every state is in the table and ended is final", () => {
    expect(Object.keys(SESSION_TRANSITIONS).sort()).toEqual([...SESSION_STATES].sort());
    expect(SESSION_TRANSITIONS.ended).toEqual([]);
    for (const s of SESSION_STATES) if (s !== "ended") expect(SESSION_TRANSITIONS[s]).toContain("ended");
  });

  it("walks joining -> active -> draining -> closing -> ended, sending until closing", () => {
    const m = new SessionMachine();
    expect([m.state, m.canSend, m.welcomed]).toEqual(["joining", true, false]);
    m.welcome();
    m.beginDrain();
    expect([m.state, m.canSend, m.welcomed]).toEqual(["draining", true, true]);
    m.drained();
    expect(m.canSend).toBe(false);
    // Cut off after the drain was done: that still counts as drained.
    expect(m.end("error")).toBe("drained");
    expect([m.state, m.welcomed]).toEqual(["ended", true]);
    expect(m.end("closed")).toBeNull();
  });

  it("a refused token is reported as auth even after the drain was done", () => {
    const m = new SessionMachine();
    m.welcome();
    m.beginDrain();
    m.drained();
    expect(m.end("auth")).toBe("auth");
  });

  it("rejects moves the table does not allow", () => {
    const m = new SessionMachine();
    expect(() => m.beginDrain()).toThrow(SessionTransitionError);
    m.welcome();
    expect(() => m.welcome()).toThrow(SessionTransitionError);
    expect(() => m.drained()).toThrow(SessionTransitionError);
    expect(m.end("closed")).toBe("closed");
    expect(m.welcomed).toBe(true);
  });
});
