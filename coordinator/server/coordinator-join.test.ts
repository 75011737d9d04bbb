// The shell's join: the Welcome comes first, and names the stale leases a
// rejoining worker still runs (no separate Abort for them).
import { describe, expect, it } from "vitest";
import { Scheduler } from "../core/scheduler.js";
import { mkNode, mkWorker } from "../core/test-support.js";
import { MemoryStore } from "../store/memory-store.js";
import type { CoordinatorMessage } from "../../proto/gen/farm.js";
import { testShell } from "./test-support.js";
import type { WorkerSession } from "./worker-service.js";

function session(workerId: string, sessionId: string, sent: CoordinatorMessage[]): WorkerSession {
  return { sessionId, workerId, send: (m) => sent.push(m), close: () => {} };
}

describe("Coordinator.join", () => {
  it("welcomes first, and lists in the Welcome the stale leases a rejoining worker still runs", async () => {
    const store = new MemoryStore();
    await store.load();
    const { coord } = testShell(new Scheduler({ heartbeatTimeoutMs: 4000 }), store);
    const first: CoordinatorMessage[] = [];
    await coord.join(session("w1", "s1", first), mkWorker("w1", { maxBuilds: 1 }), []);
    await coord.submit({ nodes: [mkNode("a")], roots: [mkNode("a").drvPath], description: "a", idempotencyKey: "", owner: "admin" });
    expect(first.map((m) => m.msg!.$case)).toEqual(["welcome", "assign"]);
    const assign = first[1].msg;
    if (assign?.$case !== "assign") throw new Error("no assignment");
    const lease = assign.value.lease!;

    const again: CoordinatorMessage[] = [];
    await coord.join(session("w1", "s2", again), mkWorker("w1", { maxBuilds: 1 }), [{ ...lease, epoch: lease.epoch - 1 }]);
    const welcome = again[0].msg;
    expect(welcome?.$case).toBe("welcome");
    if (welcome?.$case !== "welcome") return;
    expect(welcome.value.abort).toEqual([{ ...lease, epoch: lease.epoch - 1 }]);
    expect(again.filter((m) => m.msg?.$case === "abort")).toEqual([]);
  });
});
