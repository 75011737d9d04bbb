// Backup copies of long builds, for real (real Nix, NATS, gRPC, isolated
// workers, SIGKILL): a build estimated at 30 minutes (seeded through the
// heavy-packages file) starts on one worker and a backup copy on the other,
// idle one. The primary's worker is killed with SIGKILL mid-build; the copy
// carries the lease on (nothing requeued, no retry spent) and its result is
// the one accepted. The build really runs ~15 s; copies are made of builds
// with 10 minutes or more to go (FARM_BACKUP_COPY_MIN_REMAINING).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { FarmCluster, type WorkerSpec } from "../harness/cluster.js";
import { waitFor } from "../harness/ports.js";
import { jobStatus, MiB, submitNoWait, workers, type Row } from "./support.js";

let farm: FarmCluster;
let dir: string;

const spec = (name: string): WorkerSpec => ({ name, memoryLimitBytes: 512 * MiB, cores: 1, env: { FARM_MEMORY: String(416 * MiB) } });
const row = async (jobId: string): Promise<Row> =>
  (await jobStatus(farm, jobId)).derivations.find((r) => r.name === "hog-long-3.0")!;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "tmpnix-sched-backup-copy-"));
  const heavy = path.join(dir, "heavy-packages.json");
  writeFileSync(heavy, JSON.stringify({ packages: [{ pname: "hog-long", oneCoreMinutes: 30, parallelFraction: 0, baseMiB: 64, perCoreMiB: 0, diskGiB: 0.1, note: "test: a long build" }] }));
  farm = await FarmCluster.start({ workers: [spec("a"), spec("b")], heartbeatTimeout: "3s", coordinatorEnv: { FARM_HEAVY_PACKAGES_FILE: heavy, FARM_BACKUP_COPY_MIN_REMAINING: "10m" } });
}, 120_000);

afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("backup copies of long builds", () => {
  it("the idle worker runs a copy; SIGKILL of the primary's worker costs no retry and the copy's result wins", async () => {
    const jobId = await submitNoWait(farm, "backupCopied");
    let r!: Awaited<ReturnType<typeof row>>;
    await waitFor("a backup copy", async () => {
      r = await row(jobId);
      return r.state === "building" && (r.backupWorkerIds ?? []).length === 1;
    }, 60_000, 200);
    const primary = r.workerId!;
    const backup = r.backupWorkerIds![0];
    expect(new Set([primary, backup])).toEqual(new Set(["a", "b"]));
    const listed = (await workers(farm)).find((w) => w.workerId === backup)!;
    expect(listed.running).toEqual([expect.objectContaining({ name: "hog-long-3.0", backupCopy: true })]);
    expect(farm.coordinatorLog()).toContain("backup copy of a long build started");
    const text = await farm.cli(["status", jobId, "--derivations"]);
    expect(text.stdout).toMatch(new RegExp(`hog-long-3\\.0 .*backup copy on ${backup}`));

    await farm.killWorker(primary);
    await waitFor("the primary's worker to be declared lost", async () => (await workers(farm)).find((w) => w.workerId === primary)?.state === "lost", 30_000, 200);
    r = await row(jobId);
    // Still building, under the same lease, now held by the copy: nothing was requeued.
    expect(r).toMatchObject({ state: "building", workerId: backup, attempts: 1 });

    let state = "running";
    await waitFor("the job to finish", async () => (state = (await jobStatus(farm, jobId)).state) !== "running", 60_000, 300);
    expect(state).toBe("succeeded");
    r = await row(jobId);
    expect(r).toMatchObject({ state: "done", workerId: backup, attempts: 1 });
    expect(farm.coordinatorLog()).toMatch(/worker lost; its builds were requeued.*"requeued":0|"requeued":0.*worker lost/);
  }, 120_000);
});
