// A submit admitted in slices (Scheduler.beginSubmit): the same outcome as an
// atomic one, other events in between, and no finishing before it is all in.
import { describe, expect, it } from "vitest";
import { effectsOf, type Effect } from "./effects.js";
import { InvalidInputError } from "./errors.js";
import type { SubmitInProgress } from "./scheduler.js";
import { drvPathOf, Harness, mkNode, mkSubmission, mkWorker } from "./test-support.js";
import type { DrvNode } from "./types.js";

/** A chain of `n` with a side input on every other link. */
function chainWithSides(n: number): DrvNode[] {
  const nodes: DrvNode[] = [];
  for (let i = 0; i < n; i++) {
    const inputs = i === 0 ? [] : [`c${i - 1}`];
    if (i % 2 === 0) {
      nodes.push(mkNode(`s${i}`));
      inputs.push(`s${i}`);
    }
    nodes.push(mkNode(`c${i}`, inputs));
  }
  return nodes;
}

function runToEnd(h: Harness, admission: SubmitInProgress): { steps: number; effects: Effect[] } {
  const effects: Effect[] = [];
  let steps = 0;
  for (let done = false; !done; steps++) {
    h.run(() => {
      const r = admission.step(h.clock.now());
      done = r.done;
      effects.push(...r.effects);
      return r.effects;
    });
  }
  return { steps, effects };
}

/** Reports every running build as succeeded until the job ends (or nothing moves). */
function drainJob(h: Harness, jobId: string): void {
  for (let left = 200; h.scheduler.job(jobId)!.state === "running" && left > 0; left--) {
    h.run((s, t) => s.advanceTo(t));
    const building = h.scheduler.snapshot().drvs.filter((r) => r.state === "building");
    if (building.length === 0) return;
    for (const r of building) {
      const a = h.assigns(h.log).filter((e) => e.spec.lease.drvPath === r.drvPath && e.spec.lease.epoch === r.epoch).at(-1);
      if (a) h.report(a);
    }
  }
}

describe("a submit in slices", () => {
  it("ends with the same records and counts as an atomic submit", () => {
    const nodes = chainWithSides(40);
    const atomic = new Harness();
    atomic.run((s, t) => s.submitJob(t, mkSubmission("j", nodes, ["c39"])));
    const sliced = new Harness();
    const { steps, effects } = runToEnd(sliced, sliced.scheduler.beginSubmit(mkSubmission("j", nodes, ["c39"]), 7));
    expect(steps).toBeGreaterThan(5);
    expect(effectsOf(effects, "jobAccepted")).toEqual([{ kind: "jobAccepted", jobId: "j", existing: false }]);
    expect(sliced.scheduler.jobStatus("j", 0)!.counts).toEqual(atomic.scheduler.jobStatus("j", 0)!.counts);
    const states = (h: Harness) => h.scheduler.snapshot().drvs.map((r) => [r.drvPath, r.state, r.seq]).sort();
    expect(states(sliced)).toEqual(states(atomic));
    // Every node is persisted once, whatever slice admitted it.
    expect(effectsOf(effects, "persistNodes").flatMap((e) => e.nodes)).toHaveLength(nodes.length);
  });

  it("lets builds start between slices, and the job finishes only once fully admitted", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w", { maxBuilds: 4 })));
    // Independent leaves under one root: the first slices make ready work at once.
    const leaves = Array.from({ length: 30 }, (_, i) => mkNode(`l${i}`));
    const nodes = [...leaves, mkNode("root", leaves.map((l) => l.name))];
    const admission = h.scheduler.beginSubmit(mkSubmission("j", nodes, ["root"]), 5);
    let done = false;
    let assignedBeforeAdmitted = 0;
    while (!done) {
      const effects = h.run(() => {
        const r = admission.step(h.clock.now());
        done = r.done;
        return r.effects;
      });
      // Build everything assigned so far, right away, between slices.
      for (const a of h.assigns(effects)) {
        if (!done) assignedBeforeAdmitted++;
        h.report(a);
      }
      if (!done) expect(h.scheduler.job("j")?.state ?? "not admitted yet").not.toBe("succeeded");
    }
    expect(assignedBeforeAdmitted).toBeGreaterThan(0);
    drainJob(h, "j");
    const st = h.scheduler.jobStatus("j", 0)!;
    expect(st.state).toBe("succeeded");
    expect(st.counts).toMatchObject({ total: 31, done: 31 });
  });

  it("rejects a malformed DAG from a step, having changed nothing", () => {
    const h = new Harness();
    const bad = [mkNode("a", ["missing"])];
    const admission = h.scheduler.beginSubmit(mkSubmission("j", bad, ["a"]), 1);
    expect(() => runToEnd(h, admission)).toThrow(InvalidInputError);
    expect(h.scheduler.jobs()).toEqual([]);
    expect(h.scheduler.stateCounts()).toMatchObject({ waiting: 0, ready: 0 });
  });

  it("two submits with one idempotency key interleaved make one job", () => {
    const h = new Harness();
    const nodes = chainWithSides(10);
    const a = h.scheduler.beginSubmit(mkSubmission("j1", nodes, ["c9"], { idempotencyKey: "k" }), 4);
    const b = h.scheduler.beginSubmit(mkSubmission("j2", nodes, ["c9"], { idempotencyKey: "k" }), 4);
    const accepted: Effect[] = [];
    for (let doneA = false, doneB = false; !doneA || !doneB; ) {
      if (!doneA) h.run(() => { const r = a.step(h.clock.now()); doneA = r.done; accepted.push(...r.effects); return r.effects; });
      if (!doneB) h.run(() => { const r = b.step(h.clock.now()); doneB = r.done; accepted.push(...r.effects); return r.effects; });
    }
    const replies = effectsOf(accepted, "jobAccepted");
    expect(replies.map((r) => r.jobId)).toEqual(["j1", "j1"]);
    expect(h.scheduler.jobs().map((j) => j.jobId)).toEqual(["j1"]);
  });

  it("admits the inputs of a done derivation withdrawn while the job was being admitted", () => {
    // First job builds `lib` (and its input `src`); the second stops at done `lib`.
    const lib = [mkNode("src"), mkNode("lib", ["src"])];
    const nodes = [...lib, ...Array.from({ length: 20 }, (_, i) => mkNode(`app${i}`, ["lib"]))];
    const setup = () => {
      const h = new Harness();
      h.run((s, t) => s.workerJoined(t, mkWorker("w", { maxBuilds: 1 })));
      h.run((s, t) => s.submitJob(t, mkSubmission("first", lib, ["lib"])));
      drainJob(h, "first");
      return { h, admission: h.scheduler.beginSubmit(mkSubmission("second", nodes, nodes.slice(2).map((n) => n.name)), 3) };
    };
    // A dry run finds the last slice before the job's records are made (its closure is cut by then).
    const dry = setup();
    let cut = 0;
    while (dry.h.scheduler.job("second") === undefined) {
      dry.admission.step(dry.h.clock.now());
      cut++;
    }
    const { h, admission } = setup();
    expect(h.scheduler.drv(drvPathOf("lib"))!.record.state).toBe("done");
    for (let i = 0; i < cut - 1; i++) h.run(() => admission.step(h.clock.now()).effects);
    expect(h.scheduler.job("second")).toBeUndefined();
    h.run((s, t) => s.outputsWithdrawn(t, [drvPathOf("lib")], "withdrawn"));
    runToEnd(h, admission);
    expect(h.scheduler.drv(drvPathOf("src"))!.record.jobs).toContain("second");
    // Build whatever comes until the job ends: it must end, and succeed.
    drainJob(h, "second");
    expect(h.scheduler.job("second")!.state).toBe("succeeded");
  });
});
