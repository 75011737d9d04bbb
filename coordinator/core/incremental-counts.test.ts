// The counts the scheduler keeps at each transition (derivations and jobs by
// state, per-job counts, failures and running builds) against a full recount,
// after seeded random sequences of every kind of event, including a restore.
import { describe, expect, it } from "vitest";
import { SeededRandom } from "./clock.js";
import { DRV_STATES, type DrvRecord } from "./drv-state.js";
import { effectsOf, type EffectOf } from "./effects.js";
import { Scheduler } from "./scheduler.js";
import { drvPathOf, Harness, mkNode, mkReport, mkSubmission, mkWorker } from "./test-support.js";
import type { BuildOutcome, DrvNode } from "./types.js";

const OUTCOMES: BuildOutcome[] = ["succeeded", "succeeded", "succeeded", "failed", "out-of-memory", "inputs-unavailable", "upload-failed", "disk-full"];

/** A pool of 60 nodes, each using up to 3 earlier ones: jobs take overlapping slices of it. */
function pool(rnd: SeededRandom): DrvNode[] {
  const nodes: DrvNode[] = [];
  for (let i = 0; i < 60; i++) {
    const inputs = new Set<string>();
    for (let k = rnd.int(4); k > 0 && i > 0; k--) inputs.add(`n${rnd.int(i)}`);
    nodes.push(mkNode(`n${i}`, [...inputs]));
  }
  return nodes;
}

/** The closure of `roots` in `nodes`. */
function closure(nodes: DrvNode[], roots: string[]): DrvNode[] {
  const byPath = new Map(nodes.map((n) => [n.drvPath, n]));
  const seen = new Set(roots.map(drvPathOf));
  const stack = [...seen];
  while (stack.length) for (const i of byPath.get(stack.pop()!)!.inputDrvs) if (!seen.has(i.drvPath) && seen.add(i.drvPath)) stack.push(i.drvPath);
  return nodes.filter((n) => seen.has(n.drvPath));
}

function recount(s: Scheduler): void {
  const drvs = s.snapshot().drvs;
  const byState = Object.fromEntries(DRV_STATES.map((st) => [st, drvs.filter((r) => r.state === st).length]));
  expect(s.stateCounts()).toEqual(byState);
  const jobs = s.jobs();
  for (const st of ["running", "succeeded", "failed", "cancelled"] as const) expect(s.jobStateCounts()[st]).toBe(jobs.filter((j) => j.state === st).length);
  for (const job of jobs) {
    const mine = drvs.filter((r) => r.jobs.includes(job.jobId));
    const n = (pred: (r: DrvRecord) => boolean) => mine.filter(pred).length;
    const st = s.jobStatus(job.jobId, 0)!;
    expect(st.counts).toEqual({
      total: mine.length,
      done: n((r) => r.state === "done"),
      cached: n((r) => r.state === "done" && r.cached),
      building: n((r) => r.state === "building"),
      queued: n((r) => r.state === "ready"),
      waiting: n((r) => r.state === "waiting"),
      failed: n((r) => r.state === "failed"),
      cancelled: n((r) => r.state === "cancelled"),
    });
    expect(st.failures.map((f) => f.drvPath).sort()).toEqual(mine.filter((r) => r.state === "failed").map((r) => r.drvPath).sort());
  }
}

function randomRun(seed: number): void {
  const rnd = new SeededRandom(seed);
  const nodes = pool(rnd);
  let h = new Harness({ heartbeatTimeoutMs: 1e9, maxTransientRetries: 1, maxOomRetries: 1 });
  let running: EffectOf<"assign">[] = [];
  const workers = ["w1", "w2", "w3"];
  let jobs = 0;
  const track = (effects: ReturnType<Harness["run"]>) => {
    running.push(...effectsOf(effects, "assign"));
    const aborted = new Set(effectsOf(effects, "abort").map((a) => `${a.workerId} ${a.lease.drvPath} ${a.lease.epoch}`));
    running = running.filter((a) => !aborted.has(`${a.workerId} ${a.spec.lease.drvPath} ${a.spec.lease.epoch}`));
  };
  for (const w of workers) track(h.run((s, t) => s.workerJoined(t, mkWorker(w, { maxBuilds: 2 }))));
  for (let step = 0; step < 300; step++) {
    const pick = rnd.next();
    h.clock.advance(200 + rnd.int(2000));
    if (pick < 0.12) {
      const roots = [`n${20 + rnd.int(40)}`, `n${rnd.int(60)}`];
      const sub = closure(nodes, roots);
      const cached = new Set(sub.filter(() => rnd.next() < 0.1).map((n) => n.drvPath));
      track(h.run((s, t) => s.submitJob(t, mkSubmission(`j${jobs++}`, sub, roots, { cachedDrvPaths: cached }))));
    } else if (pick < 0.6 && running.length > 0) {
      const a = running.splice(rnd.int(running.length), 1)[0];
      const report = mkReport(a, OUTCOMES[rnd.int(OUTCOMES.length)]);
      track(h.run((s, t) => s.buildReported(t, a.workerId, report, rnd.next() < 0.95)));
    } else if (pick < 0.66 && jobs > 0) {
      track(h.run((s, t) => s.cancelJob(t, `j${rnd.int(jobs)}`)));
    } else if (pick < 0.72) {
      const done = h.scheduler.snapshot().drvs.filter((r) => r.state === "done");
      if (done.length) track(h.run((s, t) => s.outputsWithdrawn(t, [done[rnd.int(done.length)].drvPath], "withdrawn")));
    } else if (pick < 0.78) {
      const w = workers[rnd.int(workers.length)];
      // Lost now (a revoked token): its builds requeue.
      track(h.run((s, t) => s.workerDisconnected(t, w)));
      track(h.run((s, t) => s.workerRevoked(t, w)));
      running = running.filter((a) => a.workerId !== w);
      track(h.run((s, t) => s.workerJoined(t, mkWorker(w, { maxBuilds: 2 }))));
    } else if (pick < 0.81) {
      // A restart: the restored scheduler recounts from what was loaded; builds come back with their workers.
      const restored = Scheduler.restore(h.clock.now(), h.scheduler.snapshot(), { heartbeatTimeoutMs: 1e9, maxTransientRetries: 1, maxOomRetries: 1 });
      const clock = h.clock.now();
      h = new Harness({}, restored);
      h.clock.advance(clock - h.clock.now());
      for (const w of workers) {
        const leases = running.filter((a) => a.workerId === w).map((a) => a.spec.lease);
        track(h.run((s, t) => s.workerJoined(t, mkWorker(w, { maxBuilds: 2 }), leases)));
      }
    } else {
      for (const w of workers) {
        const leases = running.filter((a) => a.workerId === w).map((a) => a.spec.lease);
        track(h.run((s, t) => s.heartbeat(t, w, { freeMemoryBytes: 4 * 2 ** 30, freeDiskBytes: 50 * 2 ** 30, uptimeSeconds: 1, running: leases })));
      }
    }
    recount(h.scheduler);
  }
}

describe("incremental counts", () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8])("equal a full recount after random events (seed %i)", (seed) => {
    randomRun(seed);
  });
});
