// The coordinator's configuration: one documented schema, defaults in one place.
import os from "node:os";
import path from "node:path";
import { ConfigError, type ConfigOf, type Schema } from "../proto/config-schema.js";
import { DEFAULT_SCHEDULER_CONFIG } from "./core/scheduler.js";
import { CPU_POLICIES } from "./cpu-policy.js";

const isHostPort = (v: string) => (/^[^\s:]+:\d{1,5}$/.test(v) ? undefined : `expected host:port, got '${v}'`);
const isPercent = (v: number) => (v >= 0 && v <= 100 ? undefined : `expected 0 to 100, got ${v}`);
const isAbsolute = (v: string) => (path.isAbsolute(v) ? undefined : `expected an absolute path, got '${v}'`);

/** Default place for the coordinator's own files (cache storage, signing key). */
export const defaultDataDir = () => path.join(process.env.XDG_DATA_HOME ?? path.join(os.homedir(), ".local", "share"), "tmpnix-farm");

export const coordinatorSchema = {
  listen: { type: "string", doc: "gRPC address for workers and the CLI", env: "FARM_LISTEN", default: "127.0.0.1:7420", check: isHostPort },
  cacheListen: { type: "string", doc: "HTTP address of the binary cache", env: "FARM_CACHE_LISTEN", default: "127.0.0.1:7421", check: isHostPort },
  cacheUrl: { type: "string", doc: "Public URL of the cache as workers and users reach it (default: http(s)://<cache-listen>)", env: "FARM_CACHE_URL", default: "" },
  tlsCert: { type: "string", doc: "PEM certificate (chain) for TLS on gRPC and the cache; set with tls-key, or both serve plaintext", env: "FARM_TLS_CERT", default: "", check: (v: string) => (v === "" ? undefined : isAbsolute(v)) },
  tlsKey: { type: "string", doc: "PEM private key of tls-cert", env: "FARM_TLS_KEY", default: "", check: (v: string) => (v === "" ? undefined : isAbsolute(v)) },
  metricsListen: { type: "string", doc: "HTTP address serving Prometheus /metrics ('' = off)", env: "FARM_METRICS_LISTEN", default: "127.0.0.1:9464", check: (v: string) => (v === "" ? undefined : isHostPort(v)) },
  natsUrl: { type: "string", doc: "NATS server with JetStream holding durable state", env: "NATS_URL", default: "nats://127.0.0.1:4222" },
  natsPrefix: { type: "string", doc: "Prepended to the farm-* KV buckets, event stream and subjects (one farm per prefix)", env: "FARM_NATS_PREFIX", default: "", check: (v: string) => (/^[A-Za-z0-9_-]*$/.test(v) ? undefined : "letters, digits, - and _ only") },
  storeDir: { type: "string", doc: "Nix store dir the farm builds for", env: "NIX_STORE_DIR", default: "/tmp/nix/store", check: isAbsolute },
  dataDir: { type: "string", doc: "Where the cache keeps NARs, narinfos, logs and its signing key", env: "FARM_DATA_DIR", default: defaultDataDir(), check: isAbsolute },
  signingKeyFile: { type: "string", doc: "Secret key that signs narinfos (created on first start; never sent anywhere)", env: "FARM_SIGNING_KEY_FILE", default: "" },
  keyName: { type: "string", doc: "Name of the signing key, as in 'name:base64'", env: "FARM_KEY_NAME", default: "tmpnix-farm-1" },
  token: { type: "string", doc: "Admin token accepted from the CLI and workers", env: "FARM_TOKEN", default: "" },
  tokensFile: { type: "string", doc: "File of 'role name token' lines (role: worker|cli|admin); re-read on change, so a removed line revokes a token and cuts its open streams (replace it atomically: write a copy, mv it over)", env: "FARM_TOKENS_FILE", default: "" },
  heartbeatInterval: { type: "duration", doc: "How often workers send heartbeats", env: "FARM_HEARTBEAT_INTERVAL", default: 2000 },
  heartbeatTimeout: { type: "duration", doc: "Silence after which a worker is lost and its builds requeued", env: "FARM_HEARTBEAT_TIMEOUT", default: DEFAULT_SCHEDULER_CONFIG.heartbeatTimeoutMs },
  maxMessageBytes: { type: "bytes", doc: "Largest gRPC message accepted (a 100k-node submit is ~40 MB)", env: "FARM_MAX_MESSAGE_BYTES", default: 256 * 1024 ** 2 },
  maxNarBytes: { type: "bytes", doc: "Largest NAR the cache accepts", env: "FARM_MAX_NAR_BYTES", default: 8 * 1024 ** 3 },
  narCompression: {
    type: "string",
    doc: "How the cache stores uploaded NARs: 'gzip' (in-process, the default) or 'zstd' (smaller files, but a zstd process per upload: a busy coordinator's CPU goes to spawning it)",
    env: "FARM_NAR_COMPRESSION",
    default: "gzip",
    check: (v: string) => (v === "gzip" || v === "zstd" ? undefined : "expected gzip or zstd"),
  },
  maxDagNodes: { type: "int", doc: "Largest DAG one submit may carry", env: "FARM_MAX_DAG_NODES", default: 200_000 },
  trustSubmittedNodes: { type: "bool", doc: "Accept submitted nodes without checking them against their .drv in the cache (load tests of DAGs with no .drv files; never on a farm people install from)", env: "FARM_TRUST_SUBMITTED_NODES", default: false },
  referenceCores: { type: "int", doc: "Cores a typical worker gives one build: priorities weigh estimated durations at this many", env: "FARM_REFERENCE_CORES", default: 2, check: (v: number) => (v >= 1 && v <= 256 ? undefined : `expected 1 to 256, got ${v}`) },
  heavyPackagesFile: { type: "string", doc: "JSON table of known heavy packages (memory/time priors) that extends or overrides the built-in one", env: "FARM_HEAVY_PACKAGES_FILE", default: "" },
  lifetimePolicy: {
    type: "string",
    doc: "When no worker will live long enough for a build: 'wait-for-fresh' waits (and says why in status), 'start-anyway' starts on the longest-lived",
    env: "FARM_LIFETIME_POLICY",
    default: DEFAULT_SCHEDULER_CONFIG.lifetimePolicy,
    check: (v: string) => (v === "wait-for-fresh" || v === "start-anyway" ? undefined : "expected wait-for-fresh or start-anyway"),
  },
  memorySafetyMarginPercent: { type: "int", doc: "Percent of each worker's memory never reserved for builds", env: "FARM_MEMORY_SAFETY_MARGIN_PERCENT", default: Math.round(DEFAULT_SCHEDULER_CONFIG.memorySafetyMarginFraction * 100), check: isPercent },
  memorySafetyMarginMin: { type: "bytes", doc: "Least memory kept unreserved on each worker", env: "FARM_MEMORY_SAFETY_MARGIN_MIN", default: DEFAULT_SCHEDULER_CONFIG.memorySafetyMarginMinBytes },
  memorySafetyMarginMax: { type: "bytes", doc: "Most memory kept unreserved on each worker (the percent is capped here)", env: "FARM_MEMORY_SAFETY_MARGIN_MAX", default: DEFAULT_SCHEDULER_CONFIG.memorySafetyMarginMaxBytes },
  memoryHeadroomPercent: { type: "int", doc: "Reserve this percent above a measured memory estimate when the worker has room (x(1+1/n) for a peak measured n times)", env: "FARM_MEMORY_HEADROOM_PERCENT", default: Math.round(DEFAULT_SCHEDULER_CONFIG.memoryHeadroomFraction * 100), check: isPercent },
  backupCopyMinRemaining: { type: "duration", doc: "Idle workers run a backup copy of a running build expected to need at least this much longer; the first copy to finish wins (0 = never)", env: "FARM_BACKUP_COPY_MIN_REMAINING", default: DEFAULT_SCHEDULER_CONFIG.backupCopyMinRemainingMs },
  maxBackupCopiesPerBuild: { type: "int", doc: "Most backup copies of one build running at a time", env: "FARM_MAX_BACKUP_COPIES_PER_BUILD", default: DEFAULT_SCHEDULER_CONFIG.maxBackupCopiesPerBuild, check: (v: number) => (v >= 0 && v <= 8 ? undefined : `expected 0 to 8, got ${v}`) },
  buildTimeout: { type: "duration", doc: "Wall-clock limit of one build (0 = none)", env: "FARM_BUILD_TIMEOUT", default: 0 },
  heapGrowthPercent: {
    type: "int",
    doc: "How far the JavaScript heap may grow past its live data before a full collection, in percent (V8's --heap-growing-percent; 0 = V8's own choice, which on a busy coordinator with cheap collections let a 170 MB live heap reach 690 MB)",
    env: "FARM_HEAP_GROWTH_PERCENT",
    default: 50,
    check: (v: number) => (v >= 0 && v <= 400 ? undefined : `expected 0 to 400, got ${v}`),
  },
  cpuPolicy: {
    type: "string",
    doc: "CPU scheduling of the coordinator's threads: 'batch' (SCHED_BATCH, set with chrt at start: a thread that wakes does not preempt a running one; 1.12-1.18x as fast on the full nixpkgs graph) or 'inherit' (as started)",
    env: "FARM_CPU_POLICY",
    default: "batch",
    check: (v: string) => ((CPU_POLICIES as readonly string[]).includes(v) ? undefined : `expected ${CPU_POLICIES.join(" or ")}`),
  },
  logLevel: { type: "string", doc: "pino log level", env: "FARM_LOG_LEVEL", default: "info" },
} satisfies Schema;

export type CoordinatorConfig = ConfigOf<typeof coordinatorSchema>;

/** Fills values derived from others (kept out of the schema so defaults stay in one place). */
export function resolveCoordinatorConfig(c: CoordinatorConfig): CoordinatorConfig {
  if (Boolean(c.tlsCert) !== Boolean(c.tlsKey)) throw new ConfigError(["tls-cert and tls-key go together: set both for TLS, or neither"]);
  return {
    ...c,
    cacheUrl: c.cacheUrl || `${c.tlsCert ? "https" : "http"}://${c.cacheListen}`,
    signingKeyFile: c.signingKeyFile || path.join(c.dataDir, "signing-key.sec"),
  };
}
