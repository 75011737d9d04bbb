import { describe, expect, it } from "vitest";
import type { CoordinatorMessage } from "../../proto/gen/farm.js";
import { SessionRegistry } from "./session-registry.js";
import type { WorkerSession } from "./worker-service.js";

function session(workerId: string, sessionId: string) {
  const sent: string[] = [];
  const closed: string[] = [];
  const s: WorkerSession = { workerId, sessionId, send: (m) => sent.push(m.msg!.$case), close: (_code, reason) => closed.push(reason) };
  return { s, sent, closed };
}

const welcome: CoordinatorMessage = { msg: { $case: "welcome", value: { protocolVersion: 1, sessionId: "x", cacheUrl: "", cachePublicKey: "", heartbeatIntervalMs: 1, abort: [] } } };
const abort: CoordinatorMessage = { msg: { $case: "abort", value: { lease: { drvPath: "/p", epoch: 1 }, reason: "" } } };

describe("SessionRegistry", () => {
  it("holds a session's messages until its Welcome, then sends them after it", () => {
    const reg = new SessionRegistry();
    const a = session("w1", "s1");
    reg.register(a.s);
    reg.send("w1", abort);
    expect(a.sent).toEqual([]);
    reg.welcome(a.s, welcome);
    reg.send("w1", abort);
    expect(a.sent).toEqual(["welcome", "abort", "abort"]);
  });

  it("a newer connection of the same worker replaces and closes the older one", () => {
    const reg = new SessionRegistry();
    const a = session("w1", "s1");
    const b = session("w1", "s2");
    reg.register(a.s);
    reg.welcome(a.s, welcome);
    reg.register(b.s);
    expect(a.closed).toHaveLength(1);
    expect(reg.remove(a.s)).toBe(false); // the old stream's end changes nothing
    reg.welcome(b.s, welcome);
    reg.send("w1", abort);
    expect(b.sent).toEqual(["welcome", "abort"]);
    expect(reg.remove(b.s)).toBe(true);
    reg.send("w1", abort); // no session: dropped
    expect(b.sent).toHaveLength(2);
  });
});
