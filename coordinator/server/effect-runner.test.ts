import { describe, expect, it } from "vitest";
import { VirtualClock } from "../core/clock.js";
import type { Effect } from "../core/effects.js";
import { EffectRunner, workerMessage } from "./effect-runner.js";

const abort: Effect = { kind: "abort", workerId: "w1", lease: { drvPath: "/p", epoch: 2 }, reason: "stale" };

describe("EffectRunner", () => {
  it("computes the next event while one is stored, but stores and delivers each only after the one before it", async () => {
    const log: string[] = [];
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    const store = {
      persist: async (what: string) => {
        log.push(`persist ${what}`);
        if (what === "first") await stalled;
      },
    };
    const runner = new EffectRunner(new VirtualClock(5), store, (effects) => log.push(`deliver ${effects.length}`));
    const first = runner.step("first", (now) => (log.push(`event first at ${now}`), [abort]));
    await new Promise((r) => setTimeout(r, 5));
    const second = runner.step("second", () => (log.push("event second"), []), () => []);
    await new Promise((r) => setTimeout(r, 5));
    expect(log).toEqual(["event first at 5", "persist first", "event second"]);
    release();
    expect(await first).toEqual([abort]);
    await second;
    expect(log).toEqual(["event first at 5", "persist first", "event second", "deliver 1", "persist second", "deliver 0"]);
  });

  it("computes at most four batches ahead of the store, and delivers them all in order once it is back", async () => {
    const computed: string[] = [];
    const persisted: string[] = [];
    const delivered: string[] = [];
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    const store = { persist: async (what: string) => (persisted.push(what), stalled) };
    const runner = new EffectRunner(new VirtualClock(0), store, (effects) => effects.forEach((e) => delivered.push(e.kind === "abort" ? e.reason : e.kind)));
    const steps: Promise<Effect[]>[] = [];
    for (const name of ["a", "b", "c", "d", "e", "f"]) {
      steps.push(runner.step(name, () => (computed.push(name), [{ ...abort, reason: name }])));
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(computed).toEqual(["a", "b", "c", "d"]);
    expect(persisted).toEqual(["a"]); // each persists only once the one before it is delivered
    release();
    await Promise.all(steps);
    expect(delivered).toEqual(["a", "b", "c", "d", "e", "f"]);
    expect(persisted.join(" ")).toMatch(/^a b c d e/);
  });

  it("persists the events that queued behind a write as one batch, then delivers each in order", async () => {
    const persisted: string[][] = [];
    const delivered: string[] = [];
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    const store = {
      persist: async (what: string, effects: readonly Effect[]) => {
        persisted.push([what, ...effects.map((e) => (e.kind === "abort" ? e.reason : e.kind))]);
        if (what === "first") await stalled;
      },
    };
    const runner = new EffectRunner(new VirtualClock(5), store, (effects) => effects.forEach((e) => delivered.push(e.kind === "abort" ? e.reason : e.kind)));
    const named = (reason: string): Effect => ({ ...abort, reason });
    const first = runner.step("first", () => [named("a")]);
    await new Promise((r) => setTimeout(r, 5));
    const later = ["b", "c", "d"].map((r) => runner.step(r, () => [named(r)], (effects) => (r === "c" ? [] : effects)));
    await new Promise((r) => setTimeout(r, 5));
    expect(delivered).toEqual([]);
    release();
    expect(await first).toEqual([named("a")]);
    expect(await Promise.all(later)).toEqual([[named("b")], [named("c")], [named("d")]]);
    await runner.idle();
    expect(persisted).toEqual([["first", "a"], ["b and 2 more", "b", "c", "d"]]);
    expect(delivered).toEqual(["a", "b", "d"]);
  });

  it("gives the loop a turn every few ms of compute, and groups those slices into one batch while the one before it is stored", async () => {
    const persisted: string[][] = [];
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    const store = {
      persist: async (what: string, effects: readonly Effect[]) => {
        persisted.push(effects.map((e) => (e.kind === "abort" ? e.reason : e.kind)));
        if (what === "first") await stalled;
      },
    };
    const runner = new EffectRunner(new VirtualClock(0), store, () => {});
    const named = (reason: string): Effect => ({ ...abort, reason });
    const busy = (ms: number) => {
      const until = performance.now() + ms;
      while (performance.now() < until);
    };
    const first = runner.step("first", () => [named("first")]);
    await new Promise((r) => setTimeout(r, 5));
    let turns = 0;
    const counter = setInterval(() => turns++, 0);
    const turnsAt: number[] = [];
    // While "first" is being stored: one event past a slice (5.5 ms), then two short ones in the next slice: 6 ms
    // of compute in two slices, one batch (under its 10 ms, with 4 ms to spare for a busy machine's preemptions;
    // four events of 2 ms left 2 ms, and a loaded CI machine split them). Queued from the check phase, so the
    // second slice comes a whole turn later, after the timers.
    await new Promise((r) => setImmediate(r));
    const names = ["b", "c", "d"];
    const computeMs = [5.5, 0.25, 0.25];
    const later = names.map((r, i) => runner.step(r, () => (turnsAt.push(turns), busy(computeMs[i]), [named(r)])));
    await new Promise((r) => setTimeout(r, 60));
    clearInterval(counter);
    expect(turnsAt.at(-1)!).toBeGreaterThan(turnsAt[0]); // timers ran between the slices
    release();
    await Promise.all([first, ...later]);
    await runner.idle();
    expect(persisted).toEqual([["first"], names]); // stored together, not a batch per slice
  });

  it("runs the next event's prepare while an earlier one's writes are in flight, and persists only once they have landed", async () => {
    const log: string[] = [];
    let land!: () => void;
    const landed = new Promise<void>((r) => (land = r));
    const store = { persist: async (what: string) => void log.push(`persist ${what}`) };
    const runner = new EffectRunner(new VirtualClock(0), store, (effects) => log.push(`deliver ${effects.length}`));
    const first = runner.stepAfter(
      "first",
      async () => (log.push("prepare first"), { written: landed.then(() => void log.push("first written")) }),
      () => (log.push("event first"), [abort]),
      { writes: (p) => p.written },
    );
    const second = runner.stepAfter("second", async () => void log.push("prepare second"), () => (log.push("event second"), []));
    await new Promise((r) => setTimeout(r, 5));
    expect(log).toEqual(["prepare first", "event first", "prepare second", "event second"]);
    land();
    await Promise.all([first, second]);
    expect(log.slice(4)).toEqual(["first written", "persist first and 1 more", "deliver 1", "deliver 0"]);
  });

  it("fails every event of a batch whose write fails, and goes on with the next", async () => {
    let fail = true;
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    const store = {
      persist: async (what: string) => {
        if (what === "first") await stalled;
        else if (fail) {
          fail = false;
          throw new Error("fenced");
        }
      },
    };
    const delivered: number[] = [];
    const runner = new EffectRunner(new VirtualClock(0), store, (effects) => delivered.push(effects.length));
    const first = runner.step("first", () => []);
    await new Promise((r) => setTimeout(r, 5));
    const batch = [runner.step("x", () => [abort]), runner.step("y", () => [abort])];
    await new Promise((r) => setTimeout(r, 5));
    release();
    await first;
    for (const p of batch) await expect(p).rejects.toThrow("fenced");
    expect(await runner.step("after", () => [abort])).toEqual([abort]);
    expect(delivered).toEqual([0, 1]);
  });

  it("runs an event queued by a caller resumed from the last delivery of a drain", async () => {
    const runner = new EffectRunner(new VirtualClock(0), { persist: async () => undefined }, () => undefined);
    const chained = runner.step("first", () => []).then(() => runner.step("second", () => [abort]));
    const timeout = new Promise((r) => setTimeout(() => r("stranded"), 1000));
    expect(await Promise.race([chained, timeout])).toEqual([abort]);
  });

  it("turns message effects into wire messages for their worker", () => {
    expect(workerMessage(abort)).toEqual({ workerId: "w1", msg: { msg: { $case: "abort", value: { lease: abort.lease, reason: "stale" } } } });
    expect(workerMessage({ kind: "heartbeatAck", workerId: "w1", deadlineMs: 1 })).toBeNull();
  });
});
