// One run of `npm run bench:live`: its own nats-server, a real coordinator
// process (`farm coordinator`), N live workers in child processes, one
// submitted graph; measured from outside the coordinator (its /metrics, its
// log, /proc/PID) so the figures cost it nothing it would not do anyway.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, openSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Metadata, type ServiceError } from "@grpc/grpc-js";
import { nodeToWire } from "../../proto/convert/mod.js";
import { FarmServiceClient, type JobStatus } from "../../proto/gen/farm.js";
import { submitInPieces } from "../../coordinator/cli/rpc.js";
import type { DrvNode } from "../../coordinator/core/types.js";
import { freePort, waitFor, waitForPort } from "../harness/ports.js";
import { bucketCounts, bucketIncrease, countAbove, quantile } from "./prom-histogram.js";

const LOOP_DELAY = "tmpnix_event_loop_delay_seconds";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FARM_CLI = path.resolve(HERE, "../../coordinator/cli/main.js");
const WORKER_HOST = path.join(HERE, "live-workers.js");
/** Worker sessions per child process. */
const SESSIONS_PER_PROCESS = 50;
/**
 * BENCH_STEPS=1 runs the coordinator at log level debug, where it logs each output staged and published: the
 * lines a result's steps are read from. Off by default: at info, as deployed, it logs three lines a derivation,
 * not five, and those two lines cost it CPU.
 */
export const STEPS_LOGGED = process.env.BENCH_STEPS === "1";

/** What one run is asked to do. */
export interface RunSpec {
  label: string;
  workers: number;
  nodes: DrvNode[];
  roots: string[];
  /** Extra coordinator env (e.g. the baseline's upload-path switch). */
  coordinatorEnv: Record<string, string>;
  /** Extra env of the worker processes (e.g. BENCH_FAKE_UPLOAD=1: outputs uploaded, not sent inline). */
  workerEnv?: Record<string, string>;
  dir: string;
  buildMs: number;
  timeoutMs: number;
  /** Stop once the submit is accepted and the loop is sampled this long (the 100k-submit probe); 0 = run to completion. */
  stopAfterSubmitMs?: number;
}

/** The figures of one run. */
export interface RunResult {
  label: string;
  workers: number;
  state: string;
  derivations: number;
  wallS: number;
  submitS: number;
  ackP50Ms: number;
  ackP99Ms: number;
  /** Where a result's time went, step by step (means). */
  steps: ResultSteps;
  /** Event-loop delay over the whole run (from the submit to the end), from the coordinator's histogram. */
  loopP50Ms: number;
  loopP99Ms: number;
  /** Ticks of the 10 ms loop timer that ran over 50 ms late. */
  loopOver50Ms: number;
  /** The longest pause (the coordinator's longest-in-the-last-minute gauge, highest seen during the run). */
  loopMaxMs: number;
  /** Pauses over 200 ms in the windows that cover the submit call. */
  submitPausesOver200Ms: number;
  /** Longest pause in the minute up to the end of the submit call. */
  submitPauseMs: number;
  slowestScrapeMs: number;
  failedScrapes: number;
  cpuS: number;
  /** Of cpuS, the part spent in the kernel. */
  cpuSysS: number;
  /** CPU seconds of the nats-server and of all worker processes together, over the same span. */
  natsCpuS: number;
  workersCpuS: number;
  peakRssMb: number;
  /** Heap growth from just before the submit to just after it was accepted (before any GC: includes garbage). */
  heapAfterSubmitMb: number;
  workersLost: number;
  /** Mean derivations building and ready over the run's one-second samples: slots busy, and work waiting for one. */
  meanBuilding: number;
  meanReady: number;
}

const TOKEN = `bench-${process.pid}-${Date.now()}`;

function rpc<Res>(client: FarmServiceClient, method: string, req: unknown): Promise<Res> {
  const md = new Metadata();
  md.set("authorization", `Bearer ${TOKEN}`);
  return new Promise((resolve, reject) => {
    (client as unknown as Record<string, (r: unknown, m: Metadata, o: object, cb: (e: ServiceError | null, r: Res) => void) => void>)[method](
      req,
      md,
      { deadline: new Date(Date.now() + 600_000) },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
  });
}

/** utime + stime of a process, in seconds (clock ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const { user, system } = cpuSplit(pid);
  return user + system;
}

/** CPU seconds of a process in user space and in the kernel (its file writes and fsyncs show up there). */
function cpuSplit(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 };
}

/** Peak resident set (VmHWM) of a process, in MB. */
function peakRssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** The value of a metric line `name{labels} value` (first match), or undefined. */
function metric(text: string, name: string, labels = ""): number | undefined {
  const re = new RegExp(`^${name}${labels ? `\\{${labels.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\}` : ""} (\\S+)$`, "m");
  const m = re.exec(text);
  return m ? Number(m[1]) : undefined;
}

function mean(xs: number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function stopChild(c: ChildProcess | undefined, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (!c || c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once("exit", r));
  c.kill(signal);
  const timer = setTimeout(() => c.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

/** Mean ms of each step of a result, assignment to acknowledgement, over the leases whose every step is logged. */
export interface ResultSteps {
  /** Assigned to its outputs staged: the worker, gRPC and the upload (or the staging of inline outputs). */
  toStaged: number;
  /** Staged to reported: waiting in the effect runner's queue for the result's turn. */
  queued: number;
  /** Reported to published: the files that publish its outputs (the last output's). */
  writes: number;
  /** Published to acknowledged: the persist, after the batches before it. */
  persist: number;
  leases: number;
}

/** One lease's times from the coordinator's log. */
interface LeaseTimes {
  assigned?: number;
  staged?: number;
  reported?: number;
  published?: number;
  accepted?: number;
}

/**
 * Assignment (coordinator decided) to acceptance (result verified, persisted) per lease, and the mean of each
 * step between (from the coordinator's log lines: assigned, staged output, build reported, published accepted
 * output, result accepted), and the workers lost.
 */
function resultTimes(log: string): { latencies: number[]; steps: ResultSteps; lost: number } {
  const leases = new Map<string, LeaseTimes>();
  const latencies: number[] = [];
  let lost = 0;
  for (const line of log.split("\n")) {
    if (!line.startsWith("{")) continue;
    if (line.includes("worker lost")) lost++;
    if (!/"msg":"(assigned|staged output|build reported|published accepted output|result accepted)"/.test(line)) continue;
    const o = JSON.parse(line) as { msg: string; time: number; drv: string; epoch: number };
    const key = `${o.drv} ${o.epoch}`;
    let t = leases.get(key);
    if (t === undefined) leases.set(key, (t = {}));
    if (o.msg === "assigned") t.assigned = o.time;
    else if (o.msg === "staged output") t.staged ??= o.time;
    else if (o.msg === "build reported") t.reported = o.time;
    else if (o.msg === "published accepted output") t.published = Math.max(t.published ?? 0, o.time);
    else {
      t.accepted = o.time;
      if (t.assigned !== undefined) latencies.push(o.time - t.assigned);
    }
  }
  const sums = { toStaged: 0, queued: 0, writes: 0, persist: 0, leases: 0 };
  for (const t of leases.values()) {
    if (t.assigned === undefined || t.staged === undefined || t.reported === undefined || t.published === undefined || t.accepted === undefined) continue;
    sums.toStaged += t.staged - t.assigned;
    sums.queued += t.reported - t.staged;
    sums.writes += t.published - t.reported;
    sums.persist += t.accepted - t.published;
    sums.leases++;
  }
  const n = Math.max(1, sums.leases);
  const steps = { toStaged: sums.toStaged / n, queued: sums.queued / n, writes: sums.writes / n, persist: sums.persist / n, leases: sums.leases };
  return { latencies: latencies.sort((a, b) => a - b), steps, lost };
}

/** Runs one farm to the end of its job (or to `stopAfterSubmitMs` after the submit). */
export async function runLive(spec: RunSpec): Promise<RunResult> {
  if (!existsSync(FARM_CLI)) throw new Error(`${FARM_CLI} is missing: run \`npm run build\` first`);
  mkdirSync(spec.dir, { recursive: true });
  const [natsPort, grpcPort, cachePort, metricsPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const children: ChildProcess[] = [];
  const nats = spawn("nats-server", ["-js", "-a", "127.0.0.1", "-p", String(natsPort), "-sd", path.join(spec.dir, "nats")], { stdio: ["ignore", openSync(path.join(spec.dir, "nats.log"), "a"), openSync(path.join(spec.dir, "nats.log"), "a")] });
  let coordinator: ChildProcess | undefined;
  const client = new FarmServiceClient(`127.0.0.1:${grpcPort}`, (await import("@grpc/grpc-js")).credentials.createInsecure(), {
    "grpc.max_send_message_length": 512 * 1024 ** 2,
    "grpc.max_receive_message_length": 512 * 1024 ** 2,
  });
  const logFile = path.join(spec.dir, "coordinator.log");
  let sampling = true;
  try {
    await waitForPort(natsPort);
    coordinator = spawn(
      process.execPath,
      [...coordinatorNodeArgs(), FARM_CLI, "coordinator", `--listen=127.0.0.1:${grpcPort}`, `--cache-listen=127.0.0.1:${cachePort}`, `--metrics-listen=127.0.0.1:${metricsPort}`, `--data-dir=${path.join(spec.dir, "coordinator")}`, `--nats-url=nats://127.0.0.1:${natsPort}`, "--nats-prefix=bench-"],
      {
        env: { ...process.env, FARM_TOKEN: TOKEN, FARM_LOG_LEVEL: STEPS_LOGGED ? "debug" : "info", NIX_STORE_DIR: "/nix/store", FARM_TRUST_SUBMITTED_NODES: "1", ...spec.coordinatorEnv },
        stdio: ["ignore", openSync(logFile, "a"), openSync(logFile, "a")],
      },
    );
    await waitForPort(grpcPort, 60_000);
    await waitForPort(metricsPort, 60_000);
    const pid = coordinator.pid!;
    const scrape = async () => {
      const t = performance.now();
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return { text, ms: performance.now() - t };
    };
    for (let i = 0, left = spec.workers; left > 0; i++, left -= SESSIONS_PER_PROCESS) {
      const env = { ...process.env, BENCH_COORDINATOR: `127.0.0.1:${grpcPort}`, BENCH_TOKEN: TOKEN, BENCH_SESSIONS: String(Math.min(left, SESSIONS_PER_PROCESS)), BENCH_ID_PREFIX: `p${i}`, BENCH_BUILD_MS: String(spec.buildMs), ...spec.workerEnv };
      children.push(spawn(process.execPath, [WORKER_HOST], { env, stdio: ["ignore", "ignore", openSync(path.join(spec.dir, `workers-${i}.log`), "a")] }));
    }
    await waitFor(`${spec.workers} active workers`, async () => (metric((await scrape()).text, "tmpnix_workers", 'state="active"') ?? 0) >= spec.workers, 120_000, 500);

    // Scrape once a second: the loop-delay histogram's buckets give the run's delay, and the submit's seconds'.
    const windows: { atMs: number; delay: [number, number][]; longestMs: number; building: number; ready: number }[] = [];
    let slowestScrapeMs = 0;
    const sample = async () => {
      const { text, ms } = await scrape();
      slowestScrapeMs = Math.max(slowestScrapeMs, ms);
      windows.push({
        atMs: Date.now(),
        delay: bucketCounts(text, LOOP_DELAY),
        longestMs: (metric(text, "tmpnix_event_loop_longest_pause_seconds") ?? 0) * 1000,
        building: metric(text, "tmpnix_derivations", 'state="building"') ?? 0,
        ready: metric(text, "tmpnix_derivations", 'state="ready"') ?? 0,
      });
      return text;
    };
    await sample(); // where the run's counts start
    let failedScrapes = 0;
    const sampler = (async () => {
      while (sampling) {
        await new Promise((r) => setTimeout(r, 1000));
        // A scrape can fail (a keep-alive socket closed while the loop was held up): count it, go on.
        if (sampling) await sample().catch(() => failedScrapes++);
      }
    })();

    const heapOf = (text: string) => (metric(text, "tmpnix_coordinator_nodejs_heap_size_used_bytes") ?? NaN) / 1024 ** 2;
    const heapBeforeMb = heapOf((await scrape()).text);
    const cpu0 = cpuSplit(pid);
    const othersCpu = () => ({ nats: cpuSeconds(nats.pid!), workers: children.reduce((sum, c) => sum + cpuSeconds(c.pid!), 0) });
    const others0 = othersCpu();
    const started = Date.now();
    const nodes = spec.nodes.map(nodeToWire);
    // As `farm submit` sends it: in pieces (SubmitStream).
    const res = await submitInPieces(client, { coordinator: `127.0.0.1:${grpcPort}`, token: TOKEN, timeout: 3600_000 }, { nodes, roots: spec.roots, description: `bench ${spec.label}`, idempotencyKey: `bench-${started}`, noPublish: true, source: "" });
    const submitS = (Date.now() - started) / 1000;
    const afterSubmit = await sample().catch(() => "");
    const heapAfterSubmitMb = heapOf(afterSubmit) - heapBeforeMb;
    let status: JobStatus | undefined;
    if (spec.stopAfterSubmitMs) {
      await new Promise((r) => setTimeout(r, spec.stopAfterSubmitMs));
      status = await rpc<JobStatus>(client, "getJob", { jobId: res.jobId, derivations: false });
    } else {
      const until = started + spec.timeoutMs;
      do {
        await new Promise((r) => setTimeout(r, 1000));
        status = await rpc<JobStatus>(client, "getJob", { jobId: res.jobId, derivations: false });
      } while (status.state === "running" && Date.now() < until);
    }
    const wallS = (Date.now() - started) / 1000;
    const cpu1 = cpuSplit(pid);
    const cpuSysS = cpu1.system - cpu0.system;
    const cpuS = cpu1.user - cpu0.user + cpuSysS;
    const others = othersCpu();
    const rss = peakRssMb(pid);
    sampling = false;
    await sampler;
    await sample().catch(() => failedScrapes++); // the run's counts end here
    const { latencies, steps, lost } = resultTimes(readFileSync(logFile, "utf8"));
    const during = windows.filter((w) => w.atMs >= started);
    const before = windows.filter((w) => w.atMs < started).at(-1);
    const run = bucketIncrease(before?.delay, windows.at(-1)!.delay);
    // The windows that end from the submit's start to just after it returned cover it.
    const submitWindows = during.filter((w) => w.atMs <= started + submitS * 1000 + 1500);
    const submit = bucketIncrease(before?.delay, (submitWindows.at(-1) ?? before ?? windows[0]).delay);
    return {
      label: spec.label,
      workers: spec.workers,
      state: status.state,
      derivations: status.counts?.total ?? 0,
      wallS,
      submitS,
      ackP50Ms: percentile(latencies, 50),
      ackP99Ms: percentile(latencies, 99),
      steps,
      loopP50Ms: quantile(run, 0.5) * 1000,
      loopP99Ms: quantile(run, 0.99) * 1000,
      loopOver50Ms: countAbove(run, 0.05),
      loopMaxMs: Math.max(0, ...during.map((w) => w.longestMs)),
      submitPausesOver200Ms: countAbove(submit, 0.2),
      submitPauseMs: Math.max(0, ...submitWindows.map((w) => w.longestMs)),
      slowestScrapeMs,
      failedScrapes,
      cpuS,
      cpuSysS,
      natsCpuS: others.nats - others0.nats,
      workersCpuS: others.workers - others0.workers,
      peakRssMb: rss,
      heapAfterSubmitMb,
      workersLost: lost,
      meanBuilding: mean(windows.filter((w) => w.atMs >= started).map((w) => w.building)),
      meanReady: mean(windows.filter((w) => w.atMs >= started).map((w) => w.ready)),
    };
  } finally {
    sampling = false;
    client.close();
    for (const c of children) await stopChild(c);
    await stopChild(coordinator);
    await stopChild(nats);
  }
}

/** BENCH_COORDINATOR_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") go to the coordinator's node alone, not the workers'. */
function coordinatorNodeArgs(): string[] {
  return (process.env.BENCH_COORDINATOR_NODE_ARGS ?? "").split(/\s+/).filter((a) => a !== "");
}
