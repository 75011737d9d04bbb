// A whole farm on one machine for integration tests: a coordinator (with its
// cache) as a plain process, and workers that each look like a separate
// container (own mount namespace, own /tmp/nix, own memory cgroup). The CLI
// runs in a "submitter" namespace with its own /tmp/nix too, so every input a
// worker needs really travels through the cache.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, mkdtempSync, mkdirSync, openSync, readFileSync, rmSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { repoRoot, spawnIsolated, runIsolated, type IsolatedProcess } from "./isolated.js";
import { BARE_UID, bareEnv, hostNixPaths } from "./bare-container.js";
import { freePort, waitFor } from "./ports.js";

/** Root of the repository (holds dist/ after `npm run build`). */
export const REPO = repoRoot();
export const FARM_CLI = path.join(REPO, "dist/coordinator/cli/main.js");
export const WORKER_MAIN = path.join(REPO, "dist/worker/main.js");
export const NATS_URL = process.env.NATS_URL ?? "nats://127.0.0.1:4222";

/** One worker's shape. */
export interface WorkerSpec {
  name: string;
  memoryLimitBytes?: number;
  cores?: number;
  maxBuilds?: number;
  /** Mount an empty tmpfs over /nix in the worker's namespace. */
  hideNix?: boolean;
  /** Give the worker a tmpfs of this many bytes as /tmp/nix (a small disk) instead of a host dir. */
  nixTmpfsBytes?: number;
  /** Run the worker (and so its builds) as this unprivileged uid, with the checkout exposed to it. */
  uid?: number;
  /** Files bound over host files in its namespace only (e.g. an /etc/group with build users). */
  overlay?: { source: string; at: string }[];
  env?: Record<string, string>;
  /**
   * A bare container (test/harness/bare-container.ts): the host's Nix hidden, uid
   * 65534 unless `uid` says otherwise, and `env -i` plus only what a kit's .env
   * sets (coordinator, token, cache URL and key, worker id, log level, and `env`).
   */
  bare?: boolean;
  /** Programs the worker's node runs under (each execs the rest), e.g. a seccomp filter. */
  launcher?: string[];
}

/** Options of a test farm. */
export interface ClusterOptions {
  workers: WorkerSpec[];
  heartbeatInterval?: string;
  heartbeatTimeout?: string;
  coordinatorEnv?: Record<string, string>;
  /** NATS server of this farm (default NATS_URL, the machine's). */
  natsUrl?: string;
}

/** A running test farm. */
export class FarmCluster {
  readonly token = `test-token-${Math.random().toString(36).slice(2)}${Date.now()}`;
  readonly prefix = `t${process.pid}x${Math.random().toString(36).slice(2, 8)}-`;
  coordinator?: ChildProcess;
  readonly workers = new Map<string, IsolatedProcess>();
  grpcPort = 0;
  cachePort = 0;
  metricsPort = 0;
  private coordinatorStarts = 0;

  private constructor(readonly root: string, readonly opts: ClusterOptions) {}

  /** Starts NATS-backed coordinator + cache and the workers, and waits until every worker joined. */
  static async start(opts: ClusterOptions): Promise<FarmCluster> {
    const root = mkdtempSync(path.join(os.tmpdir(), "tmpnix-farm-test-"));
    chmodSync(root, 0o755); // unprivileged install tests reach their HOME below it
    const c = new FarmCluster(root, opts);
    try {
      [c.grpcPort, c.cachePort, c.metricsPort] = [await freePort(), await freePort(), await freePort()];
      await c.startCoordinator();
      for (const w of opts.workers) c.startWorker(w);
      await c.waitForWorkers(opts.workers.length);
      return c;
    } catch (err) {
      // The caller gets no cluster to stop: its workers, cgroups, NATS streams and files go now.
      await c.stop(Boolean(process.env.KEEP_TEST_FILES)).catch(() => undefined);
      throw err;
    }
  }

  get natsUrl(): string {
    return this.opts.natsUrl ?? NATS_URL;
  }

  get dataDir(): string {
    return path.join(this.root, "coordinator");
  }
  get cacheUrl(): string {
    return `http://127.0.0.1:${this.cachePort}`;
  }
  get coordinatorAddress(): string {
    return `127.0.0.1:${this.grpcPort}`;
  }

  /** The cache's public key (name:base64). */
  publicKey(): string {
    return readFileSync(path.join(this.dataDir, "signing-key.pub"), "utf8").trim();
  }

  /** Starts (or restarts) the coordinator and waits for its ports. */
  async startCoordinator(): Promise<void> {
    mkdirSync(this.dataDir, { recursive: true });
    const logFile = path.join(this.root, `coordinator-${++this.coordinatorStarts}.log`);
    const log = openSync(logFile, "a");
    this.coordinator = spawn(
      process.execPath,
      [
        FARM_CLI,
        "coordinator",
        `--listen=127.0.0.1:${this.grpcPort}`,
        `--cache-listen=127.0.0.1:${this.cachePort}`,
        `--metrics-listen=127.0.0.1:${this.metricsPort}`,
        `--data-dir=${this.dataDir}`,
        `--nats-url=${this.natsUrl}`,
        `--nats-prefix=${this.prefix}`,
        `--heartbeat-interval=${this.opts.heartbeatInterval ?? "1s"}`,
        `--heartbeat-timeout=${this.opts.heartbeatTimeout ?? "10s"}`,
      ],
      { env: { ...process.env, FARM_TOKEN: this.token, FARM_LOG_LEVEL: "debug", ...this.opts.coordinatorEnv }, stdio: ["ignore", log, log] },
    );
    // Its own line (logged once every port is bound), not an open port: a port found free may be taken by
    // another process before the coordinator binds it, and then the port answers while this coordinator has exited.
    const coordinator = this.coordinator;
    await waitFor("the coordinator's ready line", () => {
      if (coordinator.exitCode !== null) throw new Error(`the coordinator exited (${coordinator.exitCode}) before it was ready: ${readFileSync(logFile, "utf8").slice(-2000)}`);
      return readFileSync(logFile, "utf8").includes('"msg":"coordinator ready"');
    });
  }

  /** SIGKILLs the coordinator. */
  async killCoordinator(): Promise<void> {
    const c = this.coordinator;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.on("exit", r));
    c.kill("SIGKILL");
    await exited;
  }

  /** Starts a worker in its own namespace; `fresh` gives it an empty /tmp/nix. */
  startWorker(spec: WorkerSpec, fresh = false): IsolatedProcess {
    const dir = path.join(this.root, "workers", spec.name);
    if (fresh) rmSync(dir, { recursive: true, force: true });
    mkdirSync(path.join(dir, "nix"), { recursive: true });
    let main = WORKER_MAIN;
    let expose: { source: string; at: string }[] = [...(spec.overlay ?? [])];
    if (spec.bare) spec = { ...spec, uid: spec.uid ?? BARE_UID };
    if (spec.uid !== undefined) {
      // The checkout may sit below a dir the uid can't enter: it sees it at a dir of its own.
      const repo = path.join(dir, "repo");
      mkdirSync(repo, { recursive: true });
      for (const d of [this.root, path.join(this.root, "workers"), dir]) chmodSync(d, 0o755);
      chownSync(path.join(dir, "nix"), spec.uid, spec.uid);
      expose.push({ source: REPO, at: repo });
      main = path.join(repo, path.relative(REPO, WORKER_MAIN));
    }
    const [cmd, ...args] = [...(spec.launcher ?? []), process.execPath, main];
    const p = spawnIsolated(`worker-${spec.name}`, cmd, args, {
      nixDir: path.join(dir, "nix"),
      uid: spec.uid,
      // A uid of its own may not reach the test's cwd (CI's clone sits below a 0700 dir), and Nix aborts there.
      cwd: spec.uid === undefined ? undefined : dir,
      expose,
      memoryLimitBytes: spec.memoryLimitBytes,
      hideNix: spec.hideNix || spec.bare,
      hide: spec.bare ? hostNixPaths() : undefined,
      nixTmpfsBytes: spec.nixTmpfsBytes,
      logFile: path.join(dir, "worker.log"),
      env: spec.bare
        ? bareEnv({ COORDINATOR_URL: this.coordinatorAddress, FARM_TOKEN: this.token, FARM_WORKER_ID: spec.name, FARM_CACHE_URL: this.cacheUrl, FARM_CACHE_PUBLIC_KEY: this.publicKey(), FARM_LOG_LEVEL: "debug", ...spec.env })
        : {
            ...process.env,
            COORDINATOR_URL: this.coordinatorAddress,
            FARM_TOKEN: this.token,
            FARM_WORKER_ID: spec.name,
            FARM_CORES: String(spec.cores ?? 2),
            FARM_MAX_BUILDS: String(spec.maxBuilds ?? 1),
            FARM_LOG_LEVEL: "debug",
            ...spec.env,
          },
    });
    this.workers.set(spec.name, p);
    return p;
  }

  /** The worker's log so far. */
  workerLog(name: string): string {
    return this.workers.get(name)?.log() ?? "";
  }

  /** Kills a worker's whole container (every process in its cgroup). */
  async killWorker(name: string): Promise<void> {
    const p = this.workers.get(name);
    if (!p) return;
    await p.dispose();
    this.workers.delete(name);
  }

  /** Runs `farm ARGS` in the submitter's namespace (its own /tmp/nix). */
  async cli(args: string[], opts: { env?: Record<string, string>; nixDir?: string; uid?: number; hideNix?: boolean; timeoutMs?: number } = {}) {
    const nixDir = opts.nixDir ?? path.join(this.root, "submitter", "nix");
    return runIsolated("cli", process.execPath, [FARM_CLI, ...args], {
      nixDir,
      uid: opts.uid,
      hideNix: opts.hideNix,
      timeoutMs: opts.timeoutMs,
      env: { ...process.env, FARM_COORDINATOR: this.coordinatorAddress, FARM_TOKEN: this.token, FARM_LOG_LEVEL: "warn", ...opts.env },
    });
  }

  /** Waits until `farm workers` lists n active workers. */
  async waitForWorkers(n: number, timeoutMs = 60_000): Promise<void> {
    await waitFor(`${n} active workers`, async () => {
      for (const w of this.workers.values()) w.assertIsolated();
      const r = await this.cli(["workers", "--json"]);
      if (r.code !== 0) return false;
      const active = (JSON.parse(r.stdout) as { state: string }[]).filter((w) => w.state === "active");
      return active.length >= n;
    }, timeoutMs, 500);
  }

  /** Coordinator log of every start so far. */
  coordinatorLog(): string {
    let out = "";
    for (let i = 1; i <= this.coordinatorStarts; i++) {
      const f = path.join(this.root, `coordinator-${i}.log`);
      if (existsSync(f)) out += readFileSync(f, "utf8");
    }
    return out;
  }

  /** Stops everything and removes the farm's NATS state and files. */
  async stop(keepFiles = false): Promise<void> {
    for (const name of [...this.workers.keys()]) await this.killWorker(name);
    await this.killCoordinator();
    await deleteNatsPrefix(this.prefix, this.natsUrl);
    if (!keepFiles) rmSync(this.root, { recursive: true, force: true });
  }
}

/** Deletes every KV bucket and stream whose name starts with the prefix. */
export async function deleteNatsPrefix(prefix: string, natsUrl = NATS_URL): Promise<void> {
  const nc = await connect({ servers: natsUrl });
  try {
    const jsm = await jetstreamManager(nc);
    for await (const s of jsm.streams.list()) {
      const name = s.config.name;
      if (name.startsWith(`KV_${prefix}`) || name.startsWith(prefix) || name.startsWith(prefix.toUpperCase())) await jsm.streams.delete(name);
    }
  } finally {
    await nc.close();
  }
}
