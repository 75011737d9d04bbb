// Hostile input against a real farm (real gRPC, NATS, Nix) while a healthy job
// (the demo DAG plus slow sleepers) builds beside it and must still succeed:
// forged and revoked tokens, replayed stale and foreign leases, malformed
// protobuf, hostile NARs, a log flood, the same 100k-node DAG submitted twice at
// once, and oversized messages. Measurements are printed as "hostile-measure".
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { FarmCluster, REPO } from "../harness/cluster.js";
import { waitFor } from "../harness/ports.js";
import { narFromTree } from "../../proto/nix/testing/nar-fixtures.js";
import { syntheticDag } from "../../coordinator/cli/dag/mod.js";
import { nodeToWire } from "../../proto/convert/mod.js";
import { submitInPieces } from "../../coordinator/cli/rpc.js";
import type { Lease } from "../../proto/gen/farm.js";
import { BuildStatus, FakeWorker, joinMessage } from "./fake-worker.js";
import { farmClient, grpcFrame, newToken, rawGrpc, rssBytes, writeTokens } from "./support.js";

const JOBS = path.join(REPO, "test/hostile/hostile.nix");
const NIX32 = "0123456789abcdfghijklmnpqrsvwxyz";
const T = { w1: newToken("w1"), w2: newToken("w2"), victim: newToken("victim"), idle: newToken("idle"), inflight: newToken("inflight"), flooder: newToken("flooder"), replayer: newToken("replayer"), cli: newToken("cli") };
type Name = keyof typeof T;

let farm: FarmCluster;
let dir: string;
let tokensFile: string;
let admin: ReturnType<typeof farmClient>;
let healthy: Promise<{ code: number; stdout: string; stderr: string }>;
let healthyJobId = "";
let victimLease: { drvPath: string; epoch: number };
const measured: Record<string, number> = {};
const HEARTBEAT_TIMEOUT_MS = 10_000;

const tokenLines = (revoked: Name[] = []) => (Object.keys(T) as Name[]).filter((n) => !revoked.includes(n)).map((n) => [n === "cli" ? "cli" : "worker", n, T[n]] as [string, string, string]);
const addr = () => farm.coordinatorAddress;
const workers = async () => (await admin.call(admin.client.listWorkers, {})).workers;
const drvRow = async (jobId: string, drvPath: string) => (await admin.call(admin.client.getJob, { jobId, derivations: true })).derivations.find((d) => d.drvPath === drvPath)!;
const coordinatorUp = async () => (await admin.call(admin.client.listJobs, {}, 10_000)).jobs.length;
const randomHash = () => Array.from({ length: 32 }, () => NIX32[Math.floor(Math.random() * 32)]).join("");
const logRecords = (msg: string) => farm.coordinatorLog().split("\n").filter((l) => l.includes(`"msg":"${msg}"`)).map((l) => JSON.parse(l));
const putNar = (token: string, hash: string, nar: Buffer, headers: Record<string, string> = {}) =>
  fetch(`${farm.cacheUrl}/upload/${hash}`, { method: "PUT", headers: { authorization: `Bearer ${token}`, "x-nix-store-path": `/tmp/nix/store/${hash}-hostile`, "x-nix-references": "", ...headers }, body: new Uint8Array(nar) });
const submitQuiet = async (attr: string) => {
  const r = await farm.cli(["submit", `${JOBS}#${attr}`, "--json"], { env: { FARM_TOKEN: T.cli } });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout).jobId as string;
};

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "farm-hostile-"));
  tokensFile = path.join(dir, "tokens");
  writeTokens(tokensFile, tokenLines());
  farm = await FarmCluster.start({ workers: [], heartbeatTimeout: `${HEARTBEAT_TIMEOUT_MS}ms`, coordinatorEnv: { FARM_TOKENS_FILE: tokensFile, FARM_MAX_MESSAGE_BYTES: "96M", FARM_TRUST_SUBMITTED_NODES: "1" } }); // the synthetic 100k DAG has no .drv files; owners.test.ts checks nodes against them
  for (const name of ["w1", "w2", "victim"] as const) farm.startWorker({ name, env: { FARM_TOKEN: T[name] } });
  await farm.waitForWorkers(3);
  admin = farmClient(addr(), farm.token);
  // Its own submitter store: evaluations running at once in one Nix store can meet a busy SQLite database.
  healthy = farm.cli(["submit", `${JOBS}#healthy`, "--follow", "--json"], { env: { FARM_TOKEN: T.cli }, nixDir: path.join(farm.root, "healthy-submitter", "nix") });
}, 180_000);

afterAll(async () => {
  console.log("hostile-measure", JSON.stringify(measured));
  admin?.close();
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("a farm under hostile input keeps building", () => {
  it("the healthy job runs on the real workers, the victim among them", async () => {
    await waitFor("the victim building", async () => (await workers()).find((w) => w.workerId === "victim")?.running[0], 120_000, 200);
    healthyJobId = (await admin.call(admin.client.listJobs, {})).jobs.find((j) => j.description.endsWith("#healthy"))!.jobId;
    expect(healthyJobId).toMatch(/^j-\d{8}-[0-9a-f]{8}$/);
  }, 150_000);

  it("refuses forged tokens: gRPC UNAUTHENTICATED, cache 403", async () => {
    const forged = newToken("forged");
    const fake = new FakeWorker(addr(), forged);
    expect((await fake.ended).code).toBe(status.UNAUTHENTICATED);
    fake.close();
    const cli = farmClient(addr(), forged);
    await expect(cli.call(cli.client.listJobs, {})).rejects.toMatchObject({ code: status.UNAUTHENTICATED });
    cli.close();
    const nar = narFromTree({ file: "forged\n" });
    expect((await putNar(forged, randomHash(), nar)).status).toBe(403);
    expect((await putNar(T.cli.slice(0, 10), randomHash(), nar)).status).toBe(403);
  });

  it("revocation cuts open streams within a heartbeat, requeues at once, rejects the in-flight result, refuses reconnects and uploads", async () => {
    let held: Lease[] = [];
    const inflight = new FakeWorker(addr(), T.inflight);
    await inflight.join("inflight", { systems: ["hostile-inflight"] });
    inflight.keepAlive(1000, () => held);
    const idle = new FakeWorker(addr(), T.idle);
    await idle.join("idle"); // and then silent: only the registry's notice can cut it
    const inflightJob = await submitQuiet("inflight");
    const lease = (await inflight.assignment()).lease!;
    held = [lease];
    // Revoke while the victim runs a 12 s sleeper, so it surely has a build to lose.
    const victimRow = await waitFor("the victim running a sleeper", async () => (await workers()).find((w) => w.workerId === "victim")?.running.find((r) => r.name.startsWith("hostile-sleeper")), 120_000, 100);
    victimLease = { drvPath: victimRow.drvPath, epoch: victimRow.epoch };

    const revokedAt = Date.now();
    writeTokens(tokensFile, tokenLines(["victim", "idle", "inflight"]));
    inflight.result(lease, BuildStatus.BUILD_STATUS_SUCCEEDED);
    const [idleEnd, inflightEnd] = await Promise.all([idle.ended, inflight.ended]);
    measured.idleStreamCutMs = idleEnd.atMs - revokedAt;
    expect(idleEnd.code).toBe(status.UNAUTHENTICATED);
    // Cut by the revocation (UNAUTHENTICATED), not by a silence timeout; the time is reported, not judged.
    // (The log line may land a moment after the client saw its stream end.)
    const revokedLines = () => [...logRecords("worker token revoked; closing stream"), ...logRecords("worker token revoked; worker dropped")];
    await waitFor("the revocation logged", () => revokedLines().some((r) => r.worker === "idle"), 10_000, 100);
    expect(inflightEnd.code).toBe(status.UNAUTHENTICATED);
    expect(inflight.received.some((m) => m.msg?.$case === "resultAck")).toBe(false);

    const lostAt = await waitFor("the victim dropped", async () => ((await workers()).find((w) => w.workerId === "victim")?.state === "lost" ? Date.now() : 0), 30_000, 100);
    measured.victimDroppedMs = lostAt - revokedAt;
    // Dropped for its revoked token, not after the heartbeat timeout (the one other way to be lost).
    await waitFor("the victim's revocation logged", () => logRecords("worker token revoked; worker dropped").some((r) => r.worker === "victim"), 10_000, 100);
    expect(await Promise.race([farm.workers.get("victim")!.exited, new Promise((r) => setTimeout(() => r("running"), 30_000))])).toBe(3);
    expect(farm.workerLog("victim")).toMatch(/refused this worker's token/);
    expect((await drvRow(healthyJobId, victimLease.drvPath)).epoch).toBeGreaterThan(victimLease.epoch);

    // The in-flight result never reached the scheduler; the derivation waits for a new holder.
    expect(logRecords("build reported").filter((r) => r.worker === "inflight")).toEqual([]);
    expect(await drvRow(inflightJob, lease.drvPath)).toMatchObject({ state: "ready", epoch: lease.epoch + 1 });
    const again = new FakeWorker(addr(), T.inflight);
    expect((await again.ended).code).toBe(status.UNAUTHENTICATED);
    for (const f of [again, idle, inflight]) f.close();
    expect((await putNar(T.victim, randomHash(), narFromTree({ file: "revoked\n" }))).status).toBe(403);
    await admin.call(admin.client.cancelJob, { jobId: inflightJob });
  }, 240_000);

  it("rejects replayed stale leases and other workers' leases, changing nothing", async () => {
    const r = new FakeWorker(addr(), T.replayer);
    await r.join("replayer");
    r.result(victimLease, BuildStatus.BUILD_STATUS_SUCCEEDED);
    expect(await r.ack(victimLease)).toMatchObject({ accepted: false });
    const theirs = await waitFor("a build on w1 or w2", async () => (await workers()).find((w) => ["w1", "w2"].includes(w.workerId) && w.running.length)?.running[0], 60_000);
    const since = r.received.length;
    r.result({ drvPath: theirs.drvPath, epoch: theirs.epoch }, BuildStatus.BUILD_STATUS_SUCCEEDED);
    expect(await r.ack({ drvPath: theirs.drvPath, epoch: theirs.epoch }, since)).toMatchObject({ accepted: false, reason: expect.stringMatching(/another worker|not building/) });
    const after = await drvRow(healthyJobId, theirs.drvPath);
    expect(after.epoch).toBe(theirs.epoch);
    expect(["building", "done"]).toContain(after.state);
    expect(logRecords("result rejected").filter((l) => l.worker === "replayer")).toHaveLength(2);
    r.close();
  }, 90_000);

  it("answers malformed protobuf and bad joins with clear errors and stays up", async () => {
    const connect = "/farm.v1.WorkerService/Connect";
    const badProto = await rawGrpc(farm.grpcPort, connect, farm.token, grpcFrame(Buffer.from("ffffffffffffffffffffff", "hex")));
    const unframed = await rawGrpc(farm.grpcPort, connect, farm.token, Buffer.from("this is not gRPC at all, just bytes on the method path"));
    const badSubmit = await rawGrpc(farm.grpcPort, "/farm.v1.FarmService/Submit", farm.token, grpcFrame(Buffer.from("0aff", "hex")));
    expect(badProto).toMatchObject({ grpcStatus: status.INTERNAL, grpcMessage: expect.stringMatching(/deserializing/) });
    expect(badSubmit).toMatchObject({ grpcStatus: status.INTERNAL, grpcMessage: expect.stringMatching(/deserializing/) });
    // Its first bytes read as a 1.7 GB length prefix: refused before anything is buffered.
    expect(unframed).toMatchObject({ grpcStatus: status.RESOURCE_EXHAUSTED, grpcMessage: expect.stringMatching(/larger than max/) });
    const ends: Record<string, { code: number; details: string }> = {};
    const tryStream = async (what: string, send: (f: FakeWorker) => void) => {
      const f = new FakeWorker(addr(), T.replayer);
      send(f);
      ends[what] = await f.ended;
      f.close();
    };
    await tryStream("empty", (f) => f.send({ msg: undefined }));
    await tryStream("bad id", (f) => f.send(joinMessage("../../etc/passwd")));
    await tryStream("protocol", (f) => f.send(joinMessage("hostile", { protocolVersion: 999 })));
    await tryStream("no join", (f) => f.send({ msg: { $case: "heartbeat", value: { freeMemoryBytes: 0, freeDiskBytes: 0, uptimeSeconds: 0, running: [], usage: [] } } }));
    expect(ends.empty).toMatchObject({ code: status.INVALID_ARGUMENT, details: "empty worker message" });
    expect(ends["bad id"]).toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/bad worker id/) });
    expect(ends.protocol).toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/protocol 999/) });
    expect(ends["no join"]).toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/expected a join first/) });
    await expect(coordinatorUp()).resolves.toBeTypeOf("number");
    expect((await workers()).map((w) => w.workerId)).not.toContain("../../etc/passwd");
  }, 60_000);

  it("refuses NARs with '..', '/' or NUL names, a wrong NarHash, or truncation: 400, one line, nothing stored", async () => {
    const good = narFromTree({ dir: [["bin", { dir: [["x", { file: "#!/bin/sh\n", executable: true }]] }]] });
    const cases: [string, Buffer, Record<string, string>?][] = [
      ["dot-dot", narFromTree({ dir: [["..", { file: "escape" }]] })],
      ["dot", narFromTree({ dir: [[".", { file: "self" }]] })],
      ["slash", narFromTree({ dir: [["etc/passwd", { file: "root::0:0" }]] })],
      ["nul", narFromTree({ dir: [[Buffer.from("a\0b"), { file: "nul" }]] })],
      ["wrong hash", good, { "x-nix-nar-hash": `sha256:${"0".repeat(52)}` }],
      ["truncated", good.subarray(0, good.length - 20)],
    ];
    for (const [what, nar, headers] of cases) {
      const hash = randomHash();
      const res = await putNar(T.cli, hash, nar, headers); // a submitter's upload: the NAR is checked before anything else
      const body = await res.text();
      expect(res.status, `${what}: ${body}`).toBe(400);
      expect(body.trim().split("\n"), what).toHaveLength(1);
      expect((await fetch(`${farm.cacheUrl}/${hash}.narinfo`)).status, what).toBe(404);
    }
    const tmp = path.join(farm.dataDir, "cache", ".tmp");
    await waitFor("no staged upload left behind", () => readdirSync(tmp).length === 0, 10_000);
  }, 60_000);
});

describe("floods and giant requests", () => {
  it("caps a 100k-line log flood per build, drops logs for leases the worker does not hold, stays small and responsive", async () => {
    const f = new FakeWorker(addr(), T.flooder);
    await f.join("flooder", { systems: ["hostile-flood"] });
    let held: Lease[] = [];
    f.keepAlive(1000, () => held);
    const floodJob = await submitQuiet("flood");
    const first = (await f.assignment()).lease!;
    held = [first];
    // Hand it back (transient) so it returns with a new epoch, then replay the old epoch's result.
    f.result(first, BuildStatus.BUILD_STATUS_WORKER_ERROR, "hostile: again");
    expect((await f.ack(first)).accepted).toBe(true);
    const lease = (await f.next("assign", (a) => a.lease!.epoch > first.epoch, 30_000)).lease!;
    held = [lease];
    const since = f.received.length;
    f.result(first, BuildStatus.BUILD_STATUS_SUCCEEDED);
    expect(await f.ack(first, since)).toMatchObject({ accepted: false, reason: `stale lease: epoch ${first.epoch}, current is ${lease.epoch}` });
    expect(await drvRow(floodJob, lease.drvPath)).toMatchObject({ state: "building", epoch: lease.epoch, workerId: "flooder" });

    const pid = farm.coordinator!.pid!;
    const rssBefore = rssBytes(pid);
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssBytes(pid))), 50);
    let slowestCallMs = 0;
    let flooding = true;
    const prober = (async () => {
      while (flooding) {
        const t = Date.now();
        await coordinatorUp();
        slowestCallMs = Math.max(slowestCallMs, Date.now() - t);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const started = Date.now();
    const line = (i: number) => `flood line ${i} `.padEnd(500, "x");
    for (let m = 0; m < 100; m++) await f.write({ msg: { $case: "log", value: { lease, lines: Array.from({ length: 1000 }, (_, i) => line(m * 1000 + i)) } } });
    const bigLine = "y".repeat(1000);
    for (let m = 0; m < 200; m++) {
      const madeUp = { drvPath: `/tmp/nix/store/${randomHash()}-made-up.drv`, epoch: 1 };
      await f.write({ msg: { $case: "log", value: { lease: madeUp, lines: Array.from({ length: 1000 }, () => bigLine) } } });
    }
    const ackSince = f.received.length;
    f.result(lease, BuildStatus.BUILD_STATUS_FAILED, "flooded on purpose");
    expect((await f.ack(lease, ackSince, 60_000)).accepted).toBe(true);
    measured.floodMs = Date.now() - started;
    flooding = false;
    await prober;
    clearInterval(sampler);
    Object.assign(measured, { floodRssBeforeMB: Math.round(rssBefore / 2 ** 20), floodRssPeakMB: Math.round(rssPeak / 2 ** 20), floodSlowestCallMs: slowestCallMs });
    // 50 MB for the real lease and 200 MB for made-up ones went in; at most 4 MB per build is kept.
    expect(rssPeak - rssBefore).toBeLessThan(120 * 2 ** 20);
    // Past the heartbeat timeout a stall would cost healthy workers their leases; none may be lost.
    expect(slowestCallMs).toBeLessThan(HEARTBEAT_TIMEOUT_MS);
    const healthyWorkers = (await workers()).filter((w) => ["w1", "w2"].includes(w.workerId));
    expect(healthyWorkers.map((w) => `${w.workerId} ${w.state}`).sort()).toEqual(["w1 active", "w2 active"]);

    const log = await farm.cli(["logs", lease.drvPath], { env: { FARM_TOKEN: T.cli } });
    expect(log.code, log.stderr).toBe(0);
    const lines = log.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe(line(0));
    expect(lines.at(-1)).toMatch(/^\[farm: \d+ more log lines dropped: the log exceeded 4194304 bytes\]$/);
    expect(log.stdout.length).toBeLessThan(4.2 * 2 ** 20);
    expect(log.stdout).not.toContain(bigLine);
    f.close();
  }, 240_000);

  it("takes the same 100,000-node DAG submitted twice at once (one Submit, one SubmitStream in pieces): two jobs, shared derivations", async () => {
    const nodes = syntheticDag({ nodes: 100_000, seed: 42, storeDir: "/tmp/nix/store" }).map((n) => ({ ...n, system: "hostile-synthetic" }));
    const used = new Set(nodes.flatMap((n) => n.inputDrvs.map((i) => i.drvPath)));
    const roots = nodes.filter((n) => !used.has(n.drvPath)).map((n) => n.drvPath);
    const wire = nodes.map(nodeToWire);
    const pid = farm.coordinator!.pid!;
    let rssPeak = 0;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssBytes(pid))), 100);
    const started = Date.now();
    const request = (key: string) => ({ nodes: wire, roots, description: `hostile 100k ${key}`, idempotencyKey: key, noPublish: true, source: "" });
    const [a, b] = await Promise.all([
      admin.call(admin.client.submit, request("copy-a"), 600_000),
      submitInPieces(admin.client, { coordinator: addr(), token: farm.token, timeout: 600_000 }, request("copy-b")),
    ]);
    measured.submit100kTwiceMs = Date.now() - started;
    clearInterval(sampler);
    measured.submit100kRssPeakMB = Math.round(rssPeak / 2 ** 20);
    for (const r of [a, b]) {
      expect(r.jobId).toMatch(/^j-\d{8}-[0-9a-f]{8}$/);
      expect(r.existing).toBe(false);
      expect(r.status!.counts!.total).toBe(100_000);
    }
    expect(a.jobId).not.toBe(b.jobId);
    const metrics = await (await fetch(`http://127.0.0.1:${farm.metricsPort}/metrics`)).text();
    const known = [...metrics.matchAll(/^tmpnix_derivations\{state="[a-z-]+"\} (\d+)$/gm)].reduce((s, m) => s + Number(m[1]), 0);
    expect(known).toBeGreaterThanOrEqual(100_000);
    expect(known).toBeLessThan(100_100); // shared, not 200k
    const t = Date.now();
    for (const r of [a, b]) expect((await admin.call(admin.client.cancelJob, { jobId: r.jobId }, 120_000)).state).toBe("cancelled");
    measured.cancel100kTwiceMs = Date.now() - t;
  }, 600_000);

  it("answers messages over the size limit with RESOURCE_EXHAUSTED and stays up", async () => {
    const big = "z".repeat(100 * 2 ** 20);
    await expect(admin.call(admin.client.submit, { nodes: [], roots: [], description: big, idempotencyKey: "big", noPublish: true, source: "" })).rejects.toMatchObject({ code: status.RESOURCE_EXHAUSTED });
    const f = new FakeWorker(addr(), T.replayer);
    await f.join("replayer"); // a worker token joins only under its own name
    f.send({ msg: { $case: "log", value: { lease: { drvPath: `/tmp/nix/store/${randomHash()}-big.drv`, epoch: 1 }, lines: [big] } } });
    expect((await f.ended).code).toBe(status.RESOURCE_EXHAUSTED);
    f.close();
    await expect(coordinatorUp()).resolves.toBeTypeOf("number");
  }, 120_000);

  it("reads nothing of a forged-token call: three concurrent 90 MB submits cost a header block each", async () => {
    const big = "z".repeat(90 * 2 ** 20); // under the 96 MB limit: before the gate, each was read whole
    const forged = farmClient(addr(), newToken("forged"));
    const pid = farm.coordinator!.pid!;
    const rssBefore = rssBytes(pid);
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssBytes(pid))), 20);
    const replies = await Promise.allSettled([0, 1, 2].map((i) => forged.call(forged.client.submit, { nodes: [], roots: [], description: big, idempotencyKey: `forged-${i}`, noPublish: true, source: "" }, 60_000)));
    clearInterval(sampler);
    forged.close();
    measured.forgedSubmitsRssGrowthMB = Math.round((rssPeak - rssBefore) / 2 ** 20);
    for (const r of replies) expect(r).toMatchObject({ status: "rejected", reason: { code: status.UNAUTHENTICATED, details: "unknown or revoked token" } });
    expect(rssPeak - rssBefore).toBeLessThan(32 * 2 ** 20); // 270 MB went in
    await expect(coordinatorUp()).resolves.toBeTypeOf("number");
  }, 120_000);

  it("after all of it: the healthy job succeeded and `farm status` works", async () => {
    const h = await healthy;
    expect(h.code, h.stderr).toBe(0);
    expect(JSON.parse(h.stdout)).toMatchObject({ jobId: healthyJobId, state: "succeeded" });
    const st = await farm.cli(["status"], { env: { FARM_TOKEN: T.cli } });
    expect(st.code, st.stderr).toBe(0);
    expect(st.stdout).toContain(healthyJobId);
    expect(farm.coordinator!.exitCode).toBe(null);
    expect(logRecords("another coordinator changed the farm state; stopping")).toEqual([]);
    measured.finalRssMB = Math.round(rssBytes(farm.coordinator!.pid!) / 2 ** 20);
  }, 600_000);
});
