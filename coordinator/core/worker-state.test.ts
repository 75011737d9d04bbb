import { describe, expect, it } from "vitest";
import { InvalidTransitionError } from "./errors.js";
import { mkWorker } from "./test-support.js";
import type { WorkerState } from "./types.js";
import {
  WORKER_STATES,
  WORKER_TRANSITIONS,
  canWorkerTransition,
  disconnect,
  drain,
  markLost,
  newWorkerRecord,
  placeholderWorker,
  rejoin,
  touch,
  type WorkerRecord,
} from "./worker-state.js";

const hb = { freeMemoryBytes: 1, freeDiskBytes: 2, uptimeSeconds: 3, running: [] };
const VERBS: { name: string; run: (w: WorkerRecord) => void; from: WorkerState[]; to: (f: WorkerState) => WorkerState }[] = [
  { name: "rejoin", run: (w) => rejoin(w, mkWorker("w"), 1, 2), from: ["active", "disconnected", "draining", "lost"], to: () => "active" },
  { name: "heartbeat", run: (w) => touch(w, 1, 2, hb), from: ["active", "draining"], to: (f) => f },
  { name: "disconnect", run: (w) => disconnect(w, 1), from: ["active", "draining"], to: () => "disconnected" },
  { name: "drain", run: (w) => drain(w, 1, 5, 6), from: ["active", "draining"], to: () => "draining" },
  { name: "markLost", run: (w) => markLost(w), from: ["active", "disconnected", "draining"], to: () => "lost" },
];

function workerIn(state: WorkerState): WorkerRecord {
  const w = newWorkerRecord(mkWorker("w"), 0, 10);
  w.state = state;
  return w;
}

describe("worker transition table", () => {
  it("verb edges and table edges are the same set", () => {
    const verbEdges = new Set<string>();
    for (const v of VERBS) for (const f of v.from) verbEdges.add(`${f}->${v.to(f)}`);
    for (const e of verbEdges) {
      const [f, t] = e.split("->") as [WorkerState, WorkerState];
      expect(canWorkerTransition(f, t), e).toBe(true);
    }
    for (const from of WORKER_STATES) for (const to of WORKER_TRANSITIONS[from]) expect(verbEdges.has(`${from}->${to}`), `${from}->${to}`).toBe(true);
  });

  for (const v of VERBS) {
    for (const state of WORKER_STATES) {
      const legal = v.from.includes(state);
      it(`${v.name} from ${state} ${legal ? "works" : "throws"}`, () => {
        const w = workerIn(state);
        if (legal) {
          v.run(w);
          expect(w.state).toBe(v.to(state));
        } else {
          expect(() => v.run(w)).toThrow(InvalidTransitionError);
          expect(w.state).toBe(state);
        }
      });
    }
  }
});

describe("worker records", () => {
  it("heartbeat moves the deadline and records free resources", () => {
    const w = workerIn("active");
    touch(w, 100, 200, { freeMemoryBytes: 7, freeDiskBytes: 8, uptimeSeconds: 9, running: [] });
    expect(w).toMatchObject({ lastSeenMs: 100, deadlineMs: 200, freeMemoryBytes: 7, freeDiskBytes: 8, uptimeSeconds: 9 });
  });

  it("a placeholder from a restore is disconnected and takes no work", () => {
    const w = placeholderWorker("ghost", 0, 50);
    expect(w.state).toBe("disconnected");
    expect(w.info.maxBuilds).toBe(0);
    expect(w.deadlineMs).toBe(50);
  });

  it("rejoin clears a drain and takes the new info", () => {
    const w = workerIn("draining");
    w.drainDeadlineMs = 5;
    rejoin(w, mkWorker("w", { cores: 16 }), 1, 99);
    expect(w).toMatchObject({ state: "active", drainDeadlineMs: null, deadlineMs: 99 });
    expect(w.info.cores).toBe(16);
  });

});
