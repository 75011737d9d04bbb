// A worker with a small disk (a 96 MB tmpfs as its /tmp/nix) gets a build
// that writes 128 MB. With real Nix and a real full filesystem: only that
// attempt fails (disk-full, a transient outcome, not a build failure), the
// worker frees what the build left, the derivation is rebuilt on a worker
// with more disk, and the small worker goes on building.
import { afterAll, describe, expect, it } from "vitest";
import path from "node:path";
import { FarmCluster, NATS_URL, REPO } from "../harness/cluster.js";
import { waitFor } from "../harness/ports.js";
import { loadFarmState } from "./cache-audit.js";
import { coordinatorRecords, records } from "./farm-log.js";

const FIXTURE = path.join(REPO, "test/fixtures/farm-faults/default.nix");
const MiB = 1024 ** 2;

let farm: FarmCluster | undefined;
afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
});

describe("a full disk", () => {
  it("fails only the attempt; the worker cleans up and stays usable; the build goes elsewhere", async () => {
    // Builds below 8 MB free refuse up front; this one must really fill the disk.
    const small = { name: "a-small", nixTmpfsBytes: 96 * MiB, env: { FARM_MIN_FREE_DISK: "8M" } };
    farm = await FarmCluster.start({ workers: [small], heartbeatInterval: "1s", heartbeatTimeout: "5s" });
    const job = farm.cli(["submit", `${FIXTURE}#disk`, "--follow", "--json"]);
    const first = await waitFor("the filler on a-small", () => coordinatorRecords(farm!, "assigned", "filler-1.0")[0], 60_000, 100);
    expect(first.worker).toBe("a-small");
    farm.startWorker({ name: "b-big" });

    const result = await job;
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).state).toBe("succeeded");

    const reports = coordinatorRecords(farm, "build reported", "filler-1.0").map((r) => `${r.worker} ${r.outcome}`);
    expect(reports).toEqual(["a-small disk-full", "b-big succeeded"]);
    const state = await loadFarmState(NATS_URL, farm.prefix);
    const filler = state.drvs.find((d) => d.drvPath === first.drv)!;
    expect(filler).toMatchObject({ state: "done", attempts: 2, transientFailures: 1 });
    expect(filler.diskFloorBytes).toBeGreaterThan(80 * MiB);

    // The worker removed what the build left and collected garbage: its disk is (nearly) empty again.
    const gc = records(farm.workerLog("a-small")).find((r) => r.msg === "disk was full: collected garbage");
    expect(gc?.freeBytes).toBeGreaterThan(80 * MiB);

    // And it still builds: with the big worker gone, a new job runs on it.
    await farm.killWorker("b-big");
    const after = await farm.cli(["submit", `${FIXTURE}#diskAfter`, "--follow", "--json"]);
    expect(after.code, after.stderr).toBe(0);
    expect(coordinatorRecords(farm, "build reported", "after-disk-full-1.0").map((r) => `${r.worker} ${r.outcome}`)).toEqual(["a-small succeeded"]);
  }, 180_000);
});
