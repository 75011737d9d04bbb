// The shell across a store outage: events queue behind the stalled write, and
// once it lands the tick that waited behind it must not declare workers lost
// whose heartbeats were held up in the same queue.
import { describe, expect, it } from "vitest";
import { TransientError } from "../core/errors.js";
import { Scheduler } from "../core/scheduler.js";
import { mkNode, mkWorker } from "../core/test-support.js";
import { MemoryStore } from "../store/memory-store.js";
import { testShell } from "./test-support.js";
import type { WorkerSession } from "./worker-service.js";

/** A MemoryStore that fails every write (like NATS restarting) while `down` is set. */
class FlakyStore extends MemoryStore {
  down = false;
  failed = 0;
  override async putDrvs(...args: Parameters<MemoryStore["putDrvs"]>) {
    if (this.down) {
      this.failed++;
      throw new TransientError("nats is restarting");
    }
    return super.putDrvs(...args);
  }
}

function session(workerId: string): WorkerSession {
  return { sessionId: `s-${workerId}`, workerId, send: () => {}, close: () => {} };
}

describe("Coordinator across a store outage", () => {
  it("holds back worker losses until the heartbeats queued behind the stall are in", async () => {
    const store = new FlakyStore();
    await store.load();
    const scheduler = new Scheduler({ heartbeatTimeoutMs: 4000 });
    const { coord, clock } = testShell(scheduler, store);
    const w1 = session("w1");
    await coord.join(w1, mkWorker("w1", { maxBuilds: 1 }), []);

    store.down = true;
    const submitted = coord.submit({ nodes: [mkNode("a")], roots: [mkNode("a").drvPath], description: "a", idempotencyKey: "", owner: "admin" });
    await waitUntil(() => store.failed > 0);
    clock.advance(10_000); // the outage outlasts the heartbeat timeout
    const ticked = coord.tick();
    const beat = coord.heartbeat(w1, { freeMemoryBytes: 1, freeDiskBytes: 1, uptimeSeconds: 1, running: [], usage: [] });
    store.down = false;

    await submitted;
    await ticked;
    await expect(beat).resolves.toBe(clock.now() + 4000);
    expect(scheduler.workers(clock.now()).map((w) => `${w.workerId} ${w.state}`)).toEqual(["w1 active"]);
    // Later ticks do their job again: silence past the timeout loses the worker.
    for (let i = 0; i < 10; i++) {
      clock.advance(1000);
      await coord.tick();
    }
    expect(scheduler.workers(clock.now()).map((w) => `${w.workerId} ${w.state}`)).toEqual(["w1 lost"]);
  });
});

async function waitUntil(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!check()) throw new Error("condition never held");
}
