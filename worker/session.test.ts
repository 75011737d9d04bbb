// The worker's gRPC side against a real gRPC server (scripted coordinator) and a
// real cache server; builds run through the FakeExecutor, so uploads are real.
import { credentials, status } from "@grpc/grpc-js";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startTestCache, type TestCache } from "../test/fixtures/cache-server.js";
import { BuildStatus, WorkerServiceClient, type Assignment } from "../proto/gen/farm.js";
import { BuildRunner } from "./build-runner.js";
import { FakeExecutor, singleFileNar } from "./fake-executor.js";
import { HashCounter } from "../proto/nix/mod.js";
import { connectLoop } from "./reconnect.js";
import { runOnce, type SessionOptions } from "./session.js";
import { FakeCoordinator, type FakeStream } from "./testing/fake-coordinator.js";
import { PROTOCOL_VERSION } from "../proto/convert/mod.js";

const STORE = "/tmp/nix/store";
const H = "0123456789abcdfghijklmnpqrsvwxyz"; // a valid 32-char nix32 hash part
const TOKEN = "worker-token-0123456789";
const logger = pino({ level: "silent" });

let cache: TestCache;
let coord: FakeCoordinator;
let client: WorkerServiceClient;
let drain: AbortController;

beforeAll(async () => {
  cache = await startTestCache(STORE);
});
afterAll(async () => {
  await cache?.close();
});
afterEach(() => {
  drain?.abort();
  client?.close();
  coord?.stop();
});

async function setup(durations: Record<string, number> = {}, token = TOKEN) {
  coord = await new FakeCoordinator(TOKEN).start();
  client = new WorkerServiceClient(coord.address, credentials.createInsecure());
  drain = new AbortController();
  const executor = new FakeExecutor({ model: { durations, defaultMs: 20 }, makeCache: () => cache.client(), logger });
  const reports: string[] = [];
  // Every upload beside the next build (the fake's outputs are tiny), so the stream carries BuildStepDone.
  const runner = new BuildRunner(executor, 2, logger, (r) => reports.push(r.outcome), 0);
  const opts: SessionOptions = {
    client,
    token,
    runner,
    logger,
    drain: drain.signal,
    info: () => ({ workerId: "w-test", softwareVersion: "9.9", systems: ["x86_64-linux"], features: [], cores: 2, memoryBytes: 1 << 30, freeDiskBytes: 5 << 20, storeDir: STORE, uptimeSeconds: 42, maxLifetimeSeconds: 3600, maxBuilds: 2 }),
    vitals: () => ({ freeMemoryBytes: 123 << 20, freeDiskBytes: 456 << 20, uptimeSeconds: 43 }),
    drainGraceMs: 500,
  };
  return { runner, opts, reports };
}

function welcome(s: FakeStream, extra: { abort?: { drvPath: string; epoch: number }[] } = {}) {
  s.send({ $case: "welcome", value: { protocolVersion: PROTOCOL_VERSION, sessionId: "sess", cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey, heartbeatIntervalMs: 100, abort: extra.abort ?? [] } });
}

function assignment(name: string, epoch = 1, estimatedDurationMs = 0): Assignment {
  const hash = H.slice(name.length) + H.slice(0, name.length);
  return {
    lease: { drvPath: `${STORE}/${hash}-${name}.drv`, epoch },
    outputs: { out: `${STORE}/${hash.split("").reverse().join("")}-${name}` },
    inputPaths: [],
    cores: 2,
    memoryLimitBytes: 1 << 28,
    timeoutMs: 0,
    name,
    estimatedDurationMs,
    uploadCredential: "",
  };
}

describe("runOnce", () => {
  it("joins, heartbeats, runs an assignment, streams its log and reports its outputs, a small one's NAR inline", async () => {
    const { opts } = await setup({ hello: 50 });
    const ended = runOnce(opts);
    const s = await coord.stream(0);
    const join = await s.next("join");
    expect(join).toMatchObject({ protocolVersion: PROTOCOL_VERSION, workerId: "w-test", storeDir: STORE, cores: 2, maxBuilds: 2, running: [], maxLifetimeSeconds: 3600 });
    welcome(s);
    const hb = await s.next("heartbeat");
    expect(hb).toMatchObject({ freeMemoryBytes: 123 << 20, freeDiskBytes: 456 << 20, uptimeSeconds: 43, running: [] });

    const a = assignment("hello");
    s.send({ $case: "assign", value: a });
    const log = await s.next("log");
    expect(log.lease).toEqual(a.lease);
    expect(log.lines.join("\n")).toContain("building hello");
    expect((await s.next("built")).lease).toEqual(a.lease); // its builder is done; the upload comes next
    const result = await s.next("result");
    expect(result.status).toBe(BuildStatus.BUILD_STATUS_SUCCEEDED);
    expect(result.lease).toEqual(a.lease);
    expect(result.outputs).toHaveLength(1);
    expect(result.outputs[0].nar.equals(singleFileNar(`fake output ${a.outputs.out}\n`))).toBe(true);
    const counter = new HashCounter();
    counter.update(result.outputs[0].nar);
    expect(counter.result()).toEqual({ hash: result.outputs[0].narHash, size: result.outputs[0].narSize });

    s.close();
    expect(await ended).toMatchObject({ kind: "closed", welcomed: true });
  });

  it("reports running builds and their memory in heartbeats, and aborts on Abort", async () => {
    const { opts } = await setup({ slow: 60_000 });
    const ended = runOnce(opts);
    const s = await coord.stream(0);
    await s.next("join");
    welcome(s);
    const a = assignment("slow", 3);
    s.send({ $case: "assign", value: a });
    for (;;) {
      const hb = await s.next("heartbeat");
      if (hb.running.length) {
        expect(hb.running).toEqual([a.lease]);
        expect(hb.usage[0].memoryBytes).toBeGreaterThan(0);
        break;
      }
    }
    s.send({ $case: "abort", value: { lease: a.lease, reason: "cancelled by user" } });
    const result = await s.next("result");
    expect(result.status).toBe(BuildStatus.BUILD_STATUS_ABORTED);
    expect(result.error).toContain("cancelled by user");
    s.close();
    await ended;
  });

  it("ends with 'auth' when the token is refused", async () => {
    const { opts } = await setup({}, "wrong-token-0123456789");
    const end = await runOnce(opts);
    expect(end.kind).toBe("auth");
    expect(end.message).toContain("UNAUTHENTICATED");
  });

  it("on drain hands back at once a build expected to outlast the deadline, lets a short one finish, then ends", async () => {
    const { opts, runner } = await setup({ slow: 60_000, shortbuild: 400 });
    const deadline = Date.now() + 20_000; // far past the short build, however loaded the machine
    const ended = runOnce({ ...opts, drainDeadline: () => deadline });
    const s = await coord.stream(0);
    await s.next("join");
    welcome(s);
    const slow = assignment("slow", 5, 60_000);
    const short = assignment("shortbuild", 6); // no estimate: the deadline decides
    s.send({ $case: "assign", value: slow });
    s.send({ $case: "assign", value: short });
    await s.next("heartbeat");
    drain.abort("SIGTERM");
    const notice = await s.next("drain");
    expect(notice.handedBack).toEqual([slow.lease]);
    expect(notice.deadlineUnixMs).toBe(deadline);
    expect(notice.reason).toContain("SIGTERM");
    const result = await s.next("result");
    expect(result.lease).toEqual(short.lease);
    expect(result.error).toBe("");
    expect(result.status).toBe(BuildStatus.BUILD_STATUS_SUCCEEDED);
    s.send({ $case: "resultAck", value: { lease: short.lease, accepted: true, reason: "" } });
    expect((await ended).kind).toBe("drained");
    expect(Date.now()).toBeLessThan(deadline);
    expect(await runner.idle(5000)).toBe(true);
    expect(s.all("result")).toEqual([]); // nothing for the handed-back build
  });

  it("on drain hands back at the deadline a build with no estimate that is still running", async () => {
    const { opts } = await setup({ long: 60_000 });
    const deadline = Date.now() + 600;
    const ended = runOnce({ ...opts, drainDeadline: () => deadline });
    const s = await coord.stream(0);
    await s.next("join");
    welcome(s);
    const long = assignment("long", 2);
    s.send({ $case: "assign", value: long });
    await s.next("log");
    drain.abort("SIGTERM");
    expect((await s.next("drain")).handedBack).toEqual([]);
    const late = await s.next("drain");
    expect(late.handedBack).toEqual([long.lease]);
    expect(Date.now()).toBeGreaterThanOrEqual(deadline);
    expect((await ended).kind).toBe("drained");
    expect(s.all("result")).toEqual([]);
  });

  it("a drain that starts before Welcome sends its notice once welcomed", async () => {
    const { opts } = await setup({ x: 10 });
    drain.abort("end of the machine's lifetime");
    const ended = runOnce({ ...opts, drainDeadline: () => Date.now() + 1000 });
    const s = await coord.stream(0);
    await s.next("join");
    welcome(s);
    const notice = await s.next("drain");
    expect(notice.handedBack).toEqual([]);
    expect(notice.reason).toContain("lifetime");
    expect((await ended).kind).toBe("drained");
  });

  it("declines assignments beyond maxBuilds, naming what it runs, and sends a heartbeat right after", async () => {
    const { opts } = await setup({ a: 60_000, b: 60_000, c: 60_000 });
    const ended = runOnce({ ...opts, heartbeatIntervalMs: 60_000 }); // no periodic heartbeat during the test
    const s = await coord.stream(0);
    await s.next("join");
    welcome(s);
    await s.next("heartbeat");
    for (const n of ["a", "b", "c"]) s.send({ $case: "assign", value: assignment(n) });
    const result = await s.next("result");
    expect(result.lease).toEqual(assignment("c").lease);
    expect(result.status).toBe(BuildStatus.BUILD_STATUS_DECLINED);
    expect(result.error).toMatch(/maximum number of builds \(2\): .*-a\.drv \(epoch 1\), .*-b\.drv \(epoch 1\)/);
    // The coordinator gives no work until a heartbeat tells it what runs here: one follows at once.
    const hb = await s.next("heartbeat");
    expect(hb.running).toEqual([assignment("a").lease, assignment("b").lease]);
    drain.abort();
    await ended;
  });
});

describe("reconnecting", () => {
  it("keeps building across a lost connection, reports the build as running on rejoin, and delivers its result there", async () => {
    const { opts } = await setup({ long: 1500 });
    const loop = connectLoop(() => runOnce(opts), { logger, stop: new AbortController().signal, backoff: { minMs: 50, maxMs: 200, factor: 2 } });
    const s1 = await coord.stream(0);
    await s1.next("join");
    welcome(s1);
    const a = assignment("long", 9);
    s1.send({ $case: "assign", value: a });
    await s1.next("log");
    s1.fail(status.UNAVAILABLE, "coordinator restarting");

    const s2 = await coord.stream(1);
    const join = await s2.next("join");
    expect(join.running).toEqual([a.lease]); // so the coordinator can adopt it
    welcome(s2);
    const result = await s2.next("result");
    expect(result.status).toBe(BuildStatus.BUILD_STATUS_SUCCEEDED);
    expect(result.lease).toEqual(a.lease);
    s2.send({ $case: "resultAck", value: { lease: a.lease, accepted: true, reason: "" } });
    drain.abort();
    expect(await loop).toEqual({ kind: "drained" });
  });

  it("aborts builds the coordinator lists in Welcome.abort", async () => {
    const { opts } = await setup({ stale: 60_000 });
    const first = runOnce(opts);
    const s1 = await coord.stream(0);
    await s1.next("join");
    welcome(s1);
    const a = assignment("stale", 2);
    s1.send({ $case: "assign", value: a });
    await s1.next("log");
    s1.fail(status.UNAVAILABLE, "gone");
    expect((await first).kind).toBe("error");

    const second = runOnce(opts);
    const s2 = await coord.stream(1);
    expect((await s2.next("join")).running).toEqual([a.lease]);
    welcome(s2, { abort: [a.lease!] });
    const result = await s2.next("result");
    expect(result.status).toBe(BuildStatus.BUILD_STATUS_ABORTED);
    s2.close();
    await second;
  });

  it("resends a result the coordinator may not have processed, but not one a ResultAck confirmed", async () => {
    const { opts } = await setup({ quick: 10 });
    const first = runOnce(opts);
    const s1 = await coord.stream(0);
    await s1.next("join");
    welcome(s1);
    const a = assignment("quick", 4);
    s1.send({ $case: "assign", value: a });
    await s1.next("result");
    s1.fail(status.UNAVAILABLE, "lost before acking");
    await first;

    const second = runOnce(opts);
    const s2 = await coord.stream(1);
    // Still ours until acknowledged: named in the join so a restarted coordinator adopts it, not requeues it.
    expect((await s2.next("join")).running).toEqual([a.lease]);
    welcome(s2);
    expect((await s2.next("result")).lease).toEqual(a.lease); // resent
    await s2.next("heartbeat");
    s2.send({ $case: "heartbeatAck", value: { deadlineUnixMs: Date.now() + 10_000 } });
    s2.send({ $case: "resultAck", value: { lease: a.lease, accepted: true, reason: "" } });
    await new Promise((r) => setTimeout(r, 100));
    s2.close();
    await second;

    const third = runOnce(opts);
    const s3 = await coord.stream(2);
    expect((await s3.next("join")).running).toEqual([]);
    welcome(s3);
    await s3.next("heartbeat");
    expect(s3.all("result")).toEqual([]);
    s3.close();
    await third;
  });

  it("treats the connection as lost when no HeartbeatAck comes by the coordinator's deadline", async () => {
    const { opts } = await setup();
    const ended = runOnce(opts);
    const s = await coord.stream(0);
    await s.next("join");
    welcome(s);
    await s.next("heartbeat");
    s.send({ $case: "heartbeatAck", value: { deadlineUnixMs: Date.now() + 300 } });
    expect(await ended).toMatchObject({ kind: "error", welcomed: true, message: "no HeartbeatAck by the coordinator's deadline" });
  });

  it("stops at once, without retrying, when the token is refused", async () => {
    const { opts } = await setup({}, "wrong-token-0123456789");
    let attempts = 0;
    const end = await connectLoop(
      () => {
        attempts++;
        return runOnce(opts);
      },
      { logger, stop: new AbortController().signal, backoff: { minMs: 10, maxMs: 20, factor: 2 } },
    );
    expect(end.kind).toBe("auth");
    expect(attempts).toBe(1);
  });

  it("retries with backoff while the coordinator is unreachable", async () => {
    const { opts } = await setup();
    coord.stop(); // nothing listens any more
    const stop = new AbortController();
    let attempts = 0;
    const loop = connectLoop(
      () => {
        attempts++;
        if (attempts === 3) stop.abort();
        return runOnce(opts);
      },
      { logger, stop: stop.signal, backoff: { minMs: 10, maxMs: 40, factor: 2 } },
    );
    expect(await loop).toEqual({ kind: "stopped" });
    expect(attempts).toBe(3);
  });
});
