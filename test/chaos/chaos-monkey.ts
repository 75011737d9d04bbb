// The disruptions of a chaos run, against a live FarmCluster: workers SIGKILLed
// (whole cgroup) and replaced by fresh ones, the coordinator SIGKILLed and
// restarted, the machine's NATS restarted, and one worker cut off (every pid of
// its cgroup SIGSTOPped) for longer than the heartbeat timeout, then resumed.
import type { FarmCluster, WorkerSpec } from "../harness/cluster.js";
import type { PrivateNats } from "./nats-server.js";

/** When and how hard to hit the farm (ms after the job was accepted). */
export interface ChaosPlan {
  workerKillEveryMs: number;
  /** A killed worker's replacement starts this much later. */
  workerRestartAfterMs: number;
  coordinatorKillsAtMs: number[];
  coordinatorDownMs: number;
  natsRestartAtMs: number;
  natsDownMs: number;
  freezeAtMs: number;
  freezeForMs: number;
}

/** What actually happened, in order. */
export interface ChaosRecord {
  workerKills: number;
  coordinatorKills: number;
  natsRestarts: number;
  freezes: number;
  /** Which coordinator runs (1-based, as in coordinator-N.log) were SIGKILLed. */
  killedRuns: number[];
  frozenWorker?: string;
  /** When the frozen worker was resumed (unix ms). */
  thawedAtMs?: number;
  /** Each SIGKILL of a worker, with when (unix ms). */
  workerKillTimes: { worker: string; atMs: number }[];
  timeline: string[];
}

/** xorshift32: a repeatable stream of numbers in [0, 1) from a seed. */
export function seededRandom(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `plan` against `farm` until `finished()` says the job is over; resolves with the record. */
export async function unleash(farm: FarmCluster, workers: WorkerSpec[], plan: ChaosPlan, opts: { seed: number; nats: PrivateNats; finished: () => boolean }): Promise<ChaosRecord> {
  const random = seededRandom(opts.seed);
  const t0 = Date.now();
  const rec: ChaosRecord = { workerKills: 0, coordinatorKills: 0, natsRestarts: 0, freezes: 0, killedRuns: [], workerKillTimes: [], timeline: [] };
  const note = (what: string) => rec.timeline.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${what}`);
  const busy = new Set<string>(); // workers being killed, restarted or frozen
  let coordinatorRuns = 1;
  const at = async (ms: number) => {
    while (Date.now() - t0 < ms && !opts.finished()) await sleep(Math.min(200, ms - (Date.now() - t0)));
    return !opts.finished();
  };

  const killWorkers = async () => {
    for (let n = 1; await at(n * plan.workerKillEveryMs); n++) {
      const candidates = workers.filter((w) => !busy.has(w.name));
      if (candidates.length === 0) continue;
      const spec = candidates[Math.floor(random() * candidates.length)];
      busy.add(spec.name);
      await farm.killWorker(spec.name);
      rec.workerKills++;
      rec.workerKillTimes.push({ worker: spec.name, atMs: Date.now() });
      note(`kill -9 worker ${spec.name}`);
      await sleep(plan.workerRestartAfterMs);
      farm.startWorker(spec, true);
      note(`worker ${spec.name} started fresh`);
      busy.delete(spec.name);
    }
  };

  const killCoordinator = async () => {
    for (const ms of plan.coordinatorKillsAtMs) {
      if (!(await at(ms))) return;
      await farm.killCoordinator();
      rec.coordinatorKills++;
      rec.killedRuns.push(coordinatorRuns);
      note(`kill -9 coordinator (run ${coordinatorRuns})`);
      await sleep(plan.coordinatorDownMs);
      await farm.startCoordinator();
      coordinatorRuns++;
      note(`coordinator run ${coordinatorRuns} listening`);
    }
  };

  const restartNats = async () => {
    if (!(await at(plan.natsRestartAtMs))) return;
    note("SIGTERM nats-server");
    const r = await opts.nats.restart(plan.natsDownMs);
    rec.natsRestarts++;
    note(`nats-server back (pid ${r.oldPid} -> ${r.newPid}, JetStream down ${(r.downForMs / 1000).toFixed(1)}s)`);
  };

  // Freezing a worker the coordinator doesn't know (still starting, or reconnecting) would prove nothing.
  const activeWorkers = async (): Promise<string[]> => {
    const r = await farm.cli(["workers", "--json"]).catch(() => null);
    if (!r || r.code !== 0) return [];
    return (JSON.parse(r.stdout) as { workerId: string; state: string }[]).filter((w) => w.state === "active").map((w) => w.workerId);
  };
  const freezeOne = async () => {
    if (!(await at(plan.freezeAtMs))) return;
    let spec: WorkerSpec | undefined;
    while (!spec && !opts.finished()) {
      const active = await activeWorkers();
      spec = workers.find((w) => !busy.has(w.name) && farm.workers.has(w.name) && active.includes(w.name));
      if (!spec) await sleep(200);
    }
    if (!spec) return;
    busy.add(spec.name);
    const p = farm.workers.get(spec.name)!;
    p.freeze(true);
    rec.freezes++;
    rec.frozenWorker = spec.name;
    note(`SIGSTOP every pid of worker ${spec.name}`);
    try {
      await sleep(plan.freezeForMs);
    } finally {
      p.freeze(false);
      rec.thawedAtMs = Date.now();
      note(`SIGCONT worker ${spec.name}`);
      // It stays out of the kill rotation: it has to come back, report late and be rejected.
    }
  };

  await Promise.all([killWorkers(), killCoordinator(), restartNats(), freezeOne()]);
  return rec;
}
