// The worker process: wires config, logger, metrics, executor, build runner and
// the reconnecting gRPC session together. Nothing else lives here.
import { readFileSync } from "node:fs";
import { credentials } from "@grpc/grpc-js";
import pino, { type Logger } from "pino";
import { CacheClient } from "../proto/nix/mod.js";
import { WorkerServiceClient } from "../proto/gen/farm.js";
import { BuildRunner } from "./build-runner.js";
import type { CacheApi, CacheFactory } from "./cache-api.js";
import { ConfigError, ensureUserEnv, loadWorkerConfig, resolveWorkerConfig, type WorkerConfig } from "./config.js";
import type { Executor } from "./executor.js";
import { FakeExecutor, loadFakeModel } from "./fake-executor.js";
import { freeDiskBytes, freeMemoryBytes, machineUptimeSeconds } from "./host-probe.js";
import { WorkerMetrics } from "./metrics.js";
import { NixEnv } from "./nix-env.js";
import { NixUnavailableError, provideNix, type NixChoice, type NixInUse } from "./nix-bootstrap.js";
import { NixExecutor } from "./nix-executor.js";
import { DrainControl } from "./drain-control.js";
import { connectLoop } from "./reconnect.js";
import { runOnce } from "./session.js";
import { trustCaForCache } from "../proto/tls.js";
import { scrubOwnSecrets } from "./scrub-own-secrets.js";

const SOFTWARE_VERSION = readVersion();

/**
 * The token now lives in `config` only: builds (which may run as our uid) can't
 * read it from this process's /proc environ or cmdline, and Nix never gets it.
 */
function hideTokenFromBuilds(token: string, logger: pino.Logger): void {
  try {
    scrubOwnSecrets(["FARM_TOKEN"], token);
  } catch (err) {
    logger.warn({ err: (err as Error).message }, "could not overwrite the token in /proc/self; builds of this uid may read it there");
  }
  delete process.env.FARM_TOKEN;
}

async function main(): Promise<number> {
  let config: WorkerConfig;
  try {
    const loaded = loadWorkerConfig(process.argv.slice(2), process.env);
    if ("help" in loaded) {
      process.stdout.write(`${loaded.help}\n`);
      return 0;
    }
    ensureUserEnv();
    config = resolveWorkerConfig(loaded.config);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`tmpnix-farm-worker: ${err.message}\n`);
    return 2;
  }
  const logger = pino({ level: config.logLevel, base: { worker: config.workerId } }, pino.destination(2));
  hideTokenFromBuilds(config.token, logger);
  if (config.tlsCa) {
    // The cache client and Nix's substituter must trust the farm's CA as the gRPC channel does.
    // Nix 2.8 has no ssl-cert-file option; it reads NIX_SSL_CERT_FILE (NixEnv passes our env on).
    trustCaForCache(config.tlsCa);
    process.env.NIX_SSL_CERT_FILE = config.tlsCa;
  }
  const metrics = new WorkerMetrics({ defaultMetrics: true });
  if (config.metricsPort > 0) {
    const { port } = await metrics.serve(config.metricsPort);
    logger.info({ port }, `serving metrics on :${port}/metrics`);
  }
  let nix: NixInUse | undefined;
  if (config.executor === "nix") {
    try {
      nix = await provideNix({ choice: config.nix as NixChoice, storeDir: config.storeDir, stateDir: config.stateDir, logDir: config.logDir, cacheUrl: config.cacheUrl, cachePublicKey: config.cachePublicKey, pathEnv: process.env.PATH ?? "", logger });
    } catch (err) {
      if (!(err instanceof NixUnavailableError)) throw err;
      logger.fatal(err.message);
      return 2;
    }
    // Every nix-store the worker runs (NixEnv passes PATH on) is this one.
    if (nix.binDir) process.env.PATH = `${nix.binDir}:${process.env.PATH ?? "/usr/bin:/bin"}`;
    logger.info({ nixVersion: nix.version, nixSource: nix.source }, `building with Nix ${nix.version} (${nix.source})`);
  }
  const executor = makeExecutor(config, logger, metrics);
  const runner = new BuildRunner(executor, config.maxBuilds, logger, (r) => metrics.recordBuild(r), config.uploadBesideFromBytes);
  const client = new WorkerServiceClient(grpcTarget(config.coordinatorUrl), channelCredentials(config), {
    "grpc.max_receive_message_length": 64 * 1024 ** 2,
    "grpc.keepalive_time_ms": 60_000,
  });

  const control = new DrainControl(config.drainGraceMs, logger, () => runner.joinLeases().length === 0);
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn(`second ${sig}: exiting now`);
      process.exit(1);
    }
    control.begin(sig);
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  const uptimeSeconds = () => machineUptimeSeconds(config.machineStartedAt);
  control.scheduleEndOfLife(uptimeSeconds(), config.maxLifetimeSeconds);

  logger.info({ coordinator: config.coordinatorUrl, cores: config.cores, memoryBytes: config.memoryBytes, systems: config.systems, maxBuilds: config.maxBuilds, executor: config.executor }, "worker starting");
  const end = await connectLoop(
    () =>
      runOnce({
        client,
        token: config.token,
        runner,
        logger,
        drain: control.drain,
        drainDeadline: () => control.deadline(),
        heartbeatIntervalMs: config.heartbeatIntervalMs,
        info: () => ({
          workerId: config.workerId,
          softwareVersion: SOFTWARE_VERSION,
          systems: config.systems,
          features: config.features,
          cores: config.cores,
          memoryBytes: config.memoryBytes,
          freeDiskBytes: freeDiskBytes(config.storeDir),
          storeDir: config.storeDir,
          uptimeSeconds: uptimeSeconds(),
          maxLifetimeSeconds: config.maxLifetimeSeconds,
          maxBuilds: config.maxBuilds,
          nixVersion: nix?.version ?? "",
          nixSource: nix?.source ?? "",
        }),
        vitals: () => ({ freeMemoryBytes: freeMemoryBytes(), freeDiskBytes: freeDiskBytes(config.storeDir), uptimeSeconds: uptimeSeconds() }),
      }),
    { logger, stop: control.stop },
  );
  // Whatever ended the loop, no build may outlive the worker.
  runner.handBackAll("worker exiting");
  await runner.idle(15_000);
  client.close();
  if (end.kind === "auth") {
    logger.fatal(`the coordinator refused this worker's token (${end.message}); check FARM_TOKEN`);
    return 3;
  }
  logger.info("worker stopped");
  return 0;
}

/** Picks the executor named in the config. */
function makeExecutor(config: WorkerConfig, logger: Logger, metrics: WorkerMetrics): Executor {
  const makeCache = cacheFactory(config, logger);
  if (config.executor === "fake") {
    return new FakeExecutor({ model: loadFakeModel(config.fakeModel, config.fakeBuildMs), makeCache, logger, counters: metrics });
  }
  const nix = new NixEnv({ storeDir: config.storeDir, stateDir: config.stateDir, logDir: config.logDir }, process.env, config.buildUsersGroup, config.features);
  return new NixExecutor({ nix, makeCache, minFreeDiskBytes: config.minFreeDiskBytes, logger, counters: metrics, memorySampleMs: config.memorySampleMs });
}

/** One CacheClient per cache the coordinator names (reused across builds). */
function cacheFactory(config: WorkerConfig, logger: Logger): CacheFactory {
  const clients = new Map<string, CacheApi>();
  return ({ cacheUrl, cachePublicKey }) => {
    const key = `${cacheUrl} ${cachePublicKey}`;
    let c = clients.get(key);
    if (!c) {
      c = new CacheClient({ baseUrl: cacheUrl, trustedPublicKeys: [cachePublicKey], token: config.token, storeDir: config.storeDir, logger, workerId: config.workerId });
      clients.set(key, c);
    }
    return c;
  };
}

/** host:port for grpc-js from host:port or http(s)://host:port. */
function grpcTarget(url: string): string {
  return url.replace(/^https?:\/\//, "").replace(/\/$/, "");
}

function channelCredentials(config: WorkerConfig) {
  if (!config.coordinatorUrl.startsWith("https://")) return credentials.createInsecure();
  return credentials.createSsl(config.tlsCa ? readFileSync(config.tlsCa) : undefined);
}

function readVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: string }).version ?? "0.0.0";
  } catch {
    return "0.0.0";
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`tmpnix-farm-worker: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  },
);
