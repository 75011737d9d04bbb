// Test helper: a Coordinator shell on a virtual clock, a given store and
// scheduler, a cache that holds nothing, and a silent logger.
import pino from "pino";
import type { CacheStorage } from "../cache/storage.js";
import { VirtualClock } from "../core/clock.js";
import type { Scheduler } from "../core/scheduler.js";
import type { FarmStore } from "../store/farm-store.js";
import { Coordinator } from "./coordinator.js";

/** A shell for `scheduler` over `store`, with the clock that drives it. */
export function testShell(scheduler: Scheduler, store: FarmStore): { coord: Coordinator; clock: VirtualClock } {
  const clock = new VirtualClock(1_000_000);
  const cache = { has: async () => false } as unknown as CacheStorage;
  const info = { version: "t", storeDir: "/tmp/nix/store", cacheUrl: "http://cache", cachePublicKey: "k:x", heartbeatIntervalMs: 1000 };
  return { coord: new Coordinator({ scheduler, store, cache, clock, logger: pino({ level: "silent" }), info }), clock };
}
