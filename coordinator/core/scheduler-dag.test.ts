import { describe, expect, it } from "vitest";
import { effectsOf } from "./effects.js";
import { InvalidInputError } from "./errors.js";
import { Harness, drvPathOf, mkNode, mkSubmission, mkWorker, outPathOf } from "./test-support.js";

const diamond = () => [mkNode("a"), mkNode("b", ["a"]), mkNode("c", ["a"]), mkNode("d", ["b", "c"])];
const names = (assigns: { spec: { name: string } }[]) => assigns.map((a) => a.spec.name).sort();

describe("scheduler: DAG order", () => {
  it("builds a diamond in dependency order and succeeds", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1"), []));
    const sub = h.run((s, t) => s.submitJob(t, mkSubmission("j1", diamond(), ["d"])));
    expect(effectsOf(sub, "jobAccepted")).toEqual([{ kind: "jobAccepted", jobId: "j1", existing: false }]);
    const [a] = h.assigns(sub);
    expect(names(h.assigns(sub))).toEqual(["a"]);
    expect(a.spec.lease.epoch).toBe(1);

    const afterA = h.report(a);
    expect(effectsOf(afterA, "ack")[0]).toMatchObject({ accepted: true });
    const bc = h.assigns(afterA);
    expect(names(bc)).toEqual(["b", "c"]);

    // Inputs gate readiness: d waits for both b and c.
    expect(h.assigns(h.report(bc[0]))).toEqual([]);
    expect(h.scheduler.drv(drvPathOf("d"))!.record.state).toBe("waiting");
    const d = h.assigns(h.report(bc[1]));
    expect(names(d)).toEqual(["d"]);
    expect(d[0].spec.inputPaths.sort()).toEqual([outPathOf("b"), outPathOf("c")].sort());

    const end = h.report(d[0]);
    expect(effectsOf(end, "event").map((e) => e.event)).toContainEqual(
      expect.objectContaining({ type: "job.finished", jobId: "j1", state: "succeeded" }),
    );
    const st = h.scheduler.jobStatus("j1", h.clock.now())!;
    expect(st.state).toBe("succeeded");
    expect(st.counts).toMatchObject({ total: 4, done: 4, cached: 0, failed: 0, building: 0, queued: 0, waiting: 0 });
    expect(st.outputs).toEqual([{ drvPath: drvPathOf("d"), outputs: { out: outPathOf("d") } }]);
    expect(st.etaMs).toBe(0);
  });

  it("passes exactly the input outputs a node uses", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 4 })));
    const nodes = [
      mkNode("lib", [], { outputs: ["out", "dev", "doc"] }),
      mkNode("tool", [], { outputs: ["out", "man"] }),
      mkNode("app", [["lib", ["dev"]], ["tool", ["out"]]]),
    ];
    const first = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", nodes, ["app"]))));
    expect(first[0].spec.outputs).toBeDefined();
    const lib = first.find((a) => a.spec.name === "lib")!;
    expect(lib.spec.outputs).toEqual({ out: outPathOf("lib"), dev: outPathOf("lib", "dev"), doc: outPathOf("lib", "doc") });
    h.report(first[0]);
    const app = h.assigns(h.report(first[1]))[0];
    expect(app.spec.name).toBe("app");
    expect(app.spec.inputPaths).toEqual([outPathOf("lib", "dev"), outPathOf("tool")]);
  });

  it("fails dependents transitively while an independent branch completes", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 })));
    const nodes = [mkNode("x"), mkNode("x2", ["x"]), mkNode("y"), mkNode("top", ["x2", "y"]), mkNode("other", ["y"])];
    // x has the longest path to a root, so it goes first on the single slot.
    const [x] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j", nodes, ["top", "other"]))));
    expect(x.spec.name).toBe("x");
    const afterX = h.run((s, t) => s.buildReported(t, "w1", { ...mkReportOf(x), outcome: "failed", error: "make: *** Error 2" }, false));
    for (const n of ["x2", "top"]) {
      expect(h.scheduler.drv(drvPathOf(n))!.record).toMatchObject({ state: "failed", reason: "dependency failed: x" });
    }
    expect(h.scheduler.job("j")!.state).toBe("running");
    const y = h.assigns(afterX)[0];
    expect(y.spec.name).toBe("y");
    const other = h.assigns(h.report(y))[0];
    expect(other.spec.name).toBe("other");
    h.report(other);
    const st = h.scheduler.jobStatus("j", h.clock.now())!;
    expect(st.state).toBe("failed");
    expect(st.counts).toMatchObject({ done: 2, failed: 3 });
    expect(st.failures[0]).toEqual({ drvPath: drvPathOf("x"), name: "x", reason: "make: *** Error 2" });
    expect(st.failures.slice(1).map((f) => f.name).sort()).toEqual(["top", "x2"]);
  });

  it("shares a derivation between jobs and builds it once", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 4 })));
    const a1 = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j1", [mkNode("base"), mkNode("p", ["base"])], ["p"]))));
    const a2 = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j2", [mkNode("base"), mkNode("q", ["base"])], ["q"]))));
    expect(names(a1)).toEqual(["base"]);
    expect(a2).toEqual([]);
    expect(h.scheduler.drv(drvPathOf("base"))!.record.jobs).toEqual(["j1", "j2"]);
    const pq = h.assigns(h.report(a1[0]));
    expect(names(pq)).toEqual(["p", "q"]);
    pq.forEach((a) => h.report(a));
    expect(h.scheduler.jobs().map((j) => j.state)).toEqual(["succeeded", "succeeded"]);
  });

  it("cached derivations are done without building, and so is everything below them", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 4 })));
    const nodes = [mkNode("deep"), mkNode("lib", ["deep"]), mkNode("app", ["lib"])];
    const eff = h.run((s, t) => s.submitJob(t, mkSubmission("j", nodes, ["app"], { cachedDrvPaths: new Set([drvPathOf("lib")]) })));
    expect(names(h.assigns(eff))).toEqual(["app"]);
    expect(h.scheduler.drv(drvPathOf("lib"))!.record).toMatchObject({ state: "done", cached: true });
    expect(h.scheduler.drv(drvPathOf("deep"))).toBeUndefined();
    expect(h.scheduler.jobStatus("j", h.clock.now())!.counts).toMatchObject({ total: 2, done: 1, cached: 1, building: 1 });
  });

  it("a job whose roots are all done succeeds at once: resubmit builds nothing", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 4 })));
    let as = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("j1", diamond(), ["d"]))));
    while (as.length > 0) as = as.flatMap((a) => h.assigns(h.report(a)));
    const again = h.run((s, t) => s.submitJob(t, mkSubmission("j2", diamond(), ["d"])));
    expect(h.assigns(again)).toEqual([]);
    expect(h.scheduler.job("j2")!.state).toBe("succeeded");
    expect(h.scheduler.jobStatus("j2", h.clock.now())!.counts).toMatchObject({ total: 1, done: 1 });
    const allCached = h.run((s, t) =>
      s.submitJob(t, mkSubmission("j3", [mkNode("z")], ["z"], { cachedDrvPaths: new Set([drvPathOf("z")]) })),
    );
    expect(effectsOf(allCached, "persistJob").at(-1)!.job.state).toBe("succeeded");
  });

  it("idempotent resubmit returns the existing job and changes nothing", () => {
    const h = new Harness();
    h.run((s, t) => s.submitJob(t, mkSubmission("j1", diamond(), ["d"], { idempotencyKey: "k" })));
    const again = h.run((s, t) => s.submitJob(t, mkSubmission("j9", [mkNode("other")], ["other"], { idempotencyKey: "k" })));
    expect(again).toEqual([{ kind: "jobAccepted", jobId: "j1", existing: true }]);
    expect(h.scheduler.jobs().map((j) => j.jobId)).toEqual(["j1"]);
    expect(() => h.run((s, t) => s.submitJob(t, mkSubmission("j1", diamond(), ["d"])))).toThrow(/already exists/);
  });

  it("an invalid submission throws and changes nothing", () => {
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w1")));
    const bad = mkSubmission("j1", [mkNode("a", ["missing"]), mkNode("b")], ["a"]);
    expect(() => h.run((s, t) => s.submitJob(t, bad))).toThrow(InvalidInputError);
    expect(h.scheduler.jobs()).toEqual([]);
    expect(h.scheduler.drv(drvPathOf("b"))).toBeUndefined();
    expect(h.run((s, t) => s.advanceTo(t))).toEqual([]);
  });

  it("offers the longest chain first", () => {
    const h = new Harness();
    const nodes = [mkNode("shallow"), mkNode("l1"), mkNode("l2", ["l1"]), mkNode("l3", ["l2"]), mkNode("top", ["l3", "shallow"])];
    h.run((s, t) => s.submitJob(t, mkSubmission("j", nodes, ["top"])));
    const first = h.assigns(h.run((s, t) => s.workerJoined(t, mkWorker("w1", { maxBuilds: 1 }), [])));
    expect(names(first)).toEqual(["l1"]);
  });
});

function mkReportOf(a: { spec: { lease: { drvPath: string; epoch: number }; cores: number } }) {
  return { lease: { ...a.spec.lease }, outcome: "succeeded" as const, outputs: [], durationMs: 10, peakMemoryBytes: 1, cores: a.spec.cores, error: "" };
}
