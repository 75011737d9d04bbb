// The shell across a store outage: events queue behind the stalled write, and
// once it lands the tick that waited behind it must not declare workers lost
// whose heartbeats were held up in the same queue.
import pino from "pino";
import { describe, expect, it } from "vitest";
import type { CacheStorage } from "../cache/storage.js";
import { OutputPublisher } from "../cache/staged-output.js";
import { generateKeyPair, parseSecretKey } from "../../proto/nix/mod.js";
import { VirtualClock } from "../core/clock.js";
import { TransientError } from "../core/errors.js";
import { Scheduler } from "../core/scheduler.js";
import { mkNode, mkWorker } from "../core/test-support.js";
import { MemoryStore } from "../store/memory-store.js";
import { Coordinator } from "./coordinator.js";
import type { WorkerSession } from "./worker-service.js";

const logger = pino({ level: "silent" });

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
    const clock = new VirtualClock(1_000_000);
    const store = new FlakyStore();
    await store.load();
    const scheduler = new Scheduler({ heartbeatTimeoutMs: 4000 });
    const cache = { has: async () => false } as unknown as CacheStorage;
    const info = { version: "t", storeDir: "/tmp/nix/store", cacheUrl: "http://cache", cachePublicKey: "k:x", heartbeatIntervalMs: 1000 };
    const publisher = new OutputPublisher({ storage: cache, signingKey: parseSecretKey(generateKeyPair("stall-test-1").secretKey), logger });
    const coord = new Coordinator({ scheduler, store, cache, clock, logger, info, trustSubmittedNodes: true, publisher });
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
