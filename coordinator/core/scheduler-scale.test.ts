import { describe, expect, it } from "vitest";
import { SeededRandom } from "./clock.js";
import { effectsOf, type EffectOf } from "./effects.js";
import { MAX_LISTED_FAILURES } from "./job-status.js";
import { Harness, mkNode, mkReport, mkSubmission, mkWorker } from "./test-support.js";
import type { DrvNode } from "./types.js";

const N = 100_000;

/** A random DAG: each node uses up to 3 of the 2,000 nodes before it. */
function syntheticDag(n: number, seed: number): { nodes: DrvNode[]; roots: string[] } {
  const rnd = new SeededRandom(seed);
  const nodes: DrvNode[] = [];
  const used = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const inputs = new Set<number>();
    const k = i === 0 ? 0 : 1 + rnd.int(3);
    for (let j = 0; j < k; j++) inputs.add(Math.max(0, i - 1 - rnd.int(Math.min(i, 2000))));
    for (const x of inputs) used[x] = 1;
    nodes.push(mkNode(`n${i}`, [...inputs].map((x) => `n${x}`), { system: i % 50 === 0 ? "builtin" : "x86_64-linux" }));
  }
  const roots = nodes.filter((_, i) => used[i] === 0).map((x) => x.name);
  return { nodes, roots };
}

describe("scheduler at 100,000 derivations", () => {
  it("submits and drains a 100k-node DAG with a fake worker loop", () => {
    const { nodes, roots } = syntheticDag(N, 7);
    const h = new Harness();
    for (let w = 0; w < 50; w++) h.run((s, t) => s.workerJoined(t, mkWorker(`w${w}`, { maxBuilds: 4 })));

    const t0 = performance.now();
    const submitted = h.scheduler.submitJob(h.clock.now(), mkSubmission("big", nodes, roots));
    const tSubmit = performance.now() - t0;
    expect(effectsOf(submitted, "persistNodes")[0].nodes).toHaveLength(N);
    expect(effectsOf(submitted, "persistDrvs")[0].records).toHaveLength(N);

    const pending: EffectOf<"assign">[] = effectsOf(submitted, "assign");
    const built = new Set<string>();
    let events = 0;
    for (let i = 0; i < pending.length; i++) {
      const a = pending[i];
      expect(built.has(a.spec.lease.drvPath)).toBe(false);
      built.add(a.spec.lease.drvPath);
      h.clock.advance(1);
      const eff = h.scheduler.buildReported(h.clock.now(), a.workerId, mkReport(a), true);
      events++;
      for (const e of eff) if (e.kind === "assign") pending.push(e);
      if (events % 1000 === 0) {
        // The fake workers stay alive: heartbeats before their deadline, then time moves on.
        for (let w = 0; w < 50; w++) {
          h.scheduler.heartbeat(h.clock.now(), `w${w}`, { freeMemoryBytes: 4 * 2 ** 30, freeDiskBytes: 50 * 2 ** 30, uptimeSeconds: 1, running: [] });
        }
        for (const e of h.scheduler.advanceTo(h.clock.now())) if (e.kind === "assign") pending.push(e);
      }
    }
    const total = performance.now() - t0;
    console.log(
      `100k DAG (${roots.length} roots): submit ${tSubmit.toFixed(0)} ms, submit+drain ${total.toFixed(0)} ms, ${events} results`,
    );
    expect(built.size).toBe(N);
    const st = h.scheduler.jobStatus("big", h.clock.now())!;
    expect(st.state).toBe("succeeded");
    expect(st.counts).toMatchObject({ total: N, done: N });
  }, 120_000);

  it("fails a 100k-long chain from its first link without deep recursion", () => {
    const nodes = Array.from({ length: N }, (_, i) => mkNode(`c${i}`, i === 0 ? [] : [`c${i - 1}`]));
    const h = new Harness();
    h.run((s, t) => s.workerJoined(t, mkWorker("w")));
    const t0 = performance.now();
    const [first] = h.assigns(h.run((s, t) => s.submitJob(t, mkSubmission("chain", nodes, [`c${N - 1}`]))));
    h.report(first, "failed");
    console.log(`100k chain: submit + fail-propagate ${(performance.now() - t0).toFixed(0)} ms`);
    const st = h.scheduler.jobStatus("chain", h.clock.now())!;
    expect(st.state).toBe("failed");
    expect(st.counts.failed).toBe(N);
    // The list is bounded (root cause first); the count has them all.
    expect(st.failures).toHaveLength(MAX_LISTED_FAILURES);
    expect(st.failures[0].name).toBe("c0");
    expect(st.failures.at(-1)!.reason).toBe("dependency failed: c0");
  }, 120_000);
});
