// The worker's configuration: one documented schema with defaults in one place.
// Sources merge as defaults < JSON file (--config / FARM_WORKER_CONFIG) < env < flags;
// unknown keys are rejected. Values that depend on the host (cores, memory, worker
// id, Nix dirs) are left empty in the schema and filled by resolveWorkerConfig().
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { ConfigError, describeSchema, flagOptions, loadConfig, type ConfigOf, type Schema } from "../proto/config-schema.js";
import { defaultSystems, detectCores, detectMemoryBytes, memoryForBuilds } from "./host-probe.js";

const isAbsolute = (v: string) => (v === "" || path.isAbsolute(v) ? undefined : `expected an absolute path, got '${v}'`);
const isNonNegative = (v: number) => (v >= 0 ? undefined : `expected 0 or more, got ${v}`);
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** Checks a coordinator address: host:port, or http:// (plaintext) / https:// (TLS) with a port. */
export function checkCoordinatorUrl(v: string): string | undefined {
  return /^(https?:\/\/)?[^\s/:]+:\d{1,5}\/?$/.test(v) ? undefined : `expected host:port or http(s)://host:port, got '${v}'`;
}

export const workerSchema = {
  coordinatorUrl: { type: "string", doc: "gRPC address of the coordinator (host:port; https:// for TLS)", env: "COORDINATOR_URL", required: true, check: checkCoordinatorUrl },
  token: { type: "string", doc: "Bearer token the coordinator and the cache accept from this worker", env: "FARM_TOKEN", required: true, check: (v: string) => (v.trim() ? undefined : "must not be empty") },
  storeDir: { type: "string", doc: "Nix store dir (builds are relocated here)", env: "NIX_STORE_DIR", default: "/tmp/nix/store", check: isAbsolute },
  stateDir: { type: "string", doc: "Nix state dir (default: <store>/../var/nix)", env: "NIX_STATE_DIR", default: "", check: isAbsolute },
  logDir: { type: "string", doc: "Nix build-log dir (default: <store>/../var/log/nix)", env: "NIX_LOG_DIR", default: "", check: isAbsolute },
  workerId: { type: "string", doc: "Stable worker name (default: hostname + random suffix kept in the state dir)", env: "FARM_WORKER_ID", default: "" },
  maxBuilds: { type: "int", doc: "Builds run at once", env: "FARM_MAX_BUILDS", default: 1, check: (v: number) => (v >= 1 ? undefined : `expected 1 or more, got ${v}`) },
  uploadBesideFromBytes: { type: "bytes", doc: "A build whose outputs' NARs total at least this uploads beside the worker's next build (its slot is free once its builder is done; at most max-builds such uploads); a smaller upload takes milliseconds and keeps its slot (0 = every upload)", env: "FARM_UPLOAD_BESIDE_FROM", default: 1024 ** 2, check: isNonNegative },
  cores: { type: "int", doc: "CPUs offered to builds (0 = cgroup CPU quota or all CPUs)", env: "FARM_CORES", default: 0, check: isNonNegative },
  memoryBytes: { type: "bytes", doc: "Memory offered to builds (0 = own cgroup limit capped by MemTotal, minus this process and a 32 MiB cushion)", env: "FARM_MEMORY", default: 0, check: isNonNegative },
  systems: { type: "list", doc: "Nix systems built here, primary first (default: x86_64-linux,i686-linux on x86_64)", env: "FARM_SYSTEMS", default: [] as string[] },
  features: { type: "list", doc: "Nix system features offered (e.g. big-parallel)", env: "FARM_FEATURES", default: [] as string[] },
  maxLifetimeSeconds: { type: "int", doc: "Platform-imposed lifetime of this machine in seconds (0 = unknown)", env: "FARM_MAX_LIFETIME_SECONDS", default: 0, check: isNonNegative },
  buildUsersGroup: { type: "string", doc: "Group of build users (like Nix's nixbld) builds run as, so they can't read the worker's process or files; needs a worker running as root (\"\" = builds run as the worker's uid)", env: "FARM_BUILD_USERS_GROUP", default: "", check: (v: string) => (v === "" || /^[a-z_][a-z0-9_-]*$/.test(v) ? undefined : `expected a group name, got '${v}'`) },
  machineStartedAt: { type: "int", doc: "When this machine (container) started, in Unix seconds (0 = /proc/uptime minus pid 1's start; set it where pid 1 is not the container's own)", env: "FARM_MACHINE_STARTED_AT", default: 0, check: isNonNegative },
  drainGraceMs: { type: "duration", doc: "On SIGTERM (or ahead of max-lifetime-seconds) builds expected to finish within this may; the others are handed back at once", env: "FARM_DRAIN_GRACE", default: 30_000, check: isNonNegative },
  heartbeatIntervalMs: { type: "duration", doc: "Heartbeat interval override (0 = what the coordinator says)", env: "FARM_HEARTBEAT_INTERVAL_MS", default: 0, check: isNonNegative },
  memorySampleMs: { type: "duration", doc: "How often a build's memory is sampled where no cgroup of its own measures it (/proc); the guard kills a build over its reservation at the next sample", env: "FARM_MEMORY_SAMPLE_MS", default: 100, check: (v: number) => (v >= 20 && v <= 5000 ? undefined : `expected 20ms to 5s, got ${v}`) },
  minFreeDiskBytes: { type: "bytes", doc: "Free disk below which fetching or building reports disk-full", env: "FARM_MIN_FREE_DISK", default: 512 * 1024 ** 2, check: isNonNegative },
  logLevel: { type: "string", doc: "pino log level", env: "FARM_LOG_LEVEL", default: "info", check: (v: string) => (LOG_LEVELS.includes(v) ? undefined : `expected one of ${LOG_LEVELS.join(", ")}`) },
  tlsCa: { type: "string", doc: "PEM file of the CA that signed the coordinator's certificate (https:// only)", env: "FARM_TLS_CA", default: "", check: isAbsolute },
  metricsPort: { type: "int", doc: "Port serving Prometheus /metrics (0 = off)", env: "FARM_WORKER_METRICS_PORT", default: 0, check: (v: number) => (v >= 0 && v < 65536 ? undefined : `expected a port, got ${v}`) },
  nix: { type: "string", doc: "Which Nix builds run with: 'auto' (the host's if nix-store is on PATH, else the farm's from its cache), 'host' or 'cache'", env: "FARM_NIX", default: "auto", check: (v: string) => (["auto", "host", "cache"].includes(v) ? undefined : "expected 'auto', 'host' or 'cache'") },
  cacheUrl: { type: "string", doc: "The farm cache's URL, to install the farm's Nix from where the host has none (the coordinator names the cache for everything else)", env: "FARM_CACHE_URL", default: "" },
  cachePublicKey: { type: "string", doc: "The farm cache's public key (name:base64), checked on the Nix installed from the cache", env: "FARM_CACHE_PUBLIC_KEY", default: "" },
  executor: { type: "string", doc: "'nix' builds for real; 'fake' sleeps and uploads tiny NARs (load tests)", env: "FARM_EXECUTOR", default: "nix", check: (v: string) => (v === "nix" || v === "fake" ? undefined : "expected 'nix' or 'fake'") },
  fakeModel: { type: "string", doc: "JSON file {name: ms} of fake build durations (executor=fake)", env: "FARM_FAKE_MODEL", default: "", check: isAbsolute },
  fakeBuildMs: { type: "duration", doc: "Fake build duration of names missing from the model", env: "FARM_FAKE_BUILD_MS", default: 50, check: isNonNegative },
} satisfies Schema;

/** Configuration as loaded; host-dependent fields may still be empty/0. */
export type RawWorkerConfig = ConfigOf<typeof workerSchema>;
/** Configuration with every default filled in. */
export type WorkerConfig = RawWorkerConfig;

/** Environment variable naming the JSON config file. */
export const CONFIG_FILE_ENV = "FARM_WORKER_CONFIG";

/** Result of reading the command line: either a config or a request for help. */
export type CliResult = { help: string } | { config: RawWorkerConfig };

/** Parses argv + env (+ config file) into a raw config; throws ConfigError listing every problem. */
export function loadWorkerConfig(argv: string[], env: NodeJS.ProcessEnv): CliResult {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...flagOptions(workerSchema), config: { type: "string" }, help: { type: "boolean" } }, strict: true, allowPositionals: false });
  } catch (err) {
    throw new ConfigError([(err as Error).message]);
  }
  const { config: file, help, ...flags } = parsed.values as Record<string, string | boolean | undefined>;
  if (help) return { help: helpText() };
  const configFile = (file as string | undefined) ?? (env[CONFIG_FILE_ENV] || undefined);
  return { config: loadConfig(workerSchema, { flags, env, file: configFile }) };
}

/** --help text generated from the schema. */
export function helpText(): string {
  return ["Usage: tmpnix-farm-worker [--config FILE] [options]", "", `Options (flags > environment > config file via --config or ${CONFIG_FILE_ENV}):`, ...describeSchema(workerSchema)].join("\n");
}

/** Host facts resolveWorkerConfig needs; injectable so tests don't depend on this machine. */
export interface HostFacts {
  hostname: () => string;
  cores: () => number;
  memoryBytes: () => number;
  systems: () => string[];
  randomSuffix: () => string;
}

/** The real host. */
export const realHost: HostFacts = {
  hostname: () => os.hostname(),
  cores: () => detectCores(),
  memoryBytes: () => memoryForBuilds(detectMemoryBytes(), process.memoryUsage().rss),
  systems: () => defaultSystems(),
  randomSuffix: () => randomBytes(4).toString("hex"),
};

/** Fills derived defaults: Nix dirs from the store dir, host limits, and a persisted worker id. */
export function resolveWorkerConfig(raw: RawWorkerConfig, host: HostFacts = realHost): WorkerConfig {
  // Nix switches to build users only as root; anyone else would fail every build.
  if (raw.buildUsersGroup && (process.getuid?.() ?? 0) !== 0) throw new ConfigError(["build-users-group needs a worker running as root; leave FARM_BUILD_USERS_GROUP empty"]);
  const root = path.dirname(raw.storeDir); // /tmp/nix/store -> /tmp/nix
  const stateDir = raw.stateDir || path.join(root, "var", "nix");
  const c: WorkerConfig = {
    ...raw,
    stateDir,
    logDir: raw.logDir || path.join(root, "var", "log", "nix"),
    cores: raw.cores || Math.max(1, host.cores()),
    memoryBytes: raw.memoryBytes || host.memoryBytes(),
    systems: raw.systems.length ? raw.systems : host.systems(),
  };
  c.workerId = raw.workerId || persistedWorkerId(stateDir, host);
  return c;
}

/** File in the state dir holding the generated worker id. */
export const WORKER_ID_FILE = "farm-worker-id";

/**
 * Reads the worker id kept in the state dir, or makes and stores a new one. Kept in
 * the state dir (under /tmp) so a reconnect keeps the name but a recycled container,
 * whose /tmp is fresh, gets a new one.
 */
export function persistedWorkerId(stateDir: string, host: HostFacts = realHost): string {
  const file = path.join(stateDir, WORKER_ID_FILE);
  try {
    const id = readFileSync(file, "utf8").trim();
    if (id) return id;
  } catch {
    // first start: fall through and create it
  }
  const id = `${host.hostname().split(".")[0] || "worker"}-${host.randomSuffix()}`;
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(file, `${id}\n`);
  return id;
}

/** Sets USER when the environment lacks it (some Nix code paths read it). */
export function ensureUserEnv(env: NodeJS.ProcessEnv = process.env): void {
  if (env.USER) return;
  let name = "app";
  try {
    name = os.userInfo().username || name;
  } catch {
    // uid without a passwd entry: keep the placeholder
  }
  env.USER = name;
}

export { ConfigError };
