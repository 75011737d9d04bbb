// A signature means "the farm accepted this build" (real gRPC, NATS, Nix
// evaluation, the real cache; workers are fake so each lease is exact):
//   - a worker token with no lease plants nothing, not even ahead of a build;
//   - one worker can't upload under another's lease, nor a path its .drv
//     doesn't declare;
//   - a staged output is invisible until its result is accepted, then it is
//     signed with a record of who built it for which lease and job;
//   - once the lease is over, a late upload is refused;
//   - a submitter uploads only paths its bytes determine;
//   - nobody can upload a build log.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { REPO, type FarmCluster } from "../harness/cluster.js";
import { waitFor } from "../harness/ports.js";
import { runIsolated } from "../harness/isolated.js";
import { formatSha256, HashCounter, hashPart, parseNarInfo, verifyNarInfo } from "../../proto/nix/mod.js";
import { narFromTree } from "../../proto/nix/testing/nar-fixtures.js";
import type { Lease } from "../../proto/gen/farm.js";
import { BuildStatus, FakeWorker } from "./fake-worker.js";
import { newToken, provenanceRecords, startHealthyJob, startTokenFarm } from "./support.js";

const T = { alice: newToken("alice"), w1: newToken("w1"), w2: newToken("w2") };
const SYSTEM = "trust-fake";

let farm: FarmCluster;
let dir: string;
let stop: () => Promise<void>;
let jobs: string;
let target = { drvPath: "", out: "" };
let inlined = { drvPath: "", out: "" };
let w1: FakeWorker;
let healthy: ReturnType<typeof startHealthyJob>;

const put = (token: string, storePath: string, nar: Buffer, lease?: Lease, extra: Record<string, string> = {}) =>
  fetch(`${farm.cacheUrl}/upload/${hashPart(storePath)}`, {
    method: "PUT",
    headers: {
      authorization: `Bearer ${token}`,
      "x-nix-store-path": storePath,
      "x-nix-references": "",
      ...(lease ? { "x-farm-lease-drv": lease.drvPath, "x-farm-lease-epoch": String(lease.epoch) } : {}),
      ...extra,
    },
    body: new Uint8Array(nar),
  });
/** The coordinator's log lines with message `msg` (and matching `pred`), once there is at least one. */
const logged = (msg: string, pred: (line: Record<string, unknown>) => boolean = () => true) =>
  waitFor(`"${msg}" in the coordinator's log`, () => {
    const lines = farm.coordinatorLog().split("\n").filter((l) => l.includes(`"msg":${JSON.stringify(msg)}`)).map((l) => JSON.parse(l) as Record<string, unknown>).filter(pred);
    return lines.length > 0 ? lines : null;
  }, 10_000, 50);
const narinfoStatus = async (storePath: string) => (await fetch(`${farm.cacheUrl}/${hashPart(storePath)}.narinfo`)).status;
const narHashOf = (nar: Buffer) => {
  const c = new HashCounter();
  c.update(nar);
  return c.result();
};

beforeAll(async () => {
  ({ farm, dir, stop } = await startTokenFarm("cache-trust", [["cli", "alice", T.alice], ["worker", "w1", T.w1], ["worker", "w2", T.w2]]));
  jobs = path.join(dir, "trust.nix");
  writeFileSync(
    jobs,
    `let mk = import ${REPO}/test/fixtures/sh-derivation.nix; in { target = mk { name = "trust-target-1.0"; system = "${SYSTEM}"; script = "echo genuine > $out"; }; ` +
      `inlined = mk { name = "trust-inline-1.0"; system = "${SYSTEM}"; script = "echo inline > $out"; }; }\n`,
  );
  healthy = startHealthyJob(farm, farm.token);
  // What the target's .drv and output path are, evaluated the way `farm submit` will (an empty /tmp/nix of our own).
  const evalDir = path.join(dir, "eval-nix");
  mkdirSync(evalDir);
  const nixEnv = { PATH: "/usr/bin:/bin", HOME: dir, NIX_STORE_DIR: "/tmp/nix/store", NIX_STATE_DIR: "/tmp/nix/var/nix", NIX_LOG_DIR: "/tmp/nix/var/log/nix" };
  const evaluate = `for a in target inlined; do d=$(nix-instantiate ${jobs} -A $a) && echo $d && nix-store -q --outputs $d || exit 1; done`;
  const r = await runIsolated("eval", "/bin/sh", ["-c", evaluate], { nixDir: evalDir, env: nixEnv });
  expect(r.code, r.stderr).toBe(0);
  const [drvPath, out, inlinedDrv, inlinedOut] = r.stdout.trim().split("\n");
  target = { drvPath, out };
  inlined = { drvPath: inlinedDrv, out: inlinedOut };
}, 120_000);

afterAll(async () => {
  w1?.close();
  await stop?.();
});

describe("only accepted builds get signed", () => {
  const planted = narFromTree({ dir: [["bin", { dir: [["hello", { file: "#!/bin/sh\necho planted\n", executable: true }]] }]] });
  const genuine = narFromTree({ file: "genuine\n" });
  let lease: Lease;
  let credential = "";
  let jobId = "";

  it("a worker token with no lease plants nothing: not a made-up path, not a future build's output", async () => {
    const madeUp = `/tmp/nix/store/${"1".repeat(32)}-hello-2.12.1`;
    for (const p of [madeUp, target.out]) {
      const res = await put(T.w2, p, planted);
      expect(res.status).toBe(403);
      expect((await res.text()).trim()).toMatch(/may upload only outputs of a lease it holds/);
      expect(await narinfoStatus(p)).toBe(404);
    }
    const forgedLease = await put(T.w2, target.out, planted, { drvPath: target.drvPath, epoch: 1 });
    expect(forgedLease.status).toBe(403);
    expect((await forgedLease.text()).trim()).toBe(`w2 holds no lease on ${target.drvPath} at epoch 1`);
  });

  it("under a lease: another worker can't upload, the holder can't upload what the .drv doesn't declare, and what it stages stays invisible", async () => {
    w1 = new FakeWorker(farm.coordinatorAddress, T.w1);
    await w1.join("w1", { systems: [SYSTEM] });
    let held: Lease[] = [];
    w1.keepAlive(1000, () => held);
    const submit = await farm.cli(["submit", `${jobs}#target`, "--json"], { env: { FARM_TOKEN: T.alice } });
    expect(submit.code, submit.stderr).toBe(0);
    jobId = JSON.parse(submit.stdout).jobId;
    const assignment = await w1.assignment();
    lease = assignment.lease!;
    credential = assignment.uploadCredential;
    held = [lease];
    expect(lease.drvPath).toBe(target.drvPath);
    expect(credential).toMatch(/^lease\.v1\./);

    const other = await put(T.w2, target.out, planted, lease);
    expect(other.status).toBe(403);
    expect((await other.text()).trim()).toBe(`w2 holds no lease on ${target.drvPath} at epoch ${lease.epoch}`);
    const notAnOutput = `/tmp/nix/store/${"2".repeat(32)}-trust-target-1.0`;
    const wrongPath = await put(T.w1, notAnOutput, planted, lease);
    expect(wrongPath.status).toBe(403);
    expect((await wrongPath.text()).trim()).toBe(`${notAnOutput} is not an output of ${target.drvPath}`);
    const asOther = await put(T.w1, target.out, planted, lease, { "x-farm-worker": "w2" });
    expect(asOther.status).toBe(403);

    // The assignment's lease credential uploads this lease's outputs and nothing else; altered, it uploads nothing.
    const byCredential = await put(credential, target.out, genuine, lease);
    expect(byCredential.status).toBe(202);
    const elsewhere = await put(credential, notAnOutput, planted, lease);
    expect((await elsewhere.text()).trim()).toBe(`${notAnOutput} is not an output of ${target.drvPath}`);
    const altered = await put(credential.slice(0, -2) + (credential.endsWith("AA") ? "BB" : "AA"), target.out, planted, lease);
    expect(altered.status).toBe(403);
    expect((await altered.text()).trim()).toBe("lease credential not valid (forged, altered or expired)");
    const staged = await put(T.w1, target.out, genuine, lease);
    expect(staged.status).toBe(202);
    expect((await staged.text()).trim()).toMatch(/^staged until the farm accepts the build /);
    expect(await narinfoStatus(target.out)).toBe(404);
  });

  it("a result whose NAR hash is not what was staged publishes nothing; the accepted one is signed with its provenance", async () => {
    const { hash, size } = narHashOf(genuine);
    const since = w1.received.length;
    w1.result(lease, BuildStatus.BUILD_STATUS_SUCCEEDED, "", [{ name: "out", path: target.out, narHash: formatSha256(Buffer.alloc(32)), narSize: size }]);
    await w1.ack(lease, since);
    // Counted as an upload failure: nothing published, and the build goes back to the queue.
    expect(await narinfoStatus(target.out)).toBe(404);
    // The coordinator's log is written asynchronously: its line may land a moment after the ack.
    const reported = await logged("build reported", (r) => r.worker === "w1");
    expect(reported.map((r) => `${r.worker} ${r.outcome} verified=${r.verified}`)).toEqual(["w1 succeeded verified=false"]);

    const again = (await w1.next("assign", (a) => a.lease!.epoch > lease.epoch, 30_000)).lease!;
    expect((await put(T.w1, target.out, genuine, again)).status).toBe(202);
    const since2 = w1.received.length;
    w1.result(again, BuildStatus.BUILD_STATUS_SUCCEEDED, "", [{ name: "out", path: target.out, narHash: hash, narSize: size }]);
    expect((await w1.ack(again, since2)).accepted).toBe(true);

    const text = await (await fetch(`${farm.cacheUrl}/${hashPart(target.out)}.narinfo`)).text();
    const info = parseNarInfo(text, "/tmp/nix/store");
    expect(info.narHash).toBe(hash);
    expect(verifyNarInfo(info, [farm.publicKey()])).toBe(true);
    const provenance = provenanceRecords(farm).get(hashPart(target.out));
    expect(provenance).toMatchObject({ storePath: target.out, narHash: hash, workerId: "w1", drvPath: target.drvPath, epoch: again.epoch, jobs: [jobId] });
    await logged("published accepted output");
    lease = again;
  });

  it("once the lease is over, a late upload by its holder is refused, with its token or a lease credential", async () => {
    const late = await put(T.w1, target.out, planted, lease);
    expect(late.status).toBe(403);
    expect((await late.text()).trim()).toBe(`w1 holds no lease on ${target.drvPath} at epoch ${lease.epoch}`);
    const lateCredential = await put(credential, target.out, planted);
    expect(lateCredential.status).toBe(403);
  });

  it("an output sent inline is checked as its upload would be: bytes not the reported hash, a stale lease's, or a path the .drv doesn't declare publish nothing", async () => {
    const submit = await farm.cli(["submit", `${jobs}#inlined`, "--json"], { env: { FARM_TOKEN: T.alice } });
    expect(submit.code, submit.stderr).toBe(0);
    const first = (await w1.next("assign", (a) => a.lease!.drvPath === inlined.drvPath)).lease!;
    const bytes = narFromTree({ file: "inline\n" });
    const { hash, size } = narHashOf(bytes);
    const notAnOutput = `/tmp/nix/store/${"6".repeat(32)}-trust-inline-1.0`;

    // Planted bytes under the genuine hash: refused before anything is staged, so the success fails its check.
    const since = w1.received.length;
    w1.result(first, BuildStatus.BUILD_STATUS_SUCCEEDED, "", [{ name: "out", path: inlined.out, narHash: hash, narSize: planted.length, nar: planted }]);
    await w1.ack(first, since);
    expect(await narinfoStatus(inlined.out)).toBe(404);
    const refused = await logged("inline output refused");
    expect(refused.map((r) => `${r.storePath} ${r.err}`)).toEqual([`${inlined.out} NAR hash is ${narHashOf(planted).hash}, upload claimed ${hash}`]);

    // The build went back to the queue: the old lease's genuine bytes, sent late, stage and publish nothing.
    const again = (await w1.next("assign", (a) => a.lease!.drvPath === inlined.drvPath && a.lease!.epoch > first.epoch)).lease!;
    const since2 = w1.received.length;
    w1.result(first, BuildStatus.BUILD_STATUS_SUCCEEDED, "", [{ name: "out", path: inlined.out, narHash: hash, narSize: size, nar: bytes }]);
    expect((await w1.ack(first, since2)).accepted).toBe(false);
    expect(await narinfoStatus(inlined.out)).toBe(404);

    // The holder's genuine bytes are signed; a path its .drv doesn't declare, sent beside them, is not.
    const since3 = w1.received.length;
    w1.result(again, BuildStatus.BUILD_STATUS_SUCCEEDED, "", [
      { name: "out", path: inlined.out, narHash: hash, narSize: size, nar: bytes },
      { name: "extra", path: notAnOutput, narHash: narHashOf(planted).hash, narSize: planted.length, nar: planted },
    ]);
    expect((await w1.ack(again, since3)).accepted).toBe(true);
    const info = parseNarInfo(await (await fetch(`${farm.cacheUrl}/${hashPart(inlined.out)}.narinfo`)).text(), "/tmp/nix/store");
    expect(info.narHash).toBe(hash);
    expect(verifyNarInfo(info, [farm.publicKey()])).toBe(true);
    expect(Buffer.from(await (await fetch(`${farm.cacheUrl}/${info.url}`)).arrayBuffer()).equals(bytes)).toBe(true);
    expect(provenanceRecords(farm).get(hashPart(inlined.out))).toMatchObject({ workerId: "w1", drvPath: inlined.drvPath, epoch: again.epoch });
    expect(await narinfoStatus(notAnOutput)).toBe(404);
    const alsoRefused = await logged("inline output refused: not an output of the lease's derivation");
    expect(alsoRefused.map((r) => r.storePath)).toEqual([notAnOutput]);
  });

  it("states no CA an uploader claims, and takes no reference that borrows a published hash under another name", async () => {
    const file = narFromTree({ file: "operator's file\n" });
    const p = `/tmp/nix/store/${"4".repeat(32)}-operator-file`;
    const res = await put(farm.token, p, file, undefined, { "x-nix-ca": "fixed:r:sha256:0garbage" });
    expect(res.status).toBe(201);
    expect(parseNarInfo(await (await fetch(`${farm.cacheUrl}/${hashPart(p)}.narinfo`)).text(), "/tmp/nix/store").ca).toBeUndefined();
    const borrowed = `${path.basename(target.out).slice(0, 32)}-not-its-name`;
    const q = `/tmp/nix/store/${"5".repeat(32)}-refers`;
    const ref = await put(farm.token, q, file, undefined, { "x-nix-references": borrowed });
    expect(ref.status).toBe(424);
    expect((await ref.text()).trim()).toBe(`reference ${borrowed} is not in the cache; upload it first`);
  });

  it("a submitter uploads only paths its bytes determine, and nobody uploads a build log", async () => {
    const fake = `/tmp/nix/store/${"3".repeat(32)}-hello-2.12.1`;
    const res = await put(T.alice, fake, planted);
    expect(res.status).toBe(403);
    expect((await res.text()).trim()).toMatch(/is not the path of its own bytes .*a submitter may upload only/);
    expect(await narinfoStatus(fake)).toBe(404);
    const log = await fetch(`${farm.cacheUrl}/log/${path.basename(target.drvPath)}`, { method: "PUT", headers: { authorization: `Bearer ${farm.token}` }, body: "overwritten" });
    expect(log.status).toBe(404);
  });

  it("meanwhile the healthy job beside it built and completed", async () => {
    await healthy.succeeded();
  }, 120_000);
});
