// One conformance suite for every FarmStore: memory-store.test.ts and
// nats-store.test.ts run it against their store. It checks durability
// through a reopen, compare-and-set conflicts, events, scale, and that a
// scheduler restored from the store reproduces the live status.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { newDrvRecord, type DrvRecord } from "../core/drv-state.js";
import type { FarmEvent } from "../core/effects.js";
import { InvalidInputError, StoreConflictError } from "../core/errors.js";
import { Scheduler } from "../core/scheduler.js";
import { Harness, drvPathOf, mkNode, mkSubmission, mkWorker } from "../core/test-support.js";
import type { JobRecord } from "../core/types.js";
import type { LearnedEstimate } from "../core/estimator.js";
import { applyEffects, drvKey, type FarmStore } from "./farm-store.js";

/** A store the suite can also read events back from. */
export type TestableStore = FarmStore & { readEvents(): Promise<FarmEvent[]> };

/** A fresh, empty backend; `open` starts another store instance (another coordinator) on it. */
export interface StoreBackend {
  open(): Promise<TestableStore>;
  destroy(): Promise<void>;
}

/** How the suite obtains backends. */
export interface StoreFactory {
  create(): Promise<StoreBackend>;
}

function job(jobId: string, state: JobRecord["state"] = "running"): JobRecord {
  return { jobId, description: "d", roots: [drvPathOf("a")], idempotencyKey: "", state, createdAtMs: 1, finishedAtMs: null };
}

function rec(name: string, patch: Partial<DrvRecord> = {}): DrvRecord {
  return { ...newDrvRecord(drvPathOf(name), 0), jobs: ["j1"], ...patch };
}

const byPath = <T extends { drvPath: string }>(xs: T[]) => new Map(xs.map((x) => [x.drvPath, x]));

/** Registers the conformance suite for one FarmStore implementation. */
export function storeConformance(name: string, factory: StoreFactory, opts: { scaleN: number } = { scaleN: 100_000 }): void {
  describe(`FarmStore conformance: ${name}`, () => {
    let backend: StoreBackend;
    const opened: TestableStore[] = [];
    const open = async () => {
      const s = await backend.open();
      opened.push(s);
      return s;
    };

    beforeEach(async () => {
      backend = await factory.create();
    });
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close();
      await backend.destroy();
    });

    it("starts empty", async () => {
      expect(await (await open()).load()).toEqual({ nodes: [], drvs: [], jobs: [], estimates: [] });
    });

    it("keeps learned estimates across a reopen, last writer winning per package", async () => {
      const s = await open();
      const estimate = (key: string, peak: number): LearnedEstimate => ({ format: 1, key, samples: [{ cores: 2, n: 1, durationMs: 1000, peakBytes: peak }] } as unknown as LearnedEstimate);
      await s.putEstimates([estimate("gcc@10", 1), estimate("hello@2", 5)]);
      await s.putEstimates([estimate("gcc@10", 2)]);
      const loaded = await (await open()).load();
      const byKey = new Map((loaded.estimates ?? []).map((e) => [e.key, e]));
      expect([...byKey.keys()].sort()).toEqual(["gcc@10", "hello@2"]);
      expect(byKey.get("gcc@10")).toEqual(estimate("gcc@10", 2));
    });

    it("round-trips nodes, records and jobs through a reopen, keeping the last write per key", async () => {
      const s = await open();
      await s.load();
      const nodes = [mkNode("a", [], { outputs: ["out", "dev"] }), mkNode("b", ["a"])];
      await s.putNodes(nodes);
      await s.putDrvs([rec("a"), rec("b"), rec("a", { state: "ready" })]);
      await s.putDrvs([rec("b", { state: "building", epoch: 3, workerId: "w1" })]);
      await s.putJob(job("j1"));
      await s.putJob(job("j1", "succeeded"));
      const loaded = await (await open()).load();
      expect(byPath(loaded.nodes)).toEqual(byPath(nodes));
      expect(byPath(loaded.drvs)).toEqual(byPath([rec("a", { state: "ready" }), rec("b", { state: "building", epoch: 3, workerId: "w1" })]));
      expect(loaded.jobs).toEqual([job("j1", "succeeded")]);
    });

    it("exposes growing revisions for what it read and wrote", async () => {
      const s = await open();
      await s.load();
      expect(s.revision("drvs", drvKey(drvPathOf("a")))).toBeUndefined();
      await s.putDrvs([rec("a")]);
      const r1 = s.revision("drvs", drvKey(drvPathOf("a")))!;
      await s.putDrvs([rec("a", { state: "ready" })]);
      const r2 = s.revision("drvs", drvKey(drvPathOf("a")))!;
      expect(r2).toBeGreaterThan(r1);
      const other = await open();
      await other.load();
      expect(other.revision("drvs", drvKey(drvPathOf("a")))).toBe(r2);
    });

    it("detects a write from a coordinator whose view is stale", async () => {
      const old = await open();
      await old.load();
      await old.putDrvs([rec("a")]);
      await old.putJob(job("j1"));
      const current = await open();
      await current.load();
      await current.putDrvs([rec("a", { state: "ready", epoch: 5 })]);
      await current.putJob(job("j1", "cancelled"));
      await expect(old.putDrvs([rec("a", { state: "building" })])).rejects.toThrow(StoreConflictError);
      await expect(old.putJob(job("j1", "failed"))).rejects.toThrow(StoreConflictError);
      // A writer that never loaded cannot create over an existing key either.
      const blind = await open();
      await expect(blind.putJob(job("j1"))).rejects.toThrow(StoreConflictError);
      const loaded = await (await open()).load();
      expect(loaded.drvs).toEqual([rec("a", { state: "ready", epoch: 5 })]);
      expect(loaded.jobs).toEqual([job("j1", "cancelled")]);
      // The current writer carries on.
      await current.putDrvs([rec("a", { state: "done" })]);
    });

    it("rejects keys that are not drv store paths or job ids", async () => {
      const s = await open();
      await expect(s.putDrvs([{ ...rec("a"), drvPath: "/nope.drv" }])).rejects.toThrow(InvalidInputError);
      await expect(s.putJob(job("a b"))).rejects.toThrow(InvalidInputError);
    });

    it("publishes events in order", async () => {
      const s = await open();
      const events: FarmEvent[] = [
        { type: "job.submitted", atMs: 1, jobId: "j1", description: "d", roots: [], total: 3 },
        { type: "worker.lost", atMs: 2, workerId: "w", requeued: [drvPathOf("a")] },
        { type: "job.finished", atMs: 3, jobId: "j1", state: "succeeded" },
      ];
      for (const e of events) await s.publish(e);
      expect(await s.readEvents()).toEqual(events);
    });

    it(`stores and loads ${opts.scaleN} nodes and records in seconds`, async () => {
      const nodes = Array.from({ length: opts.scaleN }, (_, i) => mkNode(`s${i}`, i === 0 ? [] : [`s${i - 1}`]));
      const records = nodes.map((n, i) => ({ ...newDrvRecord(n.drvPath, i), jobs: ["big"] }));
      const s = await open();
      await s.load();
      const t0 = performance.now();
      await s.putNodes(nodes);
      await s.putDrvs(records);
      const tPut = performance.now() - t0;
      const loaded = await (await open()).load();
      const tAll = performance.now() - t0;
      console.log(`${name}: put ${opts.scaleN} nodes + records ${tPut.toFixed(0)} ms, load ${(tAll - tPut).toFixed(0)} ms`);
      expect(loaded.nodes).toHaveLength(opts.scaleN);
      expect(loaded.drvs).toHaveLength(opts.scaleN);
      expect(byPath(loaded.drvs).get(drvPathOf("s77"))).toEqual(records[77]);
    }, 180_000);

    it("holds what a scheduler persisted: a restored scheduler reproduces the job status", async () => {
      const s = await open();
      await s.load();
      const h = new Harness();
      const step = async (f: Parameters<Harness["run"]>[0]) => {
        const eff = h.run(f);
        await applyEffects(s, eff);
        return eff;
      };
      await step((x, t) => x.workerJoined(t, mkWorker("w1", { maxBuilds: 2 })));
      const nodes = [mkNode("a"), mkNode("b", ["a"]), mkNode("c", ["a"]), mkNode("d", ["b", "c"])];
      const [a] = h.assigns(await step((x, t) => x.submitJob(t, mkSubmission("j1", nodes, ["d"]))));
      const [b] = h.assigns(await step((x, t) => x.buildReported(t, "w1", reportOf(a), true)));
      await step((x, t) => x.buildReported(t, "w1", { ...reportOf(b), outcome: "failed", error: "boom" }, false));

      const snapshot = await (await open()).load();
      const restored = Scheduler.restore(h.clock.now(), snapshot);
      const now = h.clock.now();
      // Workers are not stored: hold reasons and the ETA (which needs active slots) may differ.
      const norm = (sch: Scheduler) => {
        const st = sch.jobStatus("j1", now, { derivations: true })!;
        return { ...st, etaMs: 0, derivations: st.derivations.map((d) => ({ ...d, holdReason: "" })) };
      };
      expect(norm(restored)).toEqual(norm(h.scheduler));
      expect(restored.jobStatus("j1", now)!.failures[0]).toMatchObject({ name: "b", reason: "boom" });
      expect((await s.readEvents()).map((e) => e.type)).toContain("job.submitted");
    });
  });
}

function reportOf(a: { spec: { lease: { drvPath: string; epoch: number }; cores: number } }) {
  return { lease: { ...a.spec.lease }, outcome: "succeeded" as const, outputs: [], durationMs: 10, peakMemoryBytes: 1, cores: a.spec.cores, error: "" };
}
