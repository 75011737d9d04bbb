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
// Note: the harness gives workers their own mount namespace but not their own
// PID namespace, so a worker's "uptime" (/proc/uptime minus pid 1's start) is
// the host's; lifetimes are set relative to it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { FarmCluster, type WorkerSpec } from "../harness/cluster.js";
import { waitFor } from "../harness/ports.js";
import { hostUptimeSeconds } from "../../worker/host-probe.js";
import { estimateKey, estimateStoreKey } from "../../coordinator/core/learned-estimator.js";
import { jobStatus, MiB, storedEstimates, submitFollow, submitNoWait, workers, type Row } from "./support.js";

const OLD_LEFT_S = 300;
const FRESH_LEFT_S = 4 * 3600;
const LONG_MINUTES = 30;

let farm: FarmCluster;
let dir: string;

function workerSpec(name: string, lifetimeLeftSeconds: number): WorkerSpec {
  const maxLifetime = hostUptimeSeconds() + lifetimeLeftSeconds;
  return { name, memoryLimitBytes: 512 * MiB, cores: 2, env: { FARM_MEMORY: String(416 * MiB), FARM_MAX_LIFETIME_SECONDS: String(maxLifetime) } };
}

const assignedOn = (worker: string) => farm.workerLog(worker).split("\n").filter((l) => l.includes('"msg":"assigned '));
const hogRow = async (jobId: string): Promise<Row> => (await jobStatus(farm, jobId)).derivations.find((r) => r.name.startsWith("hog-long"))!;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "tmpnix-sched-lifetime-"));
  const heavy = path.join(dir, "heavy-packages.json");
  writeFileSync(heavy, JSON.stringify({ packages: [{ pname: "hog-long", oneCoreMinutes: LONG_MINUTES, parallelFraction: 0, baseMiB: 64, perCoreMiB: 0, diskGiB: 0.1, note: "test: a long build" }] }));
  farm = await FarmCluster.start({ workers: [workerSpec("a-old", OLD_LEFT_S)], coordinatorEnv: { FARM_HEAVY_PACKAGES_FILE: heavy } });
}, 120_000);

afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("lifetime-aware placement", () => {
  let waitingJob = "";

  it("with only a worker near its end of life, the long build waits and status says why", async () => {
    const [old] = await workers(farm);
    expect(old.remainingLifetimeSeconds).toBeGreaterThan(OLD_LEFT_S - 60);
    expect(old.remainingLifetimeSeconds).toBeLessThanOrEqual(OLD_LEFT_S);

    waitingJob = await submitNoWait(farm, "long1");
    let row!: Row;
    await waitFor("a hold reason", async () => {
      row = await hogRow(waitingJob);
      return Boolean(row.holdReason);
    }, 30_000, 300);
    expect(row.state).toBe("ready");
    expect(row.estimateSource).toBe("heavy-table");
    expect(row.holdReason).toMatch(new RegExp(`^needs ~${LONG_MINUTES}m, longest remaining worker lifetime is [1-5]m; waiting for a fresh worker$`));
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
    farm.startWorker(workerSpec("b-fresh", FRESH_LEFT_S));
    await farm.waitForWorkers(2);
    let state = "running";
    await waitFor("the waiting job to finish", async () => (state = (await jobStatus(farm, waitingJob)).state) !== "running", 60_000, 500);
    expect(state).toBe("succeeded");
    const row = await hogRow(waitingJob);
    expect(row.workerId).toBe("b-fresh");
    expect(row.attempts).toBe(1);
    expect(assignedOn("a-old")).toEqual([]);
    const fresh = (await workers(farm)).find((w) => w.workerId === "b-fresh")!;
    expect(fresh.remainingLifetimeSeconds).toBeGreaterThan(FRESH_LEFT_S - 120);
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
