// Two workers build the same derivation after a partition, with real Nix,
// NATS and gRPC. Worker p1's process is frozen mid-build (its Nix build runs
// on) past the heartbeat timeout; the coordinator requeues the build to p2.
// p1 wakes up with the build done and uploads; the two outputs are not
// bit-for-bit the same (the build records a timestamp). Only a lease's holder
// may upload, so p1's upload is refused; p2's output is staged, its report
// accepted and only then published; p1's stale result is rejected, and the
// dependent is built from what the cache holds.
import { afterAll, describe, expect, it } from "vitest";
import { readdirSync, readlinkSync } from "node:fs";
import path from "node:path";
import { CacheClient } from "../../proto/nix/mod.js";
import { FarmCluster, NATS_URL, REPO } from "../harness/cluster.js";
import { waitFor } from "../harness/ports.js";
import { badNarInfos, loadFarmState, narFile } from "./cache-audit.js";
import { coordinatorRecords, records } from "./farm-log.js";

const FIXTURE = path.join(REPO, "test/fixtures/farm-faults/default.nix");

let farm: FarmCluster | undefined;
afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
});

const logged = (name: string, msg: RegExp) => records(farm!.workerLog(name)).some((r) => msg.test(r.msg));

/** Whether some builder on the machine is building `drvName` (Nix runs it in its build dir, nix-build-<drv name>-N). */
function buildingNow(drvName: string): boolean {
  for (const pid of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    try {
      if (path.basename(readlinkSync(`/proc/${pid}/cwd`)).startsWith(`nix-build-${drvName}-`)) return true;
    } catch {
      continue; // gone, or not ours to read
    }
  }
  return false;
}

describe("a partition", () => {
  it("leaves one consistent copy in the cache when two workers built the same derivation", async () => {
    farm = await FarmCluster.start({ workers: [{ name: "p1" }], heartbeatInterval: "500ms", heartbeatTimeout: "2500ms" });
    const job = farm.cli(["submit", `${FIXTURE}#partition`, "--follow", "--json"]);
    const first = await waitFor("slowpoke on p1", () => coordinatorRecords(farm!, "assigned", "slowpoke-1.0")[0], 60_000, 100);

    // Freeze only p1's worker process: its Nix build goes on; the coordinator hears nothing. p1 is frozen
    // before p2 starts, so how long a worker takes to start on a busy machine can't let p1 finish first.
    const p1 = farm.workers.get("p1")!;
    // Its builder must be running (the worker logs "fetched inputs" a moment before it asks Nix to build).
    await waitFor("p1's build of slowpoke", () => logged("p1", /^fetched inputs of slowpoke/) && buildingNow("slowpoke-1.0.drv"), 20_000, 50);
    process.kill(p1.pid, "SIGSTOP");
    try {
      farm.startWorker({ name: "p2" });
      await waitFor("slowpoke requeued to p2", () => coordinatorRecords(farm!, "assigned", "slowpoke-1.0").find((r) => r.worker === "p2"), 60_000, 100);
      // p1's build (5 s) ends while it is frozen: its builder writes the output last.
      const p1Store = path.join(farm.root, "workers", "p1", "nix", "store");
      await waitFor("p1's builder done", () => readdirSync(p1Store).some((f) => f.endsWith("-slowpoke-1.0")), 30_000, 100);
    } finally {
      process.kill(p1.pid, "SIGCONT");
    }

    const result = await job;
    // On failure, say what the job said about its failed derivations.
    const failures = () => { try { return JSON.stringify(JSON.parse(result.stdout).failures ?? result.stdout); } catch { return result.stdout; } };
    expect(result.code, `${result.stderr}\n${failures()}`).toBe(0);
    expect(JSON.parse(result.stdout).state).toBe("succeeded");

    // Both built it. Whatever p1 tried to upload came after its lease was gone and was refused (it may also have
    // learned of that first, on rejoining, and not tried): only p2's accepted build is published.
    expect(logged("p1", /^built slowpoke-1.0/) && logged("p2", /^built slowpoke-1.0/)).toBe(true);
    const refusedUploads = coordinatorRecords(farm, "upload rejected").filter((r) => /slowpoke-1\.0/.test(String(r.message)));
    for (const r of refusedUploads) expect(`${r.status} ${r.message}`).toBe(`403 p1 holds no lease on ${first.drv} at epoch ${first.epoch}`);
    const published = coordinatorRecords(farm, "published accepted output").filter((r) => r.drv === first.drv);
    expect(published.map((r) => `${r.worker} #${r.epoch}`)).toEqual([`p2 #${first.epoch! + 2}`]);
    // One accepted success (p2's, the current lease); p1's late result was rejected as stale.
    const reports = coordinatorRecords(farm, "build reported", "slowpoke-1.0");
    const accepted = coordinatorRecords(farm, "result accepted", "slowpoke-1.0");
    const rejected = coordinatorRecords(farm, "result rejected", "slowpoke-1.0");
    expect(accepted.map((r) => `${r.worker} #${r.epoch}`)).toEqual([`p2 #${first.epoch! + 2}`]);
    expect(reports.filter((r) => r.worker === "p1").length).toBe(rejected.length);
    expect(rejected.every((r) => r.worker === "p1" && r.epoch === first.epoch)).toBe(true);

    // The cache is consistent: signed, and the dependent holds exactly the cached slowpoke.
    expect(badNarInfos(path.join(farm.dataDir, "cache"), farm.publicKey()).bad).toEqual([]);
    const state = await loadFarmState(NATS_URL, farm.prefix);
    const node = (name: string) => state.nodes.find((n) => n.name === name)!;
    const client = new CacheClient({ baseUrl: farm.cacheUrl, trustedPublicKeys: [farm.publicKey()], storeDir: "/tmp/nix/store" });
    const slow = await narFile(client, node("slowpoke-1.0").outputs.out);
    const user = await narFile(client, node("partition-user-1.0").outputs.out);
    expect(slow).toMatch(/^built at \d+/);
    expect(user).toBe(slow);
  }, 180_000);
});
