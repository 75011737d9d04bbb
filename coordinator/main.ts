// `farm coordinator`: wires the parts together and nothing else. The
// scheduling logic lives in core/, persistence in store/, the protocols in
// server/ and the binary cache in cache/.
import { PackageIndexWriter } from "./cache/package-index-writer.js";
import { PackagePublishing } from "./server/package-publishing.js";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { parseArgs } from "node:util";
import v8 from "node:v8";
import { Server } from "@grpc/grpc-js";
import pino from "pino";
import { loadConfig, flagOptions } from "../proto/config-schema.js";
import { coordinatorSchema, resolveCoordinatorConfig, type CoordinatorConfig } from "./config.js";
import { ensureSigningKey } from "./signing-key.js";
import { applyCpuPolicy, type CpuPolicy } from "./cpu-policy.js";
import { TokenRegistry } from "./server/auth.js";
import { DiskStorage } from "./cache/disk-storage.js";
import { createCacheHandler, uploadContextOf } from "./cache/http-server.js";
import { InlineOutputStager } from "./cache/inline-output.js";
import type { StoredNarCompression } from "./cache/upload.js";
import { grpcServerCredentials, readServerTls } from "../proto/tls.js";
import { openNatsStore } from "./server/open-store.js";
import { createScheduler } from "./scheduler-setup.js";
import { SystemClock } from "./core/clock.js";
import { Coordinator } from "./server/coordinator.js";
import { createWorkerService } from "./server/worker-service.js";
import { authInterceptor } from "./server/auth-interceptor.js";
import { uploadAuthority } from "./server/upload-authority.js";
import { LeaseCredentials } from "./server/lease-credentials.js";
import { OutputPublisher } from "./cache/staged-output.js";
import type { Scheduler } from "./core/scheduler.js";
import { parseSecretKey } from "../proto/nix/mod.js";
import { createFarmService } from "./server/farm-service.js";
import { createCoordinatorMetrics } from "./metrics.js";
import { FarmServiceService, WorkerServiceService } from "../proto/gen/farm.js";
import { InvalidInputError } from "./core/errors.js";

/** Software version reported to workers and the CLI. */
export const VERSION = "0.1.0";

/** How long an upload may stay staged: longer than any build a lease covers. */
const STAGED_MAX_AGE_MS = 24 * 3600_000;

const hostPort = (hp: string) => {
  const i = hp.lastIndexOf(":");
  return { host: hp.slice(0, i), port: Number(hp.slice(i + 1)) };
};

/** Parses flags, env and config file; starts everything; resolves when stopped. */
export async function runCoordinator(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { ...flagOptions(coordinatorSchema), config: { type: "string" } }, strict: true });
  const config = resolveCoordinatorConfig(loadConfig(coordinatorSchema, { flags: values, env: process.env, file: (values.config as string) ?? process.env.FARM_COORDINATOR_CONFIG }));
  const logger = pino({ level: config.logLevel, base: { role: "coordinator" } });
  // Process-wide, so set here and not in startCoordinator (tests run that in their own process).
  if (config.heapGrowthPercent > 0) v8.setFlagsFromString(`--heap-growing-percent=${config.heapGrowthPercent}`);
  if (!config.token && !config.tokensFile) throw new InvalidInputError("no tokens configured: set FARM_TOKEN or --tokens-file, or nobody can connect");
  const started = await startCoordinator(config, logger);
  // After the ports are bound, so a start is no slower to listen; --all-tasks covers the threads started so far.
  const cpu = await applyCpuPolicy(config.cpuPolicy as CpuPolicy);
  if (cpu.applied || config.cpuPolicy === "inherit") logger.info({ cpuPolicy: config.cpuPolicy, applied: cpu.applied }, "CPU policy set");
  else logger.warn({ cpuPolicy: config.cpuPolicy, applied: false, reason: cpu.reason }, "CPU policy set: not applied, running as started");
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      logger.info({ signal: sig }, "stopping");
      void started.stop().then(resolve);
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
  return 0;
}

/** A running coordinator with its cache and metrics endpoints. */
export async function startCoordinator(config: CoordinatorConfig, logger: pino.Logger) {
  const clock = new SystemClock();
  const key = ensureSigningKey(config.signingKeyFile, config.keyName);
  logger.info({ publicKey: key.publicKey, created: key.created, file: config.signingKeyFile }, "cache signing key");
  const tokens = new TokenRegistry(config.token, config.tokensFile, { onProblem: (msg) => logger.error(msg) });
  // Polled as well as checked on every call, so a revoked worker's quiet stream is cut within a second.
  const unwatchTokens = tokens.watch(1000);
  const tls = readServerTls(config.tlsCert, config.tlsKey);
  // The cache listens before the scheduler is restored: until then no lease is held, so no output is taken.
  let scheduler: Scheduler | undefined;
  const credentials = LeaseCredentials.fromFile(path.join(config.dataDir, "lease-credential.key"));
  const authorizeUpload = uploadAuthority(tokens, () => scheduler ?? { drv: () => undefined }, credentials);

  const storage = await DiskStorage.open(path.join(config.dataDir, "cache"));
  const cacheOptions = { storage, storeDir: config.storeDir, secretKey: key.secretKey, authorizeUpload, maxNarBytes: config.maxNarBytes, narCompression: config.narCompression as StoredNarCompression, logger: logger.child({ part: "cache" }) };
  const cacheHandler = createCacheHandler(cacheOptions);
  const cacheServer = tls ? https.createServer({ cert: tls.cert, key: tls.key }, cacheHandler) : http.createServer(cacheHandler);
  const cacheAddr = hostPort(config.cacheListen);
  await new Promise<void>((resolve, reject) => cacheServer.once("error", reject).listen(cacheAddr.port, cacheAddr.host, resolve));

  const { store, snapshot } = await openNatsStore(config.natsUrl, config.natsPrefix, logger);
  scheduler = createScheduler(config, snapshot, clock.now(), logger);

  const publisher = new OutputPublisher({ storage, signingKey: parseSecretKey(key.secretKey), logger: logger.child({ part: "cache" }) });
  const indexWriter = new PackageIndexWriter({ storage, storeDir: config.storeDir, secretKey: key.secretKey, publicKey: key.publicKey, logger: logger.child({ part: "index" }) });
  const packages = new PackagePublishing({ scheduler, writer: indexWriter, logger: logger.child({ part: "index" }) });
  let coordinator: Coordinator | undefined;
  const metrics = createCoordinatorMetrics(() => coordinator?.gauges(), { defaultMetrics: true, eventLoopDelay: true });
  coordinator = new Coordinator({
    scheduler,
    store,
    cache: storage,
    clock,
    logger,
    metrics,
    info: { version: VERSION, storeDir: config.storeDir, cacheUrl: config.cacheUrl, cachePublicKey: key.publicKey, heartbeatIntervalMs: config.heartbeatInterval },
    onFenced: () => process.exit(3),
    trustSubmittedNodes: config.trustSubmittedNodes,
    publisher,
    inlineOutputs: new InlineOutputStager(uploadContextOf(cacheOptions)),
    credentials,
    packages,
  });
  packages.catchUp().then(
    (n) => n && logger.info({ published: n }, "published jobs that succeeded while the index was not written"),
    (err) => logger.error({ err }, "catching up the package index failed"),
  );

  const grpc = new Server({
    "grpc.max_receive_message_length": config.maxMessageBytes,
    "grpc.max_send_message_length": config.maxMessageBytes,
    interceptors: [authInterceptor(tokens, { "farm.v1.WorkerService": ["worker"], "farm.v1.FarmService": ["cli"] }, logger.child({ part: "auth" }))],
  });
  grpc.addService(
    WorkerServiceService,
    createWorkerService({ hub: coordinator, tokens, storeDir: config.storeDir, logger: logger.child({ part: "workers" }), limits: { joinTimeoutMs: 10_000, maxLogLinesPerMessage: 1000, maxLogLineBytes: 4096 } }),
  );
  grpc.addService(FarmServiceService, createFarmService({ api: coordinator, tokens, storeDir: config.storeDir, maxDagNodes: config.maxDagNodes, logger: logger.child({ part: "cli" }) }));
  await new Promise<number>((resolve, reject) => grpc.bindAsync(config.listen, grpcServerCredentials(tls), (err, port) => (err ? reject(err) : resolve(port))));

  let metricsServer: http.Server | undefined;
  if (config.metricsListen) {
    metricsServer = http.createServer(async (req, res) => {
      if (req.url !== "/metrics") {
        res.writeHead(404).end("try /metrics\n");
        return;
      }
      res.writeHead(200, { "Content-Type": metrics.registry.contentType }).end(await metrics.registry.metrics());
    });
    const m = hostPort(config.metricsListen);
    await new Promise<void>((resolve, reject) => metricsServer!.once("error", reject).listen(m.port, m.host, resolve));
  }

  const tick = setInterval(() => void coordinator!.tick().catch((err) => logger.error({ err }, "tick failed")), 1000);
  // Uploads staged under leases that ended without acceptance are never published: drop them after a day.
  const sweep = setInterval(() => {
    publisher.sweep(STAGED_MAX_AGE_MS).then(
      (n) => n && logger.info({ removed: n }, "dropped staged uploads of leases that ended without acceptance"),
      (err) => logger.error({ err }, "sweeping staged uploads failed"),
    );
  }, 3600_000);
  sweep.unref();
  await coordinator.tick();
  if (config.trustSubmittedNodes) logger.warn("trust-submitted-nodes is on: submitted DAG nodes are not checked against their .drv files (load tests only)");
  logger.info({ grpc: config.listen, cache: config.cacheUrl, tls: Boolean(tls), metrics: config.metricsListen || "off", storeDir: config.storeDir }, "coordinator ready");

  return {
    coordinator,
    publicKey: key.publicKey,
    async stop() {
      clearInterval(tick);
      clearInterval(sweep);
      unwatchTokens();
      // Open worker streams and keep-alive downloads would hold a graceful shutdown forever:
      // give them a few seconds, then cut them, so a service manager's stop timeout is never reached.
      const force = setTimeout(() => {
        logger.warn("open calls did not end within 5s; closing them");
        grpc.forceShutdown();
        cacheServer.closeAllConnections();
      }, 5000);
      await new Promise<void>((resolve) => grpc.tryShutdown(() => resolve()));
      await new Promise<void>((resolve) => cacheServer.close(() => resolve()));
      clearTimeout(force);
      await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
      await coordinator?.quiesce();
      await store.close();
    },
  };
}
