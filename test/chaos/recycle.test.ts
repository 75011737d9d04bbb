// Graceful recycle with real Nix, NATS and gRPC: a platform SIGTERMs a worker
// that runs two builds. The one expected (from the coordinator's learned
// estimate) to outlast the drain grace is handed back at once and rebuilt on
// another worker; the short one finishes, is reported and accepted; the worker
// exits 0 without waiting out the grace.
import { afterAll, describe, expect, it } from "vitest";
import path from "node:path";
import { FarmCluster, NATS_URL, REPO } from "../harness/cluster.js";
import { waitFor } from "../harness/ports.js";
import { loadFarmState } from "./cache-audit.js";
import { coordinatorRecords } from "./farm-log.js";

const FIXTURE = path.join(REPO, "test/fixtures/farm-faults/default.nix");
// The grace sits well between the two builds' learned durations (quick 3 s, sleeper 16 s),
// so a loaded machine can't move either to the other side of it.
const GRACE_MS = 8000;

let farm: FarmCluster | undefined;
afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
});

describe("graceful recycle", () => {
  it("hands back at once a build that would not finish within the grace, finishes a short one, and exits 0", async () => {
    const r1 = { name: "r1", maxBuilds: 2, cores: 2, env: { FARM_DRAIN_GRACE: `${GRACE_MS}ms` } };
    farm = await FarmCluster.start({ workers: [r1], heartbeatInterval: "1s", heartbeatTimeout: "5s" });

    // Teach the coordinator how long sleeper-1.0 (~16 s) and quick-1.0 (~3 s) take.
    const warm = await farm.cli(["submit", `${FIXTURE}#warm`, "--follow", "--json"]);
    expect(warm.code, warm.stderr).toBe(0);
    const assignedBefore = coordinatorRecords(farm, "assigned").length;

    const job = farm.cli(["submit", `${FIXTURE}#recycle`, "--follow", "--json"]);
    // Both new builds run on r1 (the only worker)...
    const running = await waitFor("both builds on r1", () => {
      const fresh = coordinatorRecords(farm!, "assigned").slice(assignedBefore);
      const sleeper = fresh.find((r) => r.drv?.endsWith("-sleeper-1.0.drv"));
      const quick = fresh.find((r) => r.drv?.endsWith("-quick-1.0.drv"));
      return sleeper && quick ? { sleeper, quick } : null;
    }, 60_000, 100);
    expect(running.sleeper.worker).toBe("r1");
    expect(running.quick.worker).toBe("r1");
    // ...a replacement comes up, and the platform recycles r1 a moment into the builds.
    const r1Process = farm.workers.get("r1")!;
    farm.startWorker({ name: "r2", maxBuilds: 2, cores: 2 });
    await new Promise((r) => setTimeout(r, 1500));
    const sigterm = Date.now();
    r1Process.signal("SIGTERM");

    const exit = await Promise.race([r1Process.exited, new Promise<number>((r) => setTimeout(() => r(-1), 30_000))]);
    expect(exit).toBe(0);
    // The worker left once the short build was done (~2 s in), without waiting out the grace.
    expect(Date.now() - sigterm).toBeLessThan(GRACE_MS);

    const result = await job;
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).state).toBe("succeeded");

    const drain = coordinatorRecords(farm, "worker draining").find((r) => r.worker === "r1");
    expect(drain?.handedBack).toBe(1);
    // The long build went back at once: r2 had it before r1 finished the short one.
    const rebuilt = coordinatorRecords(farm, "assigned").filter((r) => r.drv === running.sleeper.drv && r.worker === "r2");
    expect(rebuilt).toHaveLength(1);
    expect(rebuilt[0].time).toBeGreaterThanOrEqual(drain!.time);
    const sleeperReports = coordinatorRecords(farm, "build reported").filter((r) => r.drv === running.sleeper.drv);
    expect(sleeperReports.map((r) => `${r.worker} ${r.outcome}`)).toEqual(["r2 succeeded"]);
    // The short one finished on r1 after SIGTERM and was accepted.
    const quick = coordinatorRecords(farm, "build reported").filter((r) => r.drv === running.quick.drv);
    expect(quick.map((r) => `${r.worker} ${r.outcome}`)).toEqual(["r1 succeeded"]);
    expect(quick[0].time).toBeGreaterThan(drain!.time);
    expect(rebuilt[0].time).toBeLessThan(quick[0].time);
    expect(coordinatorRecords(farm, "result accepted").some((r) => r.drv === running.quick.drv && r.worker === "r1")).toBe(true);
    // Handing back counted against no retry budget.
    const state = await loadFarmState(NATS_URL, farm.prefix);
    expect(state.drvs.find((d) => d.drvPath === running.sleeper.drv)).toMatchObject({ state: "done", attempts: 2, transientFailures: 0 });
  }, 180_000);
});
