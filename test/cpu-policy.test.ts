// The coordinator's CPU policy (coordinator/cpu-policy.ts) on real processes:
// chrt really changes every thread's policy, threads started afterwards
// inherit it, and `farm coordinator` applies it at start unless told not to.
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import { readdir, readFile } from "node:fs/promises";
import { afterEach, describe, expect, it } from "vitest";
import path from "node:path";
import { applyCpuPolicy, useBatchScheduling } from "../coordinator/cpu-policy.js";
import { FarmCluster } from "./harness/cluster.js";
import { waitFor } from "./harness/ports.js";

const SCHED_OTHER = 0;
const SCHED_BATCH = 3;

/** The scheduling policy of each thread of `pid`, from /proc/<pid>/task/<tid>/stat (field 41). */
async function threadPolicies(pid: number): Promise<number[]> {
  const policies: number[] = [];
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, "utf8").catch(() => null);
    if (stat !== null) policies.push(policyOf(stat)); // null: the thread ended while we listed
  }
  return policies;
}

/** Policy field of a /proc stat line: the command name may hold spaces, so fields are counted from the last ')', with field 3. */
const policyOf = (stat: string) => Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[41 - 3]);
// Children inherit the policy: these tests compare against SCHED_OTHER, so they need to be started under it.
const startedUnderOther = policyOf(readFileSync("/proc/self/stat", "utf8")) === SCHED_OTHER;

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill("SIGKILL");
});

/** A node process that starts a worker thread and a thread-pool job when it reads a line, and says "started". */
function nodeChild(): Promise<ChildProcess> {
  const script = `
    const { Worker } = require("node:worker_threads");
    process.stdin.once("data", () => {
      new Worker("setInterval(() => {}, 1000)", { eval: true }).on("online", () =>
        require("node:fs").stat(process.execPath, () => process.stdout.write("started\\n")));
    });
    process.stdout.write("ready\\n");
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["-e", script], { stdio: ["pipe", "pipe", "inherit"] });
  children.push(child);
  return new Promise((resolve) => child.stdout!.once("data", () => resolve(child)));
}

describe.skipIf(!startedUnderOther)("SCHED_BATCH with chrt", () => {
  it("puts every thread of a running process under SCHED_BATCH, and threads started later inherit it", async () => {
    const child = await nodeChild();
    const before = await threadPolicies(child.pid!);
    expect(before.length).toBeGreaterThan(1); // node runs V8's platform threads beside the main one
    expect(new Set(before)).toEqual(new Set([SCHED_OTHER]));

    expect(await useBatchScheduling(child.pid!)).toEqual({ applied: true });
    expect(new Set(await threadPolicies(child.pid!))).toEqual(new Set([SCHED_BATCH]));

    const started = new Promise((resolve) => child.stdout!.once("data", resolve));
    child.stdin!.write("go\n");
    await started;
    const after = await threadPolicies(child.pid!);
    expect(after.length).toBeGreaterThan(before.length); // a worker thread and libuv's pool
    expect(new Set(after)).toEqual(new Set([SCHED_BATCH]));
  });

  it("says why when it can't, and 'inherit' changes nothing", async () => {
    const gone = spawn("true");
    await new Promise((r) => gone.once("exit", r));
    const failed = await useBatchScheduling(gone.pid!);
    expect(failed.applied).toBe(false);
    expect(failed.applied === false && failed.reason).toMatch(/\S/);

    const child = await nodeChild();
    expect(await applyCpuPolicy("inherit", child.pid!)).toEqual({ applied: false, reason: "cpu-policy is inherit" });
    expect(new Set(await threadPolicies(child.pid!))).toEqual(new Set([SCHED_OTHER]));
  });
});

describe.skipIf(!startedUnderOther)("farm coordinator", () => {
  let farm: FarmCluster | undefined;
  afterEach(async () => {
    await farm?.stop();
    farm = undefined;
  });

  /** Waits for the coordinator's line saying its policy is set (after its ports are bound). */
  const policySet = (c: FarmCluster) => waitFor("the CPU policy line", () => readFileSync(path.join(c.root, "coordinator-1.log"), "utf8").includes('"msg":"CPU policy set'));

  it("runs under SCHED_BATCH by default", async () => {
    farm = await FarmCluster.start({ workers: [] });
    await policySet(farm);
    const policies = await threadPolicies(farm.coordinator!.pid!);
    expect(policies.length).toBeGreaterThan(4);
    expect(new Set(policies)).toEqual(new Set([SCHED_BATCH]));
  });

  it("refuses an unknown policy before it listens, saying which values it takes", async () => {
    const before = new Set(readdirSync(os.tmpdir()).filter((e) => e.startsWith("tmpnix-farm-test-")));
    await expect(FarmCluster.start({ workers: [], coordinatorEnv: { FARM_CPU_POLICY: "fifo" } })).rejects.toThrow(/exited.*expected batch or inherit/s);
    // The harness stopped what it started: no dir of this start is left.
    expect(readdirSync(os.tmpdir()).filter((e) => e.startsWith("tmpnix-farm-test-") && !before.has(e))).toEqual([]);
  });

  it("runs as started with --cpu-policy=inherit (FARM_CPU_POLICY)", async () => {
    farm = await FarmCluster.start({ workers: [], coordinatorEnv: { FARM_CPU_POLICY: "inherit" } });
    await policySet(farm);
    expect(new Set(await threadPolicies(farm.coordinator!.pid!))).toEqual(new Set([SCHED_OTHER]));
  });
});
