// Lifetime-aware placement, for real (real Nix, NATS, gRPC, isolated workers):
// a build estimated to take 30 minutes (seeded through the coordinator's
// heavy-packages file) never starts on a worker with 5 minutes left. With only
// that worker, it waits and `farm status` says why; a fresh worker joins and
// it runs there. A build whose history says it is short may still use the old
// worker (which also shows the wait was about lifetime, not anything else).
//
// Worker names make the plain tie-break (workerId) favour the old worker, so
// only lifetime awareness sends long builds to the fresh one.
//
// The test sets every input its assertions depend on: each worker's lifetime
// and its start (FARM_MACHINE_STARTED_AT, so the host's uptime plays no part),
// and remaining lifetimes are checked against the time the test itself has
// let pass since it set them, so a loaded machine gives the same answers.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { FarmCluster, type WorkerSpec } from "../harness/cluster.js";
import { waitFor } from "../harness/ports.js";
import { estimateKey, estimateStoreKey } from "../../coordinator/core/learned-estimator.js";
import { jobStatus, MiB, storedEstimates, submitFollow, submitNoWait, workers, type Row } from "./support.js";

/** Every worker's platform lifetime: a fresh worker has all of it. */
const FLEET_LIFETIME_S = 4 * 3600;
const OLD_LEFT_S = 600;
const LONG_MINUTES = 30;
const nowS = () => Date.now() / 1000;

let farm: FarmCluster;
let dir: string;

/** When the old worker's lifetime runs out (Unix seconds), fixed once by the test. */
let oldEndsAt = 0;

function workerSpec(name: string, lifetimeLeftSeconds: number): WorkerSpec {
  const startedAt = Math.floor(nowS()) - (FLEET_LIFETIME_S - lifetimeLeftSeconds);
  const env = { FARM_MEMORY: String(416 * MiB), FARM_MAX_LIFETIME_SECONDS: String(FLEET_LIFETIME_S), FARM_MACHINE_STARTED_AT: String(startedAt) };
  return { name, memoryLimitBytes: 512 * MiB, cores: 2, env };
}

const assignedOn = (worker: string) => farm.workerLog(worker).split("\n").filter((l) => l.includes('"msg":"assigned '));
const hogRow = async (jobId: string): Promise<Row> => (await jobStatus(farm, jobId)).derivations.find((r) => r.name.startsWith("hog-long"))!;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "tmpnix-sched-lifetime-"));
  const heavy = path.join(dir, "heavy-packages.json");
  writeFileSync(heavy, JSON.stringify({ packages: [{ pname: "hog-long", oneCoreMinutes: LONG_MINUTES, parallelFraction: 0, baseMiB: 64, perCoreMiB: 0, diskGiB: 0.1, note: "test: a long build" }] }));
  const old = workerSpec("a-old", OLD_LEFT_S);
  oldEndsAt = Number(old.env!.FARM_MACHINE_STARTED_AT) + FLEET_LIFETIME_S;
  farm = await FarmCluster.start({ workers: [old], coordinatorEnv: { FARM_HEAVY_PACKAGES_FILE: heavy } });
}, 120_000);

afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("lifetime-aware placement", () => {
  let waitingJob = "";

  it("with only a worker near its end of life, the long build waits and status says why", async () => {
    const before = oldEndsAt - nowS();
    const [old] = await workers(farm);
    const after = oldEndsAt - nowS();
    // What the coordinator says lies between what was left before and after asking (a second's rounding each way).
    expect(old.remainingLifetimeSeconds).toBeGreaterThanOrEqual(Math.floor(after) - 2);
    expect(old.remainingLifetimeSeconds).toBeLessThanOrEqual(Math.ceil(before) + 2);

    waitingJob = await submitNoWait(farm, "long1");
    let row!: Row;
    await waitFor("a hold reason", async () => {
      row = await hogRow(waitingJob);
      return Boolean(row.holdReason);
    }, 30_000, 300);
    expect(row.state).toBe("ready");
    expect(row.estimateSource).toBe("heavy-table");
    const leftM = (oldEndsAt - nowS()) / 60;
    const said = new RegExp(`^needs ~${LONG_MINUTES}m, longest remaining worker lifetime is (\\d+)m; waiting for a fresh worker$`).exec(row.holdReason!);
    expect(said, row.holdReason).not.toBeNull();
    expect(Number(said![1])).toBeGreaterThanOrEqual(Math.floor(leftM) - 1);
    expect(Number(said![1])).toBeLessThanOrEqual(OLD_LEFT_S / 60);
    const text = await farm.cli(["status", waitingJob, "--derivations"]);
    expect(text.stdout).toMatch(/hog-long-1\.0 .*waiting for a fresh worker/);

    // Several heartbeats later it still waits, and the old worker was never offered it.
    await new Promise((r) => setTimeout(r, 3000));
    row = await hogRow(waitingJob);
    expect(row.state).toBe("ready");
    expect(row.attempts ?? 0).toBe(0);
    expect((await jobStatus(farm, waitingJob)).state).toBe("running");
    expect(assignedOn("a-old")).toEqual([]);
  }, 60_000);

  it("a fresh worker joins and the long build runs there, never on the old one", async () => {
    farm.startWorker(workerSpec("b-fresh", FLEET_LIFETIME_S));
    await farm.waitForWorkers(2);
    let state = "running";
    await waitFor("the waiting job to finish", async () => (state = (await jobStatus(farm, waitingJob)).state) !== "running", 60_000, 500);
    expect(state).toBe("succeeded");
    const row = await hogRow(waitingJob);
    expect(row.workerId).toBe("b-fresh");
    expect(row.attempts).toBe(1);
    expect(assignedOn("a-old")).toEqual([]);
    const fresh = (await workers(farm)).find((w) => w.workerId === "b-fresh")!;
    expect(fresh.remainingLifetimeSeconds).toBeGreaterThan(FLEET_LIFETIME_S - 120);
  }, 90_000);

  it("with both free, a long build with no history (another version family) goes to the fresh worker", async () => {
    // hog-long 1.x has history now (learned from the build above), 2.x has none: its estimate is the heavy table's.
    const stored = await storedEstimates(farm.prefix);
    expect(stored.has(estimateStoreKey(estimateKey("hog-long", "1.0")))).toBe(true);
    expect(stored.has(estimateStoreKey(estimateKey("hog-long", "2.0")))).toBe(false);
    const { code, job } = await submitFollow(farm, "long2");
    expect(code).toBe(0);
    const row = await hogRow(job.jobId);
    expect(row.name).toBe("hog-long-2.0");
    expect(row.workerId).toBe("b-fresh");
    expect(assignedOn("a-old")).toEqual([]);
  }, 60_000);

  it("a build whose history says it is short does use the old worker (the tie-break's choice)", async () => {
    const { code, job } = await submitFollow(farm, "long1b");
    expect(code).toBe(0);
    const row = await hogRow(job.jobId);
    expect(row.name).toBe("hog-long-1.0");
    expect(row.estimateSource).toBe("history");
    expect(row.estimatedDurationMs!).toBeLessThan(60_000);
    expect(row.workerId).toBe("a-old");
    expect(assignedOn("a-old")).toHaveLength(1);
  }, 60_000);
});
