import { describe, expect, it } from "vitest";
import {
  DRV_STATES,
  DRV_TRANSITIONS,
  becomeReady,
  cancel,
  canTransition,
  complete,
  fail,
  lease,
  markCached,
  newDrvRecord,
  requeue,
  revive,
  withdraw,
  type DrvRecord,
} from "./drv-state.js";
import { InvalidTransitionError } from "./errors.js";
import type { DrvState } from "./types.js";

const grant = { workerId: "w1", cores: 2, memoryBytes: 1024, now: 5 };

// Every verb, with the states it may start from and where it lands.
const VERBS: { name: string; run: (r: DrvRecord) => void; from: DrvState[]; to: (from: DrvState) => DrvState }[] = [
  { name: "becomeReady", run: (r) => becomeReady(r), from: ["waiting"], to: () => "ready" },
  { name: "lease", run: (r) => void lease(r, grant), from: ["ready"], to: () => "building" },
  { name: "complete", run: (r) => complete(r, 9), from: ["building"], to: () => "done" },
  { name: "markCached", run: (r) => markCached(r, 9), from: ["waiting", "ready", "failed", "cancelled"], to: () => "done" },
  { name: "requeue", run: (r) => requeue(r, "x"), from: ["building"], to: () => "ready" },
  { name: "fail", run: (r) => fail(r, 9, "boom"), from: ["building", "waiting"], to: () => "failed" },
  { name: "cancel", run: (r) => cancel(r, 9, "no"), from: ["waiting", "ready", "building"], to: () => "cancelled" },
  { name: "revive(waiting)", run: (r) => revive(r, false), from: ["failed", "cancelled"], to: () => "waiting" },
  { name: "revive(ready)", run: (r) => revive(r, true), from: ["failed", "cancelled"], to: () => "ready" },
  { name: "withdraw", run: (r) => withdraw(r, 9, "withdrawn"), from: ["done"], to: () => "failed" },
];

function recIn(state: DrvState): DrvRecord {
  const r = newDrvRecord("/tmp/nix/store/00000000000000000000000000000000-x.drv", 0);
  r.state = state;
  return r;
}

describe("derivation transition table", () => {
  it("every verb edge is in the table, and every table edge has a verb", () => {
    const verbEdges = new Set<string>();
    for (const v of VERBS) for (const f of v.from) verbEdges.add(`${f}->${v.to(f)}`);
    for (const e of verbEdges) expect(canTransition(e.split("->")[0] as DrvState, e.split("->")[1] as DrvState), e).toBe(true);
    for (const from of DRV_STATES) for (const to of DRV_TRANSITIONS[from]) expect(verbEdges.has(`${from}->${to}`), `${from}->${to}`).toBe(true);
  });

  for (const v of VERBS) {
    for (const state of DRV_STATES) {
      const legal = v.from.includes(state);
      it(`${v.name} from ${state} ${legal ? "moves to " + v.to(state) : "throws"}`, () => {
        const r = recIn(state);
        if (legal) {
          v.run(r);
          expect(r.state).toBe(v.to(state));
        } else {
          expect(() => v.run(r)).toThrow(InvalidTransitionError);
          expect(r.state).toBe(state);
        }
      });
    }
  }

  it("done is left only when its outputs are withdrawn from the cache", () => {
    expect(DRV_TRANSITIONS.done).toEqual(["failed"]);
  });
});

describe("derivation verbs", () => {
  it("lease grants a new epoch each time; requeue fences the old lease", () => {
    const r = recIn("ready");
    expect(lease(r, grant)).toBe(1);
    expect(r).toMatchObject({ workerId: "w1", cores: 2, reservedMemoryBytes: 1024, attempts: 1, startedAtMs: 5 });
    requeue(r, "lost");
    expect(r.epoch).toBe(2);
    expect(r.workerId).toBeNull();
    expect(lease(r, grant)).toBe(3);
    expect(r.attempts).toBe(2);
  });

  it("cancel from building bumps the epoch, from waiting does not", () => {
    const b = recIn("ready");
    lease(b, grant);
    cancel(b, 1, "x");
    expect(b.epoch).toBe(2);
    const w = recIn("waiting");
    cancel(w, 1, "x");
    expect(w.epoch).toBe(0);
  });

  it("revive restarts the retry budgets but keeps attempts and the OOM core cap", () => {
    const r = recIn("failed");
    Object.assign(r, { transientFailures: 3, oomKills: 2, attempts: 5, coreLimit: 1, reason: "boom" });
    revive(r, false);
    expect(r).toMatchObject({ state: "waiting", transientFailures: 0, oomKills: 0, attempts: 5, coreLimit: 1, reason: "" });
  });

  it("markCached records that the outputs came from the cache", () => {
    const r = recIn("waiting");
    markCached(r, 7);
    expect(r).toMatchObject({ state: "done", cached: true, finishedAtMs: 7 });
  });
});
