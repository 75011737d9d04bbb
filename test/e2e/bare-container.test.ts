// A worker on the hosts the farm is for: a bare container with Node and no
// Nix, no root, no writable cgroup (test/harness/bare-container.ts: the host's
// Nix hidden, uid 65534, `env -i` plus the kit's .env, a memory cgroup set
// from outside that the worker can read but not write), under a seccomp filter
// that denies newer syscalls as the seed's hosts do.
//
//   1. The operator runs `farm publish-nix`; the bare worker installs that Nix
//      from the cache at start, joins saying so, and builds the demo DAG with a
//      normal worker; every narinfo verifies.
//   2. With the bare worker alone: a hog over its reservation is killed by the
//      worker's /proc guard (no kernel OOM kill in the container, the worker
//      keeps its pid), counted as one OOM, and succeeds with a raised estimate.
//   3. A build holding 200 MiB is measured by the /proc guard within 15 %.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FarmCluster, REPO } from "../harness/cluster.js";
import { parseNarInfo, verifyNarInfo } from "../../proto/nix/mod.js";
import { HOGS, jobStatus, MiB, mib, workers, type Row } from "../sched/support.js";

const DEMO = path.join(REPO, "test/fixtures/demo/default.nix");
const BARE = "bare";
/** The container's limit, set from outside (the platform's); the worker reads it from its cgroup. */
const CONTAINER_LIMIT = 1536 * MiB;

let farm: FarmCluster;

beforeAll(async () => {
  farm = await FarmCluster.start({ workers: [{ name: "normal", env: { FARM_MEMORY: String(256 * MiB) } }] });
}, 120_000);

afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
});

/** The bare worker's log records (pino JSON lines). */
const bareLog = () =>
  farm
    .workerLog(BARE)
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown> & { msg: string; pid: number });

/**
 * The seed's hosts answer clone3, close_range, faccessat2 and fchmodat2 with EPERM
 * and affinity calls with EINVAL: the bare worker runs under a seccomp filter that
 * does the same. Their Node is the platform's own, built for their older glibc;
 * this machine's (glibc 2.36) can't start a thread under that filter, so here it
 * runs through syscall-compat, as it would on such a host with a newer Node. The
 * farm's Nix brings its own syscall-compat (coordinator/cli/publish-nix/).
 */
async function seedHostSyscalls(): Promise<string[]> {
  const deny = path.join(farm.root, "deny-new-syscalls");
  const compat = path.join(farm.root, "syscall-compat");
  await execa("cc", ["-O1", "-o", deny, path.join(REPO, "test/fixtures/seccomp/deny-new-syscalls.c")]);
  await execa("cc", ["-static", "-O1", "-o", compat, path.join(REPO, "coordinator/cli/publish-nix/syscall-compat.c")]);
  return [deny, compat];
}

async function submit(ref: string) {
  const r = await farm.cli(["submit", ref, "--follow", "--json"]);
  return { ...r, job: r.stdout.trim() ? JSON.parse(r.stdout) : undefined };
}

describe("a worker on a bare container", () => {
  it("installs the Nix the operator published, joins saying so, and builds the demo DAG beside a normal worker", async () => {
    const published = await farm.cli(["publish-nix", "--json"]);
    expect(published.code, published.stderr).toBe(0);
    const nixPath = JSON.parse(published.stdout).storePath as string;
    expect(nixPath).toMatch(/^\/tmp\/nix\/store\/[0-9a-z]{32}-nix-2\.8\.0$/);

    const bare = farm.startWorker({ name: BARE, bare: true, memoryLimitBytes: CONTAINER_LIMIT, launcher: await seedHostSyscalls() });
    await farm.waitForWorkers(2, 180_000);
    const listed = (await workers(farm)).find((w) => w.workerId === BARE) as unknown as { nixVersion: string; nixSource: string; memoryBytes: number };
    expect(listed.nixVersion).toBe("2.8.0");
    expect(listed.nixSource).toMatch(new RegExp(`^cache ${nixPath} `));
    expect(listed.memoryBytes).toBeLessThan(CONTAINER_LIMIT); // read from the cgroup it can't write
    const log = bareLog();
    expect(log.some((l) => l.msg === "no Nix on this host: installing the farm's Nix from its cache")).toBe(true);
    expect(bare.exitCode).toBeUndefined();

    const { code, job, stderr } = await submit(`${DEMO}#demo`);
    expect(code, stderr).toBe(0);
    expect(job.state).toBe("succeeded");
    const built = farm.coordinatorLog().split("\n").filter((l) => l.includes('"build reported"') && l.includes('"outcome":"succeeded"'));
    expect(built.filter((l) => JSON.parse(l).worker === BARE).length, "the bare worker built nothing").toBeGreaterThan(0);
    const dir = path.join(farm.dataDir, "cache");
    for (const f of readdirSync(dir).filter((n) => n.endsWith(".narinfo"))) {
      const info = parseNarInfo(readFileSync(path.join(dir, f), "utf8"), "/tmp/nix/store");
      expect(verifyNarInfo(info, [farm.publicKey()]), info.storePath).toBe(true);
    }
    // It ran as nobody with its builds measured by /proc: it could not make a cgroup of its own.
    expect(log.concat(bareLog()).some((l) => l.monitor === "proc")).toBe(true);
  }, 420_000);

  it("a hog over its reservation is killed by the worker's guard, not the kernel; one OOM, then success with a raised estimate", async () => {
    await farm.killWorker("normal"); // only the bare worker may take it
    const pidBefore = bareLog()[0].pid;
    const { code, job, stderr } = await submit(`${HOGS}#cold`);
    expect(code, stderr).toBe(0);
    expect(job.state).toBe("succeeded");
    const rows = (await jobStatus(farm, job.jobId)).derivations as Row[];
    const huge = rows.find((r) => r.name === "hog-huge-1.0")!;
    expect(huge.oomKills).toBe(1);
    expect(huge.state).toBe("done");
    const log = bareLog();
    const ended = log.find((l) => l.msg === "build of hog-huge-1.0 ended: out-of-memory");
    expect(ended, "the worker never reported the guard's kill").toBeDefined();
    const first = log.find((l) => l.drv === ended!.drv && l.epoch === ended!.epoch && typeof l.memoryLimitBytes === "number")!;
    expect(huge.reservedMemoryBytes!).toBeGreaterThan(first.memoryLimitBytes as number);
    // The container itself never hit its limit, and the worker is the same process.
    expect(farm.workers.get(BARE)!.memoryStats().oomKills).toBe(0);
    expect(new Set(log.map((l) => l.pid))).toEqual(new Set([pidBefore]));
    expect(farm.workers.get(BARE)!.exitCode).toBeUndefined();
  }, 420_000);

  it("measures a build holding 200 MiB within 15 % by sampling /proc", async () => {
    const r = await farm.cli(["submit", `${HOGS}#hold200`, "--follow", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const job = JSON.parse(r.stdout);
    const row = ((await jobStatus(farm, job.jobId)).derivations as Row[]).find((x) => x.name === "hog-hold-1.0")!;
    const peak = row.peakMemoryBytes!;
    expect(Math.abs(peak - 200 * MiB) / (200 * MiB), `peak ${mib(peak)}`).toBeLessThanOrEqual(0.15);
  }, 300_000);
});
