import { describe, expect, it } from "vitest";
import { VirtualClock } from "../core/clock.js";
import type { Effect } from "../core/effects.js";
import { EffectRunner, workerMessage } from "./effect-runner.js";

const abort: Effect = { kind: "abort", workerId: "w1", lease: { drvPath: "/p", epoch: 2 }, reason: "stale" };

describe("EffectRunner", () => {
  it("runs events one at a time and delivers each event's effects only after they are stored", async () => {
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
    const second = runner.step("second", () => (log.push("event second"), []), () => []);
    await new Promise((r) => setTimeout(r, 10));
    expect(log).toEqual(["event first at 5", "persist first"]);
    release();
    expect(await first).toEqual([abort]);
    await second;
    expect(log).toEqual(["event first at 5", "persist first", "deliver 1", "event second", "persist second", "deliver 0"]);
  });

  it("turns message effects into wire messages for their worker", () => {
    expect(workerMessage(abort)).toEqual({ workerId: "w1", msg: { msg: { $case: "abort", value: { lease: abort.lease, reason: "stale" } } } });
    expect(workerMessage({ kind: "heartbeatAck", workerId: "w1", deadlineMs: 1 })).toBeNull();
  });
});
