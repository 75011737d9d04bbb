// Test helper: a Coordinator shell on a virtual clock, a given store and
// scheduler, a cache that holds nothing, and a silent logger. Submitted nodes
// are taken as they are (there are no .drv files).
import pino from "pino";
import type { CacheStorage } from "../cache/storage.js";
import { VirtualClock } from "../core/clock.js";
import type { Scheduler } from "../core/scheduler.js";
import type { FarmStore } from "../store/farm-store.js";
import { Coordinator } from "./coordinator.js";
import { OutputPublisher } from "../cache/staged-output.js";
import { InlineOutputStager } from "../cache/inline-output.js";
import { generateKeyPair, parseSecretKey } from "../../proto/nix/mod.js";

/** A shell for `scheduler` over `store`, with the clock that drives it. */
export function testShell(scheduler: Scheduler, store: FarmStore): { coord: Coordinator; clock: VirtualClock } {
  const clock = new VirtualClock(1_000_000);
  const cache = { has: async () => false } as unknown as CacheStorage;
  const info = { version: "t", storeDir: "/tmp/nix/store", cacheUrl: "http://cache", cachePublicKey: "k:x", heartbeatIntervalMs: 1000 };
  const logger = pino({ level: "silent" });
  // Nodes are made up (no .drv files) and nothing is ever staged: acceptance needs no real cache.
  const signingKey = parseSecretKey(generateKeyPair("shell-test-1").secretKey);
  const publisher = new OutputPublisher({ storage: cache, signingKey, logger });
  const inlineOutputs = new InlineOutputStager({ storage: cache, storeDir: info.storeDir, signingKey, maxNarBytes: 1 << 20, narCompression: "gzip", logger });
  return { coord: new Coordinator({ scheduler, store, cache, clock, logger, info, trustSubmittedNodes: true, publisher, inlineOutputs }), clock };
}
