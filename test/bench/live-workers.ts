// A child process of `npm run bench:live`: many live worker sessions in one
// Node process, each with its own id, build runner and fake executor (sleep,
// then upload a tiny NAR per output), all over one gRPC channel. The sessions
// are the real worker code (worker/session.ts, reconnect loop, build runner);
// only the executor is the fake one. Configured by env:
//   BENCH_COORDINATOR host:port, BENCH_TOKEN, BENCH_SESSIONS, BENCH_ID_PREFIX,
//   BENCH_BUILD_MS (fake build time), BENCH_MAX_BUILDS (slots per session),
//   FARM_UPLOAD_BESIDE_FROM (bytes: outputs at least this big upload beside the next build; default the worker's).
import { credentials } from "@grpc/grpc-js";
import pino from "pino";
import { CacheClient } from "../../proto/nix/mod.js";
import { WorkerServiceClient } from "../../proto/gen/farm.js";
import { BuildRunner } from "../../worker/build-runner.js";
import type { CacheApi } from "../../worker/cache-api.js";
import { FakeExecutor } from "../../worker/fake-executor.js";
import { connectLoop } from "../../worker/reconnect.js";
import { runOnce } from "../../worker/session.js";

const env = (k: string, dflt?: string): string => {
  const v = process.env[k] ?? dflt;
  if (v === undefined) throw new Error(`live-workers: ${k} is not set`);
  return v;
};

const coordinator = env("BENCH_COORDINATOR");
const token = env("BENCH_TOKEN");
const sessions = Number(env("BENCH_SESSIONS", "50"));
const prefix = env("BENCH_ID_PREFIX", "w");
const buildMs = Number(env("BENCH_BUILD_MS", "1"));
const maxBuilds = Number(env("BENCH_MAX_BUILDS", "1"));
const logger = pino({ level: process.env.BENCH_WORKER_LOG ?? "warn" }, pino.destination(2));
const client = new WorkerServiceClient(coordinator, credentials.createInsecure(), { "grpc.max_receive_message_length": 64 * 1024 ** 2 });
const stop = new AbortController();
const drain = new AbortController();
process.once("SIGTERM", () => {
  stop.abort("bench over");
  drain.abort("bench over");
  client.close();
  process.exit(0);
});

function session(workerId: string): Promise<unknown> {
  const caches = new Map<string, CacheApi>();
  const executor = new FakeExecutor({
    model: { durations: {}, defaultMs: buildMs },
    logger,
    inline: process.env.BENCH_FAKE_UPLOAD !== "1",
    makeCache: ({ cacheUrl, cachePublicKey }) => {
      let c = caches.get(cacheUrl);
      if (!c) caches.set(cacheUrl, (c = new CacheClient({ baseUrl: cacheUrl, trustedPublicKeys: [cachePublicKey], token, storeDir: "/nix/store", logger, workerId })));
      return c;
    },
  });
  const besideFrom = process.env.FARM_UPLOAD_BESIDE_FROM;
  const runner = new BuildRunner(executor, maxBuilds, logger, undefined, besideFrom === undefined ? undefined : Number(besideFrom));
  return connectLoop(
    () =>
      runOnce({
        client,
        token,
        runner,
        logger,
        drain: drain.signal,
        info: () => ({
          workerId,
          softwareVersion: "bench",
          systems: ["x86_64-linux", "i686-linux", "builtin"],
          features: ["big-parallel", "kvm", "nixos-test", "benchmark"],
          cores: 4,
          memoryBytes: 64 * 1024 ** 3,
          freeDiskBytes: 1024 ** 4,
          storeDir: "/nix/store",
          uptimeSeconds: 0,
          maxLifetimeSeconds: 0,
          maxBuilds,
        }),
        vitals: () => ({ freeMemoryBytes: 32 * 1024 ** 3, freeDiskBytes: 1024 ** 4, uptimeSeconds: 0 }),
      }),
    { logger, stop: stop.signal },
  );
}

await Promise.all(Array.from({ length: sessions }, (_, i) => session(`${prefix}-${i}`)));
