// The worker as a process (dist/worker/main.js, built by tsc): exit codes and
// signals, against a real gRPC server. Builds use the fake executor.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { startTestCache, type TestCache } from "../test/fixtures/cache-server.js";
import { FakeCoordinator } from "./testing/fake-coordinator.js";
import { PROTOCOL_VERSION } from "../proto/convert/mod.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const MAIN = path.join(ROOT, "dist/worker/main.js");
const TOKEN = "worker-token-0123456789";

let cache: TestCache;
let coord: FakeCoordinator;
let tmp: string;

beforeAll(async () => {
  // Other parts of the tree may not type-check yet; tsc still emits, which is all we need.
  await execa("npx", ["tsc", "-p", "tsconfig.json"], { cwd: ROOT, reject: false });
  if (!existsSync(MAIN)) throw new Error(`${MAIN} was not built`);
  cache = await startTestCache("/tmp/nix/store");
}, 180_000);
afterAll(async () => {
  await cache?.close();
});
afterEach(() => {
  coord?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function startWorker(env: Record<string, string>) {
  tmp = mkdtempSync(path.join(os.tmpdir(), "worker-main-"));
  const child = spawn(process.execPath, [MAIN], {
    env: { PATH: process.env.PATH, FARM_EXECUTOR: "fake", NIX_STORE_DIR: path.join(tmp, "nix/store"), FARM_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((resolve) => child.on("exit", (code, sig) => resolve(code ?? (sig ? 128 : -1))));
  return { child, exited, stderr: () => stderr };
}

describe("worker process", () => {
  it("exits non-zero with one clear line when the coordinator refuses its token", async () => {
    coord = await new FakeCoordinator(TOKEN).start();
    const w = startWorker({ COORDINATOR_URL: coord.address, FARM_TOKEN: "wrong-token-0123456789" });
    expect(await w.exited).toBe(3);
    const fatal = w.stderr().split("\n").filter((l) => l.includes('"level":60'));
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toContain("refused this worker's token");
  }, 30_000);

  it("exits 2 listing configuration problems", async () => {
    const w = startWorker({ FARM_MAX_BUILDS: "zero" });
    expect(await w.exited).toBe(2);
    expect(w.stderr()).toContain("missing coordinatorUrl");
    expect(w.stderr()).toContain("environment FARM_MAX_BUILDS: expected a whole number, got 'zero'");
  }, 30_000);

  it("on SIGTERM hands back at once a build that would not finish within the grace, and exits 0", async () => {
    coord = await new FakeCoordinator(TOKEN).start();
    const w = startWorker({ COORDINATOR_URL: coord.address, FARM_TOKEN: TOKEN, FARM_FAKE_BUILD_MS: "60000", FARM_DRAIN_GRACE: "30s" });
    const s = await coord.stream(0);
    const join = await s.next("join");
    expect(join.workerId).toMatch(/-[0-9a-f]{8}$/);
    s.send({ $case: "welcome", value: { protocolVersion: PROTOCOL_VERSION, sessionId: "s", cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey, heartbeatIntervalMs: 200, abort: [] } });
    // Paths in the store dir the worker joined with (NIX_STORE_DIR), as a real coordinator's would be.
    const store = join.storeDir;
    const lease = { drvPath: `${store}/0123456789abcdfghijklmnpqrsvwxyz-x.drv`, epoch: 1 };
    s.send({ $case: "assign", value: { lease, outputs: { out: `${store}/zyxwvsrqpnmlkjihgfdcba9876543210-x` }, inputPaths: [], cores: 1, memoryLimitBytes: 0, timeoutMs: 0, name: "x", estimatedDurationMs: 60_000, uploadCredential: "" } });
    await s.next("log");
    const t0 = Date.now();
    w.child.kill("SIGTERM");
    const notice = await s.next("drain").catch((e) => { console.error(w.stderr()); throw e; });
    expect(notice.handedBack).toEqual([lease]);
    expect(Date.now() - t0).toBeLessThan(30_000); // at once, not after the grace
    expect(await w.exited).toBe(0);
    expect(w.stderr()).toContain("worker stopped");
  }, 30_000);

  it("on SIGTERM lets a build that fits in FARM_DRAIN_GRACE finish and report, then exits 0", async () => {
    // The fake executor uploads for real: one token for coordinator and cache, and the cache's store dir.
    coord = await new FakeCoordinator(cache.token).start();
    const w = startWorker({ COORDINATOR_URL: coord.address, FARM_TOKEN: cache.token, FARM_FAKE_BUILD_MS: "1500", FARM_DRAIN_GRACE: "20s", NIX_STORE_DIR: "/tmp/nix/store", NIX_STATE_DIR: path.join(os.tmpdir(), "unused-state"), FARM_WORKER_ID: "w-drain" });
    const s = await coord.stream(0);
    await s.next("join");
    s.send({ $case: "welcome", value: { protocolVersion: PROTOCOL_VERSION, sessionId: "s", cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey, heartbeatIntervalMs: 200, abort: [] } });
    const lease = { drvPath: "/tmp/nix/store/1123456789abcdfghijklmnpqrsvwxyz-y.drv", epoch: 3 };
    s.send({ $case: "assign", value: { lease, outputs: { out: "/tmp/nix/store/1yxwvsrqpnmlkjihgfdcba9876543210-y" }, inputPaths: [], cores: 1, memoryLimitBytes: 0, timeoutMs: 0, name: "y", estimatedDurationMs: 2000, uploadCredential: "" } });
    await s.next("log");
    w.child.kill("SIGTERM");
    const notice = await s.next("drain");
    expect(notice.handedBack).toEqual([]);
    expect(notice.deadlineUnixMs).toBeGreaterThan(Date.now() + 15_000);
    const result = await s.next("result");
    expect(result.lease).toEqual(lease);
    expect(result.error).toBe("");
    s.send({ $case: "resultAck", value: { lease, accepted: true, reason: "" } });
    expect(await w.exited).toBe(0);
  }, 30_000);

  it("keeps trying to reach a coordinator that is down, logging when it retries", async () => {
    coord = await new FakeCoordinator(TOKEN).start();
    const address = coord.address;
    coord.stop();
    const w = startWorker({ COORDINATOR_URL: address, FARM_TOKEN: TOKEN });
    await vi.waitFor(() => expect(w.stderr()).toMatch(/reconnecting in \d+\.\ds/), { timeout: 20_000, interval: 100 });
    w.child.kill("SIGTERM");
    expect(await w.exited).toBe(0);
  }, 30_000);
});
