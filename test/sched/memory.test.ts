// Memory-aware scheduling, for real: real Nix builds of memory hogs whose
// peak grows with $NIX_BUILD_CORES, on three workers each in its own cgroup v1
// memory limit (256 MiB, 512 MiB, 1.5 GiB; 2 cores each), real NATS, real gRPC.
//
//  1. No history (fresh NATS prefix, empty estimate bucket): hog-huge needs
//     more at 2 cores than the default estimate reserves, so the kernel
//     OOM-kills it inside its build cgroup; the coordinator learns, retries
//     with fewer cores and a larger reservation, and the build succeeds
//     (status: done, oomKills 1 — not failed).
//  2. With history (new drvs of the same pnames, same farm): no OOM kill at
//     all, and every build sits on a worker where its reservation fits, with
//     the most cores whose estimate fits there.
//  3. A build no worker can hold fails after bounded OOM retries, saying why.
//
// Each worker's own Node process lives in its cgroup too, so FARM_MEMORY
// declares what builds may really use: the limit minus NODE_ALLOWANCE (the
// test checks Node stays well below that).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FarmCluster } from "../harness/cluster.js";
import { DEFAULT_MEMORY_FIT, safetyMargin, withHeadroom } from "../../coordinator/core/memory-fit.js";
import { LearnedEstimator, estimateKey, estimateStoreKey } from "../../coordinator/core/learned-estimator.js";
import { memoryAt } from "../../coordinator/core/estimator.js";
import type { DrvNode } from "../../coordinator/core/types.js";
import { mkNode } from "../../coordinator/core/test-support.js";
import {
  BuildCgroupWatcher,
  buildLog,
  jobStatus,
  kernelOomKills,
  memcgName,
  metric,
  mib,
  MiB,
  storedEstimates,
  submitFollow,
  workers,
  type KernelOomKill,
  type Row,
} from "./support.js";

/** Memory left to the worker's own Node process inside its cgroup. */
const NODE_ALLOWANCE = 96 * MiB;
const LIMITS: Record<string, number> = { w256: 256 * MiB, w512: 512 * MiB, w1536: 1536 * MiB };
/** What each worker declares (FARM_MEMORY): its cgroup limit minus Node's allowance. */
const DECLARED = Object.fromEntries(Object.entries(LIMITS).map(([n, l]) => [n, l - NODE_ALLOWANCE]));
/** What memory-fit may hand out on a worker (coordinator defaults: 10%, within [64, 128] MiB, kept back). */
const usable = (w: string) => DECLARED[w] - safetyMargin(DECLARED[w], DEFAULT_MEMORY_FIT);
/** cgroup v1 stores limits in whole pages. */
const pageDown = (b: number) => Math.floor(b / 4096) * 4096;

/** A hog as the coordinator sees it (what the estimator keys and its prior depend on). */
const hogNode = (pname: string): DrvNode => mkNode(`${pname}-1.0`, [], { pname, version: "1.0", outputs: [] });

let farm: FarmCluster;
let watcher: BuildCgroupWatcher;
const measured: string[] = [];
const hogRows = (rows: Row[]) => rows.filter((r) => r.name.startsWith("hog-") && !r.name.startsWith("hog-root"));
const coresInLog = async (r: Row) => [...(await buildLog(farm, r.drvPath)).matchAll(/NIX_BUILD_CORES=(\d+) -> (\d+) MiB/g)].map((m) => Number(m[1]));
/** OOM kills the kernel logged in this file's cgroups (null: log unreadable). */
const ourKills = () => kernelOomKills()?.filter((k) => k.taskMemcg.startsWith(`/tmpnix-test-${process.pid}/`)) ?? null;
const killKey = (k: KernelOomKill) => `${k.at}/${k.pid}`;
/** Kills logged since `before` (a set of killKey) — by identity, not clock: robust to log wrap and clock skew. */
const newKills = (before: Set<string>) => ourKills()?.filter((k) => !before.has(killKey(k))) ?? null;
const killsNow = () => new Set((ourKills() ?? []).map(killKey));

beforeAll(async () => {
  farm = await FarmCluster.start({
    workers: Object.keys(LIMITS).map((name) => ({ name, memoryLimitBytes: LIMITS[name], cores: 2, env: { FARM_MEMORY: String(DECLARED[name]) } })),
  });
  watcher = new BuildCgroupWatcher(farm).start();
}, 120_000);

afterAll(async () => {
  watcher?.stop();
  if (measured.length) console.log(`memory scheduling, measured:\n  ${measured.join("\n  ")}`);
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
});

describe("memory-aware scheduling on real cgroup limits", () => {
  it("workers declare what builds may use, and their own Node process fits in the rest", async () => {
    const listed = await workers(farm);
    for (const [name, declared] of Object.entries(DECLARED)) {
      const w = listed.find((x) => x.workerId === name)!;
      expect(w.memoryBytes).toBe(declared);
      expect(w.unreservedMemoryBytes).toBe(declared);
      const idle = farm.workers.get(name)!.memoryStats().maxUsageBytes;
      measured.push(`${name}: idle worker cgroup peak ${mib(idle)} (allowance ${mib(NODE_ALLOWANCE)})`);
      expect(idle).toBeLessThan(NODE_ALLOWANCE);
    }
    expect((await storedEstimates(farm.prefix)).size).toBe(0);
  });

  it("no history: a hog bigger than the default reservation is OOM-killed by the kernel once, then retried with fewer cores and succeeds", async () => {
    const before = killsNow();
    const { code, job } = await submitFollow(farm, "cold");
    expect(code, JSON.stringify(job.failures)).toBe(0);
    expect(job.state).toBe("succeeded");
    const rows = hogRows((await jobStatus(farm, job.jobId)).derivations);
    const huge = rows.find((r) => r.name === "hog-huge-1.0")!;
    expect(huge.state).toBe("done");
    expect(huge.oomKills).toBe(1);
    expect(huge.attempts).toBeGreaterThanOrEqual(2);
    expect(huge.cores).toBe(1); // the retry got at most half the cores
    expect(huge.estimateSource).toBe("history");
    expect(huge.workerId).toBe("w1536");
    expect(huge.peakMemoryBytes!).toBeLessThanOrEqual(huge.reservedMemoryBytes!);
    for (const r of rows.filter((x) => x !== huge)) expect([r.name, r.oomKills ?? 0]).toEqual([r.name, 0]);
    expect(await coresInLog(huge)).toContain(1);

    // The worker ran the first attempt under the cold reservation (its build cgroup's limit),
    // saw the kill in that cgroup's OOM counter (cgroup-v1 monitor), and reported out-of-memory.
    const log = farm.workerLog("w1536").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    const ended = log.find((l) => l.msg === "build of hog-huge-1.0 ended: out-of-memory");
    expect(ended, "worker log has no out-of-memory end for hog-huge").toBeDefined();
    const sameAttempt = (l: Record<string, unknown>) => l.drv === ended!.drv && l.epoch === ended!.epoch;
    const assigned = log.find((l) => sameAttempt(l) && typeof l.memoryLimitBytes === "number")!;
    const built = log.find((l) => sameAttempt(l) && l.monitor !== undefined)!;
    const coldLimit = assigned.memoryLimitBytes as number;
    expect(assigned.cores).toBe(2);
    expect(coldLimit).toBeLessThan(huge.reservedMemoryBytes!);
    expect(built.monitor).toBe("cgroup-v1");
    expect(built.peakMemoryBytes as number).toBeGreaterThanOrEqual(coldLimit - 8 * MiB);
    const coldGroup = watcher.on("w1536").find((g) => g.limitBytes === pageDown(coldLimit));
    expect(coldGroup, "the kernel never showed a build cgroup with the cold limit").toBeDefined();

    // The kernel's own record: the hog process, killed in w1536's build cgroup at its limit.
    const kills = newKills(before);
    if (kills !== null) {
      const hogKill = kills.find((k) => k.task === "hog" && k.taskMemcg.startsWith(`${memcgName(farm.workers.get("w1536")!.cgroupDir)}/tmpnix-build-`));
      expect(hogKill, JSON.stringify(kills)).toBeDefined();
      expect(hogKill!.anonRssBytes).toBeGreaterThan(coldLimit - 128 * MiB);
      expect(kills.filter((k) => k.task === "hog")).toHaveLength(1);
      measured.push(`cold: kernel killed pid ${hogKill!.pid} (hog) at anon-rss ${mib(hogKill!.anonRssBytes)} in ${hogKill!.taskMemcg}`);
    } else {
      measured.push("cold: kernel log unreadable (no CAP_SYSLOG); relied on the worker's cgroup counter");
    }
    const m = await metric(farm, "tmpnix_oom_kills_total");
    expect(m.total).toBe(1);
    expect(m.series['{worker="w1536"}']).toBe(1);
    for (const name of Object.keys(LIMITS)) expect(farm.workers.get(name)!.memoryStats().oomKills).toBe(0); // Node itself never hit its cgroup limit

    // Learned estimates were persisted in NATS KV under pname@major.
    const stored = await storedEstimates(farm.prefix);
    for (const p of ["hog-huge", "hog-big", "hog-small"]) expect(stored.has(estimateStoreKey(estimateKey(p, "1.0"))), p).toBe(true);
    measured.push(
      `cold: hog-huge first attempt 2 cores, limit ${mib(coldLimit)}, killed at ${mib(built.peakMemoryBytes as number)}; ` +
        `retry ${huge.cores} core, reserved ${mib(huge.reservedMemoryBytes)}, peak ${mib(huge.peakMemoryBytes)}`,
    );
    for (const r of rows) measured.push(`cold: ${r.name} on ${r.workerId} cores=${r.cores} reserved=${mib(r.reservedMemoryBytes)} peak=${mib(r.peakMemoryBytes)} oomKills=${r.oomKills ?? 0}`);
  }, 120_000);

  it("with history: new drvs of the same pnames run with no OOM kill, each where its estimate fits, with the most cores that fit", async () => {
    // What the scheduler knows before this job: the persisted estimates.
    const estimator = new LearnedEstimator();
    const imported = estimator.importEstimates([...(await storedEstimates(farm.prefix)).values()]);
    expect(imported.rejected).toEqual([]);
    const need = (pname: string, cores: number) => memoryAt(estimator.model(hogNode(pname)), cores);
    const killsBefore = killsNow();
    const groupsBefore = new Set(watcher.seen.keys());
    const oomBefore = (await metric(farm, "tmpnix_oom_kills_total")).total;

    // Watch `farm workers` while the job runs: running rows and unreserved memory.
    let polling = true;
    const snapshots: Awaited<ReturnType<typeof workers>>[] = [];
    const poller = (async () => {
      while (polling) {
        // A failed poll only misses a snapshot; the job's own result is what counts.
        snapshots.push(await workers(farm).catch(() => []));
        await new Promise((r) => setTimeout(r, 400));
      }
    })();
    const { code, job } = await submitFollow(farm, "warm").finally(() => (polling = false));
    await poller;
    expect(code, JSON.stringify(job.failures)).toBe(0);
    expect(job.state).toBe("succeeded");
    const rows = hogRows((await jobStatus(farm, job.jobId)).derivations);
    expect(rows).toHaveLength(6);

    for (const r of rows) {
      const w = r.workerId!;
      const pname = r.name.replace(/-1\.0$/, "");
      const what = `${r.name} on ${w} (${r.cores} cores, reserved ${mib(r.reservedMemoryBytes)}, peak ${mib(r.peakMemoryBytes)})`;
      measured.push(`warm: ${what}`);
      expect(r.state, what).toBe("done");
      expect(r.oomKills ?? 0, what).toBe(0);
      expect(r.attempts, what).toBe(1);
      expect(r.estimateSource, what).toBe("history");
      // The reservation fits the worker, covers the estimate at the cores granted, and held the build.
      expect(r.reservedMemoryBytes!, what).toBeLessThanOrEqual(usable(w));
      // (0.9: estimates move a little as earlier builds of the same pname in this job finish.)
      expect(r.reservedMemoryBytes!, what).toBeGreaterThanOrEqual(need(pname, r.cores!) * 0.9);
      expect(r.peakMemoryBytes!, what).toBeLessThanOrEqual(r.reservedMemoryBytes!);
      // Cores: the most (of 2) whose estimate and its headroom fit that worker (else 1), and Nix got exactly that many.
      const best = [2, 1].find((k) => withHeadroom(need(pname, k), estimator.model(hogNode(pname)).successes, DEFAULT_MEMORY_FIT) <= usable(w)) ?? 1;
      expect(r.cores, `${what}; estimates ${mib(need(pname, 1))} @1, ${mib(need(pname, 2))} @2`).toBe(best);
      expect(await coresInLog(r), what).toEqual([r.cores]);
    }
    const big = rows.filter((r) => r.name === "hog-big-1.0");
    expect(big.map((r) => r.workerId)).not.toContain("w256");
    // Over the whole run so far, the 256 MiB worker was only ever given hog-small (and roots).
    const givenSmall = farm.workerLog("w256").split("\n").filter((l) => l.includes('"msg":"assigned ')).map((l) => JSON.parse(l).msg as string);
    expect(givenSmall.length).toBeGreaterThan(0);
    for (const msg of givenSmall) expect(msg).toMatch(/^assigned hog-(small|root-\w+)[ -]/);
    expect(rows.find((r) => r.name === "hog-huge-1.0")!.workerId).toBe("w1536");
    // hog-big really needs ~120 MiB more per core: one ran on 1 core on the 512 MiB worker, one on 2 cores.
    const onMid = big.filter((r) => r.workerId === "w512");
    const onBig = big.filter((r) => r.workerId === "w1536");
    expect(onMid.length, "no hog-big ran on the 512 MiB worker").toBeGreaterThan(0);
    for (const r of onMid) expect(r.cores).toBe(1);
    if (onBig.length > 0) {
      const perCore = onBig[0].peakMemoryBytes! - onMid[0].peakMemoryBytes!;
      measured.push(`warm: hog-big peak 2 cores - 1 core = ${mib(perCore)} (builder touches 120 MiB/core)`);
      expect(perCore).toBeGreaterThan(90 * MiB);
      expect(perCore).toBeLessThan(150 * MiB);
    }

    // Zero OOM kills: coordinator metric, workers' own cgroups, the kernel log.
    expect((await metric(farm, "tmpnix_oom_kills_total")).total).toBe(oomBefore);
    for (const name of Object.keys(LIMITS)) expect(farm.workers.get(name)!.memoryStats().oomKills, name).toBe(0);
    const kills = newKills(killsBefore);
    if (kills !== null) expect(kills).toEqual([]);

    // The kernel enforced each reservation: every build cgroup of this job had exactly its row's limit.
    const groups = [...watcher.seen.entries()].filter(([k]) => !groupsBefore.has(k)).map(([, g]) => g);
    for (const g of groups) {
      const owner = rows.find((r) => r.workerId === g.worker && pageDown(r.reservedMemoryBytes!) === g.limitBytes);
      if (owner === undefined) continue; // the root's build
      expect(g.oomKills, g.name).toBe(0);
      expect(g.maxUsageBytes).toBeLessThanOrEqual(g.limitBytes);
    }
    for (const r of rows) {
      expect(groups.some((g) => g.worker === r.workerId && g.limitBytes === pageDown(r.reservedMemoryBytes!)), `no build cgroup with ${r.name}'s limit on ${r.workerId}`).toBe(true);
    }

    // `farm workers` showed running builds with their reservations taken off the unreserved memory.
    const busy = snapshots.flat().filter((w) => (w.running ?? []).length > 0);
    expect(busy.length).toBeGreaterThan(0);
    for (const w of busy) {
      const reserved = w.running!.reduce((n, r) => n + (r.reservedMemoryBytes ?? 0), 0);
      expect(w.unreservedMemoryBytes ?? 0).toBe(Math.max(0, w.memoryBytes - reserved));
    }
  }, 120_000);

  it("a build no worker can hold fails after bounded OOM retries, saying how much it needs and what the largest worker has", async () => {
    const before = (await metric(farm, "tmpnix_oom_kills_total")).total;
    const killsBefore = killsNow();
    const { code, job } = await submitFollow(farm, "giant");
    expect(code).not.toBe(0);
    expect(job.state).toBe("failed");
    const [row] = (await jobStatus(farm, job.jobId)).derivations.filter((r) => r.name === "hog-giant-1.0");
    expect(row.state).toBe("failed");
    expect(row.reason).toMatch(new RegExp(`^needs more than \\d+ MB; largest worker has ${Math.round(DECLARED.w1536 / MiB)} MB`));
    expect(row.oomKills).toBeGreaterThanOrEqual(1);
    expect(row.oomKills).toBeLessThanOrEqual(4); // 1 + maxOomRetries (3)
    expect((await metric(farm, "tmpnix_oom_kills_total")).total - before).toBe(row.oomKills);
    const kills = newKills(killsBefore);
    if (kills !== null) expect(kills.filter((k) => k.task === "hog")).toHaveLength(row.oomKills!);
    measured.push(`giant: failed after ${row.oomKills} OOM kills: ${row.reason}`);
  }, 120_000);
});
