// BuildRunner slot accounting and drain with the FakeExecutor (uploads go to a real test cache).
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestCache, type TestCache } from "../test/fixtures/cache-server.js";
import type { AssignmentSpec } from "../proto/types.js";
import { BuildRunner, declineReason } from "./build-runner.js";
import { FakeExecutor } from "./fake-executor.js";

const STORE = "/tmp/nix/store";
const logger = pino({ level: "silent" });
let cache: TestCache;

beforeAll(async () => {
  cache = await startTestCache(STORE);
});
afterAll(async () => {
  await cache?.close();
});

function spec(n: number, estimatedDurationMs = 0): AssignmentSpec {
  const h = String(n).padStart(2, "0") + "23456789abcdfghijklmnpqrsvwxyz";
  return { lease: { drvPath: `${STORE}/${h}-b${n}.drv`, epoch: 1 }, name: `b${n}`, outputs: { out: `${STORE}/${h.split("").reverse().join("")}-b${n}` }, inputPaths: [], cores: 1, memoryLimitBytes: 0, timeoutMs: 0, estimatedDurationMs };
}

function runner(durations: Record<string, number>, maxBuilds = 1) {
  const executor = new FakeExecutor({ model: { durations, defaultMs: 20 }, makeCache: () => cache.client(), logger });
  const r = new BuildRunner(executor, maxBuilds, logger);
  r.setCache({ cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey });
  return r;
}

describe("BuildRunner", () => {
  it("uploads an adopted build's outputs under the lease and credential it holds now, not the first ones", async () => {
    const seen: unknown[] = [];
    let finish!: () => void;
    const held = new Promise<void>((r) => (finish = r));
    const executor = {
      async run(a: AssignmentSpec, ctx: import("./executor.js").ExecutorContext) {
        await held;
        seen.push(ctx.grant?.());
        return { lease: a.lease, outcome: "succeeded" as const, outputs: [], durationMs: 1, peakMemoryBytes: 0, cores: 1, error: "" };
      },
    };
    const r = new BuildRunner(executor, 1, logger);
    r.setCache({ cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey });
    const first = { ...spec(9), uploadCredential: "credential-epoch-1" };
    expect(r.start(first)).toBe("started");
    expect(r.start({ ...first, lease: { ...first.lease, epoch: 3 }, uploadCredential: "credential-epoch-3" })).toBe("adopted");
    finish();
    expect(await r.idle(5000)).toBe(true);
    expect(seen).toEqual([{ lease: { drvPath: first.lease.drvPath, epoch: 3 }, uploadCredential: "credential-epoch-3" }]);
  });

  it("frees an aborted build's slot at once, so work sent right after a stale-lease abort starts", async () => {
    const r = runner({ b1: 60_000, b2: 50 });
    expect(r.start(spec(1))).toBe("started");
    expect(r.start(spec(2))).toBe("full");
    expect(r.abort(spec(1).lease, "stale lease")).toBe(true);
    expect(r.start(spec(2))).toBe("started");
    expect(await r.idle(5000)).toBe(true);
  });

  it("declines a new lease of a derivation whose aborted attempt is still stopping, instead of adopting the dying build", async () => {
    const r = runner({ b1: 60_000 });
    expect(r.start(spec(1))).toBe("started");
    expect(r.abort(spec(1).lease, "stale lease")).toBe(true);
    const next = { ...spec(1), lease: { ...spec(1).lease, epoch: spec(1).lease.epoch + 1 } };
    expect(r.start(next)).toBe("stopping");
    expect(await r.idle(5000)).toBe(true);
    expect(r.start(next)).toBe("started");
  });

  it("gives up a build's slot while it uploads big outputs, says so, and keeps at most maxBuilds uploads on the side", async () => {
    const gates: (() => void)[] = [];
    const executor = {
      async run(a: AssignmentSpec, ctx: import("./executor.js").ExecutorContext) {
        ctx.onBuilt?.(2 << 20); // the builder is done; 2 MiB upload, waiting for its gate
        await new Promise<void>((r) => gates.push(r));
        return { lease: a.lease, outcome: "succeeded" as const, outputs: [], durationMs: 1, peakMemoryBytes: 0, cores: 1, error: "" };
      },
    };
    const r = new BuildRunner(executor, 1, logger);
    r.setCache({ cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey });
    const built: string[] = [];
    const results: string[] = [];
    r.attach({ log: () => {}, built: (l) => built.push(l.drvPath), result: (rep) => results.push(rep.lease.drvPath) });
    expect(r.start(spec(1))).toBe("started");
    expect(built).toEqual([spec(1).lease.drvPath]);
    expect(r.busyLeases()).toEqual([]);
    expect(r.leases()).toEqual([spec(1).lease]); // still its lease: named in a join, its result to come
    expect(r.start(spec(2))).toBe("started"); // beside the upload
    expect(built).toEqual([spec(1).lease.drvPath]); // one upload on the side already: b2 keeps its slot
    expect(r.start(spec(3))).toBe("full");
    gates.shift()!();
    await new Promise((res) => setTimeout(res, 10));
    expect(results).toEqual([spec(1).lease.drvPath]);
    gates.shift()!();
    expect(await r.idle(5000)).toBe(true);
    expect(results).toEqual([spec(1).lease.drvPath, spec(2).lease.drvPath]);
  });

  it("keeps a build's slot until its result when its outputs are smaller than the runner's threshold", async () => {
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const executor = {
      async run(a: AssignmentSpec, ctx: import("./executor.js").ExecutorContext) {
        ctx.onBuilt?.(1000);
        await gate;
        return { lease: a.lease, outcome: "succeeded" as const, outputs: [], durationMs: 1, peakMemoryBytes: 0, cores: 1, error: "" };
      },
    };
    const r = new BuildRunner(executor, 1, logger, undefined, 1001);
    r.setCache({ cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey });
    const built: string[] = [];
    r.attach({ log: () => {}, built: (l) => built.push(l.drvPath), result: () => {} });
    expect(r.start(spec(4))).toBe("started");
    expect(r.start(spec(5))).toBe("full");
    release();
    expect(await r.idle(5000)).toBe(true);
    expect(built).toEqual([]);
  });

  it("says what holds its slots when it declines for being full", () => {
    const busy = [{ drvPath: "/tmp/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello.drv", epoch: 4 }];
    expect(declineReason("full", busy)).toBe("worker is already running its maximum number of builds (1): aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello.drv (epoch 4)");
    expect(declineReason("draining", [])).toBe("worker is draining");
    expect(declineReason("started", busy)).toBeNull();
    expect(declineReason("adopted", busy)).toBeNull();
  });

  it("names finished builds whose result is not acknowledged in the join, until acknowledged", async () => {
    const r = runner({ b3: 10 });
    r.start(spec(3));
    await r.idle(5000);
    expect(r.leases()).toEqual([]);
    expect(r.joinLeases()).toEqual([spec(3).lease]);
    r.ack(spec(3).lease);
    expect(r.joinLeases()).toEqual([]);
  });

  it("on drain hands back what would outlast the deadline and keeps the rest", async () => {
    const r = runner({ b4: 60_000, b5: 60_000, b6: 60_000 }, 3);
    r.start(spec(4, 120_000));
    r.start(spec(5, 1000));
    r.start(spec(6));
    const now = Date.now();
    expect(r.beginDrain(now, now + 30_000, "SIGTERM")).toEqual({ kept: [spec(5).lease, spec(6).lease], handedBack: [spec(4).lease] });
    expect(r.start(spec(7))).toBe("draining");
    expect(r.handBackAll("deadline")).toEqual([spec(5).lease, spec(6).lease]);
    expect(await r.idle(5000)).toBe(true);
    expect(r.unackedResults()).toEqual([]); // handed-back builds report nothing
  });
});
