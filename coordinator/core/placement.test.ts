import { describe, expect, it } from "vitest";
import { newDrvRecord } from "./drv-state.js";
import { SimpleFit, platformMatches, type WorkerCandidate } from "./placement.js";
import { mkNode, mkWorker } from "./test-support.js";
import type { DrvNode, WorkerInfo } from "./types.js";
import { newWorkerRecord } from "./worker-state.js";

function cand(info: WorkerInfo, running = 0): WorkerCandidate {
  const w = newWorkerRecord(info, 0, 1000);
  return { worker: w, running, reservedCores: 0, reservedMemoryBytes: 0 };
}

function place(node: DrvNode, candidates: WorkerCandidate[], coreLimit = 0) {
  const record = newDrvRecord(node.drvPath, 0);
  record.coreLimit = coreLimit;
  return new SimpleFit().place({ now: 0, node, record, estimate: { memoryBytes: null, durationMs: null }, candidates });
}

describe("platformMatches", () => {
  it("builtin runs on every worker, other systems need to be listed", () => {
    const x86 = mkWorker("a");
    expect(platformMatches(x86, "builtin", [])).toBe(true);
    expect(platformMatches(x86, "x86_64-linux", [])).toBe(true);
    expect(platformMatches(x86, "i686-linux", [])).toBe(false);
    expect(platformMatches(mkWorker("b", { systems: ["x86_64-linux", "i686-linux"] }), "i686-linux", [])).toBe(true);
  });

  it("requires every feature", () => {
    const w = mkWorker("a", { features: ["kvm", "big-parallel"] });
    expect(platformMatches(w, "x86_64-linux", ["kvm"])).toBe(true);
    expect(platformMatches(w, "x86_64-linux", ["kvm", "nixos-test"])).toBe(false);
  });
});

describe("simple-fit", () => {
  it("gives each slot an equal share of cores and memory", () => {
    const d = place(mkNode("a"), [cand(mkWorker("w", { cores: 5, maxBuilds: 2, memoryBytes: 1000 }))]);
    expect(d).toEqual({ ok: true, workerId: "w", cores: 2, memoryReservationBytes: 500 });
  });

  it("never grants fewer than one core", () => {
    const d = place(mkNode("a"), [cand(mkWorker("w", { cores: 1, maxBuilds: 4 }))]);
    expect(d.ok && d.cores).toBe(1);
  });

  it("respects the OOM core cap", () => {
    const d = place(mkNode("a"), [cand(mkWorker("w", { cores: 8, maxBuilds: 1 }))], 2);
    expect(d.ok && d.cores).toBe(2);
  });

  it("picks the least loaded fitting worker, ties by id", () => {
    const busy = cand(mkWorker("a", { maxBuilds: 2 }), 1);
    const idle = cand(mkWorker("b", { maxBuilds: 2 }));
    const idle2 = cand(mkWorker("c", { maxBuilds: 2 }));
    expect(place(mkNode("x"), [busy, idle2, idle])).toMatchObject({ ok: true, workerId: "b" });
  });

  it("skips full, inactive, wrong-system and missing-feature workers, and says why", () => {
    const full = cand(mkWorker("full", { maxBuilds: 1 }), 1);
    expect(place(mkNode("a"), [full])).toEqual({ ok: false, reason: "no active worker has a free slot" });
    const draining = cand(mkWorker("d"));
    draining.worker.state = "draining";
    expect(place(mkNode("a"), [draining]).ok).toBe(false);
    expect(place(mkNode("a", [], { system: "i686-linux" }), [cand(mkWorker("x"))])).toEqual({
      ok: false,
      reason: "no free worker builds system i686-linux",
    });
    expect(place(mkNode("a", [], { requiredSystemFeatures: ["kvm"] }), [cand(mkWorker("x"))])).toEqual({
      ok: false,
      reason: "no free worker has features [kvm]",
    });
    expect(place(mkNode("a", [], { system: "builtin" }), [cand(mkWorker("x"))]).ok).toBe(true);
  });
});
