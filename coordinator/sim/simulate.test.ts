import { describe, expect, it } from "vitest";
import { mkNode } from "../core/test-support.js";
import { parseFleet } from "./fleet.js";
import { makePolicy } from "./policies.js";
import { simulate, type SimulateOptions } from "./simulate.js";
import { paramsFromJson, WorkloadModel } from "./workload.js";

const MB = 2 ** 20;
const MIN = 60_000;

/** A model without noise where `name` takes `minutes` on one core and peaks at `peakMB` halfway. */
function model(pkgs: Record<string, { minutes: number; peakMB: number }>): WorkloadModel {
  const packages = Object.fromEntries(
    Object.entries(pkgs).map(([k, v]) => [k, { singleCoreMin: v.minutes, parallelFraction: 0, baseMB: v.peakMB, perCoreMB: 0, peakAt: 0.5 }]),
  );
  return new WorkloadModel(paramsFromJson({ durationJitter: 0, memoryJitter: 0, packages }));
}

function opts(o: Partial<SimulateOptions> & Pick<SimulateOptions, "nodes" | "roots" | "fleet" | "workload">): SimulateOptions {
  return { policy: makePolicy("fifo", { heartbeatTimeoutMs: 30_000 }), seed: 1, ...o };
}

describe("simulate", () => {
  it("builds a chain and reports the makespan of the real durations", () => {
    const nodes = [mkNode("a"), mkNode("b", ["a"])];
    const r = simulate(opts({ nodes, roots: [nodes[1].drvPath], fleet: parseFleet("1x1c:1G;kill=never;uptime=zero"), workload: model({ a: { minutes: 10, peakMB: 100 }, b: { minutes: 20, peakMB: 100 } }) }));
    expect(r.end).toBe("succeeded");
    expect(r.makespanMs).toBe(30 * MIN);
    expect(r).toMatchObject({ buildsStarted: 2, buildsSucceeded: 2, extraBuilds: 0, oomKills: 0, recycleLostBuilds: 0 });
    expect(r.schedulerCalls).toBeGreaterThan(0);
  });

  it("kills a build when memory runs out, reports the OOM at the limit, and the scheduler gives up after its retries", () => {
    const nodes = [mkNode("hungry")];
    const policy = makePolicy("fifo", { heartbeatTimeoutMs: 30_000, maxOomRetries: 2 });
    const r = simulate(opts({ nodes, roots: [nodes[0].drvPath], policy, fleet: parseFleet("1x1c:512M;kill=never;uptime=zero"), workload: model({ hungry: { minutes: 60, peakMB: 1024 } }) }));
    expect(r.end).toBe("failed");
    expect(r.oomKills).toBe(3);
    // Memory ramps to 1 GiB at 30 min, so 512 MiB is exhausted after 15 min of each attempt.
    expect(r.oomCpuMs).toBe(3 * 15 * MIN);
    const rec = policy.scheduler.drv(nodes[0].drvPath)!.record;
    expect(rec.peakMemoryBytes).toBe(512 * MB);
    expect(rec.oomKills).toBe(3);
  });

  it("loses the build of a recycled worker; the scheduler notices at the deadline and requeues it", () => {
    const nodes = [mkNode("first"), mkNode("long", ["first"])];
    const policy = makePolicy("fifo", { heartbeatTimeoutMs: 30_000 });
    const r = simulate(opts({
      nodes,
      roots: [nodes[1].drvPath],
      policy,
      fleet: parseFleet("1x1c:1G;life=1h;kill=never;uptime=zero;boot=2m"),
      workload: model({ first: { minutes: 20, peakMB: 100 }, long: { minutes: 50, peakMB: 100 } }),
    }));
    expect(r.end).toBe("succeeded");
    // "long" ran 40 min until the container's 1 h lifetime ended, then again on the replacement (joined at 62 min).
    expect(r.recycleLostBuilds).toBe(1);
    expect(r.recycleLostCpuMs).toBe(40 * MIN);
    expect(r.extraBuilds).toBe(1);
    expect(r.makespanMs).toBe(62 * MIN + 50 * MIN);
    expect(policy.scheduler.drv(nodes[1].drvPath)!.record.attempts).toBe(2);
    expect(r.workerIncarnations).toBe(2);
    expect(r.anomalies).toEqual([]);
  });

  it("notices a silent death through the heartbeat deadline, long before the replacement joins", () => {
    const nodes = [mkNode("first"), mkNode("long", ["first"])];
    const r = simulate(opts({
      nodes,
      roots: [nodes[1].drvPath],
      fleet: parseFleet("1x1c:1G;life=1h;kill=never;uptime=zero;boot=5h"),
      workload: model({ first: { minutes: 20, peakMB: 100 }, long: { minutes: 50, peakMB: 100 } }),
    }));
    expect(r.end).toBe("succeeded");
    expect(r.deathsNoticed).toBe(1);
    // Last heartbeat at most one interval (20 s) before the death, then the 30 s timeout.
    expect(r.noticeDelayMs).toBeGreaterThan(10_000);
    expect(r.noticeDelayMs).toBeLessThanOrEqual(30_001);
    expect(r.makespanMs).toBe(60 * MIN + 5 * 60 * MIN + 50 * MIN);
  });

  it("hydra-like spends one retry per lost builder and fails the step when they run out", () => {
    const nodes = [mkNode("toolong")];
    const r = simulate(opts({
      nodes,
      roots: [nodes[0].drvPath],
      policy: makePolicy("hydra-like", { heartbeatTimeoutMs: 30_000 }),
      fleet: parseFleet("1x1c:1G;life=1h;kill=never;uptime=zero;boot=1m"),
      workload: model({ toolong: { minutes: 90, peakMB: 100 } }),
    }));
    expect(r.end).toBe("failed");
    expect(r.recycleLostBuilds).toBe(6);
    expect(r.failedDerivations).toBe(1);
  });

  it("is repeatable: the same seed gives the same run", () => {
    const nodes = [mkNode("x"), mkNode("y"), mkNode("z", ["x", "y"])];
    const run = () =>
      simulate(opts({ nodes, roots: [nodes[2].drvPath], fleet: parseFleet("2x1c:512M;kill=30m"), workload: new WorkloadModel(), seed: 4 }));
    const a = run();
    const b = run();
    expect({ ...b, schedulerWallMs: 0 }).toEqual({ ...a, schedulerWallMs: 0 });
  });
});
