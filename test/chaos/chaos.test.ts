// "Survive the fleet": a 100+ derivation DAG (39 with CHAOS_SIZE=small) builds
// on 4 isolated workers with real Nix, NATS and gRPC while workers are
// SIGKILLed and replaced with empty ones, the coordinator is SIGKILLed twice,
// the farm's NATS server restarts, and one worker is frozen (SIGSTOP of its whole
// cgroup) past the heartbeat timeout. Workers run builds as build users of
// their own, and one build of the DAG snoops every /proc it can read for a
// token (it must find none). The job must succeed, the cache must be
// sound, the durable state must claim nothing the cache lacks, and no result
// under a stale lease may be accepted.
import { afterAll, describe, expect, it } from "vitest";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { FarmCluster, REPO, type WorkerSpec } from "../harness/cluster.js";
import { waitFor } from "../harness/ports.js";
import { auditLeases, readRuns } from "./audit.js";
import { badNarInfos, doneWithoutOutputs, loadFarmState, narFile } from "./cache-audit.js";
import { CacheClient } from "../../proto/nix/mod.js";
import { unleash, type ChaosPlan, type ChaosRecord } from "./chaos-monkey.js";
import { records } from "./farm-log.js";
import { PrivateNats } from "./nats-server.js";

const FULL = process.env.CHAOS_SIZE === "full";
const FIXTURE = path.join(REPO, "test/fixtures/chaos/default.nix");
const HEARTBEAT_TIMEOUT_MS = 4000;
/** How long after the plan's last disruption (counted from the submit) the DAG's gate opens. */
const GATE_MARGIN_MS = 8000;
const SEED = Number(process.env.CHAOS_SEED ?? Date.now() % 100_000);

// Disruptions are spread out so each one is felt on its own: a worker frozen while the
// coordinator restarts, or while a NATS stall holds losses back, would never be declared lost.
const PLAN: ChaosPlan = FULL
  ? { workerKillEveryMs: 5000, workerRestartAfterMs: 1000, coordinatorKillsAtMs: [6000, 50_000], coordinatorDownMs: 1500, freezeAtMs: 12_000, freezeForMs: HEARTBEAT_TIMEOUT_MS + 4000, natsRestartAtMs: 28_000, natsDownMs: 2000 }
  : { workerKillEveryMs: 4000, workerRestartAfterMs: 800, coordinatorKillsAtMs: [3000, 21_000], coordinatorDownMs: 1000, freezeAtMs: 7000, freezeForMs: HEARTBEAT_TIMEOUT_MS + 3000, natsRestartAtMs: 15_000, natsDownMs: 1500 };

// Root workers whose builds run as build users (their own /etc/group and /etc/passwd, bound in their namespaces):
// the DAG's snoop build must find no token of the worker or the farm in any /proc it can read.
let WORKERS: WorkerSpec[] = [];
// Each worker has build users of its own: Nix kills every process of a build user's uid after a build, and here
// (one machine, no PID namespaces) a uid shared between workers would let one worker's Nix kill another's builds.
function buildUserWorkers(dir: string): WorkerSpec[] {
  return ["c1", "c2", "c3", "c4"].map((name, i) => {
    const uid = 30100 + 10 * i;
    const group = path.join(dir, `group-${name}`);
    const passwd = path.join(dir, `passwd-${name}`);
    writeFileSync(group, readFileSync("/etc/group", "utf8") + `nixbld:x:30000:nixbld1,nixbld2\n`);
    writeFileSync(passwd, readFileSync("/etc/passwd", "utf8") + `nixbld1:x:${uid + 1}:30000::/var/empty:/bin/false\nnixbld2:x:${uid + 2}:30000::/var/empty:/bin/false\n`);
    const overlay = [{ source: group, at: "/etc/group" }, { source: passwd, at: "/etc/passwd" }];
    return { name, cores: 1, overlay, env: { FARM_BUILD_USERS_GROUP: "nixbld" } };
  });
}

let farm: FarmCluster | undefined;
let nats: PrivateNats | undefined;
let natsDir: string | undefined;

afterAll(async () => {
  await nats?.restart(0).catch(() => undefined); // up again, so the farm's state can be deleted even after a failed restart
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
  await nats?.stop();
  if (natsDir && !process.env.KEEP_TEST_FILES) rmSync(natsDir, { recursive: true, force: true });
});

function coordinatorLogFiles(root: string): string[] {
  return readdirSync(root)
    .map((f) => /^coordinator-(\d+)\.log$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(a[1]) - Number(b[1]))
    .map((m) => path.join(root, m[0]));
}

function printReport(r: Record<string, unknown>, chaos: ChaosRecord): void {
  const lines = Object.entries(r).map(([k, v]) => `  ${k.padEnd(28)} ${v}`);
  console.log(["chaos report", ...lines, "  timeline:", ...chaos.timeline.map((t) => `    ${t}`)].join("\n"));
}

describe(`chaos (${FULL ? "full" : "small"})`, () => {
  it("finishes the job with a sound cache and no stale result accepted, while everything dies", async () => {
    // The farm gets a NATS server of the test's own, which the chaos may restart.
    natsDir = mkdtempSync(path.join(os.tmpdir(), "tmpnix-chaos-nats-"));
    nats = await PrivateNats.start(natsDir);
    WORKERS = buildUserWorkers(natsDir);
    const started = Date.now();
    farm = await FarmCluster.start({ workers: WORKERS, heartbeatInterval: "1s", heartbeatTimeout: `${HEARTBEAT_TIMEOUT_MS}ms`, natsUrl: nats.url });
    // The DAG's gate holds the job open until the plan's last disruption is over (and a margin for the job's
    // acceptance, when the plan's clock starts): on a fast machine the DAG alone finished before the second kill.
    const planEndMs = Math.max(...PLAN.coordinatorKillsAtMs.map((t) => t + PLAN.coordinatorDownMs), PLAN.natsRestartAtMs + PLAN.natsDownMs, PLAN.freezeAtMs + PLAN.freezeForMs);
    const notBefore = String(Math.ceil((Date.now() + planEndMs + GATE_MARGIN_MS) / 1000));
    const submit = farm.cli(["submit", `${FIXTURE}#${FULL ? "full" : "small"}`, "--follow", "--json"], { env: { TMPNIX_CHAOS_NOT_BEFORE: notBefore } });
    let finished = false;
    void submit.finally(() => (finished = true));
    // Chaos starts once the job is accepted (a submit lost to a dead coordinator is another story).
    await waitFor("the job to be accepted", async () => finished || JSON.parse((await farm!.cli(["status", "--json"])).stdout || "[]").length > 0, 120_000, 300);
    const jobStarted = Date.now();
    const chaos = await unleash(farm, WORKERS, PLAN, { seed: SEED, nats, finished: () => finished });
    const result = await submit;
    const jobSeconds = (Date.now() - jobStarted) / 1000;
    const state = await loadFarmState(nats.url, farm.prefix);
    const cache = badNarInfos(path.join(farm.dataDir, "cache"), farm.publicKey());
    const done = await doneWithoutOutputs(state, farm.cacheUrl, farm.publicKey());
    const files = coordinatorLogFiles(farm.root);
    const audit = auditLeases(readRuns(files), files.map((_, i) => chaos.killedRuns.includes(i + 1)));
    const derivations = state.drvs.length;
    const kills = chaos.workerKills + chaos.coordinatorKills + chaos.freezes;
    const rejected = audit.reports.filter((r) => r.accepted === false);
    printReport(
      {
        size: FULL ? "full" : "small",
        seed: SEED,
        derivations,
        "builds started": audit.assignments,
        "extra builds": audit.assignments - derivations,
        "kills (worker+coord+freeze)": `${kills} (${chaos.workerKills}+${chaos.coordinatorKills}+${chaos.freezes})`,
        "nats restarts": chaos.natsRestarts,
        "results reported": audit.reports.length,
        "results rejected": `${rejected.length} (${rejected.filter((r) => r.stale).length} stale)`,
        "narinfos verified": `${cache.total - cache.bad.length}/${cache.total}`,
        "job seconds": jobSeconds.toFixed(1),
        "test seconds": ((Date.now() - started) / 1000).toFixed(1),
      },
      chaos,
    );

    // On failure, show what the job said about its failed derivations.
    const failures = () => { try { return JSON.stringify(JSON.parse(result.stdout).failures ?? result.stdout); } catch { return result.stdout; } };
    expect(result.code, `${result.stderr}\n${failures()}`).toBe(0);
    expect(JSON.parse(result.stdout).state).toBe("succeeded");
    // Every kind of disruption really happened while the job ran.
    expect(chaos.coordinatorKills).toBe(PLAN.coordinatorKillsAtMs.length);
    expect(chaos.natsRestarts).toBe(1);
    expect(chaos.freezes).toBe(1);
    expect(chaos.workerKills).toBeGreaterThanOrEqual(3);

    // The frozen worker was declared lost, came back and joined again.
    await farm.waitForWorkers(WORKERS.length, 30_000);
    const log = records(farm.coordinatorLog());
    const lost = log.filter((r) => r.msg === "worker lost; its builds were requeued");
    expect(lost.map((r) => r.worker)).toContain(chaos.frozenWorker);
    // A NATS stall or a coordinator restart must not make live workers look dead: only the frozen one
    // is declared lost while it runs. A killed one may be, if its replacement took longer than the
    // heartbeat timeout to join (a loaded machine): it really was gone then.
    const wasDown = (worker: string, atMs: number) => {
      const killedAt = Math.max(0, ...chaos.workerKillTimes.filter((k) => k.worker === worker && k.atMs <= atMs).map((k) => k.atMs));
      return killedAt > 0 && !log.some((r) => r.msg === "worker joined" && r.worker === worker && r.time > killedAt && r.time < atMs);
    };
    expect(lost.filter((r) => r.worker !== chaos.frozenWorker && !wasDown(String(r.worker), Number(r.time))).map((r) => `${r.worker} at ${r.time}`)).toEqual([]);
    expect(log.some((r) => r.msg === "worker joined" && r.worker === chaos.frozenWorker && r.time > chaos.thawedAtMs!)).toBe(true);

    expect(state.drvs.filter((d) => d.state !== "done").map((d) => `${d.drvPath} ${d.state}`)).toEqual([]);
    expect(derivations).toBe(FULL ? 123 : 39);
    // The snoop ran as a build user and found no token anywhere it could read.
    const snoop = state.nodes.find((n) => n.name.endsWith("-snoop"))!;
    const client = new CacheClient({ baseUrl: farm.cacheUrl, trustedPublicKeys: [farm.publicKey()], storeDir: "/tmp/nix/store" });
    expect((await narFile(client, snoop.outputs.out)).split("\n")[0]).toMatch(/^id chaos-(small|full)-snoop uid=301[0-3][12] readable=\d+ tokens=0$/);
    expect(cache.bad).toEqual([]);
    expect(cache.total).toBeGreaterThanOrEqual(derivations);
    expect(done.problems).toEqual([]);
    expect(done.done).toBe(derivations);
    expect(audit.violations).toEqual([]);
    // One accepted success per derivation; a coordinator killed between persisting and logging may have taken it silently.
    const unanswered = new Set(audit.reports.filter((r) => r.accepted === null && r.outcome === "succeeded").map((r) => r.drv));
    for (const d of state.drvs) {
      const n = audit.acceptedSuccesses.get(d.drvPath) ?? 0;
      expect(n === 1 || (n === 0 && unanswered.has(d.drvPath)), `${d.drvPath}: ${n} accepted successes`).toBe(true);
    }
    expect(audit.assignments - derivations).toBeLessThanOrEqual(kills);
  }, FULL ? 600_000 : 240_000);
});
