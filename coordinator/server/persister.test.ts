// The shell's persistence: retried until the store is back, then losses are held off for a while.
import pino from "pino";
import { describe, expect, it } from "vitest";
import { VirtualClock } from "../core/clock.js";
import { newDrvRecord } from "../core/drv-state.js";
import type { Effect } from "../core/effects.js";
import { StoreConflictError, TransientError } from "../core/errors.js";
import { drvPathOf } from "../core/test-support.js";
import { MemoryStore } from "../store/memory-store.js";
import { Persister } from "./persister.js";

const logger = pino({ level: "silent" });
const effects: Effect[] = [{ kind: "persistDrvs", records: [newDrvRecord(drvPathOf("a"), 1)] }];

/** A MemoryStore whose next `failures` drv writes fail like an unreachable NATS (or with `error`). */
function flakyStore(failures: number, error: () => Error = () => new TransientError("nats is away")) {
  const store = new MemoryStore();
  let left = failures;
  const putDrvs = store.putDrvs.bind(store);
  store.putDrvs = async (records) => {
    if (left-- > 0) throw error();
    return putDrvs(records);
  };
  return store;
}

describe("Persister", () => {
  it("retries until the store is back, then holds worker losses for the heartbeat timeout", async () => {
    const clock = new VirtualClock(1000);
    const store = flakyStore(3);
    await store.load();
    const p = new Persister(store, clock, logger, { lossHoldMs: 5000, minWaitMs: 1, maxWaitMs: 2 });
    expect(p.holdsLosses(clock.now())).toBe(false);
    await p.persist("result", effects);
    expect((await store.load()).drvs).toHaveLength(1);
    expect(p.holdsLosses(clock.now())).toBe(true);
    expect(p.holdsLosses(clock.now() + 4999)).toBe(true);
    expect(p.holdsLosses(clock.now() + 5000)).toBe(false);
  });

  it("holds worker losses while a write is being retried: events computed meanwhile see the stall", async () => {
    const clock = new VirtualClock(1000);
    let down = true;
    const store = flakyStore(0);
    await store.load();
    const putDrvs = store.putDrvs.bind(store);
    store.putDrvs = async (records) => {
      if (down) throw new TransientError("nats is away");
      return putDrvs(records);
    };
    const p = new Persister(store, clock, logger, { lossHoldMs: 5000, minWaitMs: 1, maxWaitMs: 2 });
    const pending = p.persist("submit", effects);
    await new Promise((r) => setTimeout(r, 10));
    expect(p.holdsLosses(clock.now() + 60_000)).toBe(true); // however long it lasts
    down = false;
    await pending;
    expect(p.holdsLosses(clock.now() + 4999)).toBe(true);
    expect(p.holdsLosses(clock.now() + 5000)).toBe(false);
  });

  it("once stopped (the coordinator shutting down), fails a write instead of retrying it against a closing store", async () => {
    const clock = new VirtualClock(1000);
    const store = flakyStore(1_000_000);
    await store.load();
    const p = new Persister(store, clock, logger, { lossHoldMs: 5000, minWaitMs: 1, maxWaitMs: 2 });
    const pending = p.persist("disconnect", effects);
    await new Promise((r) => setTimeout(r, 20)); // retrying meanwhile
    p.stop();
    await expect(pending).rejects.toThrow(/nats is away/);
    await expect(p.persist("disconnect", effects)).rejects.toThrow(/nats is away/);
    expect(p.holdsLosses(clock.now())).toBe(false); // no write is being retried any more
  });

  it("does not hold losses when writes go through the first time", async () => {
    const clock = new VirtualClock(1000);
    const store = new MemoryStore();
    await store.load();
    const p = new Persister(store, clock, logger, { lossHoldMs: 5000 });
    await p.persist("tick", effects);
    expect(p.holdsLosses(clock.now())).toBe(false);
  });

  it("stops, and says so, when another coordinator wrote behind its back", async () => {
    const store = flakyStore(1, () => new StoreConflictError("farm-drvs", "k", 1));
    await store.load();
    let fenced: Error | undefined;
    const p = new Persister(store, new VirtualClock(0), logger, { lossHoldMs: 5000 }, (err) => (fenced = err));
    await expect(p.persist("result", effects)).rejects.toBeInstanceOf(StoreConflictError);
    expect(fenced).toBeInstanceOf(StoreConflictError);
  });
});
