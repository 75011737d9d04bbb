// Trust tiers, for real (NATS, gRPC, Nix evaluation, the real cache):
//   - the demo DAG built only by two untrusted workers (real Nix, in their own
//     namespaces) succeeds, and every output it signs was built twice and
//     agreed (or is a fixed output that matched its declared hash);
//   - with fake workers, so each lease is exact: an untrusted worker's build is
//     not signed alone; a second untrusted build that disagrees is not signed
//     either, `farm status` says so, the metric counts it, and only a trusted
//     worker then builds it, and its build is the one signed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { REPO, type FarmCluster } from "../harness/cluster.js";
import { waitFor } from "../harness/ports.js";
import { HashCounter, hashPart } from "../../proto/nix/mod.js";
import { narFromTree } from "../../proto/nix/testing/nar-fixtures.js";
import type { Lease } from "../../proto/gen/farm.js";
import { BuildStatus, FakeWorker } from "./fake-worker.js";
import { newToken, provenanceRecords, startTokenFarm } from "./support.js";

const DEMO = path.join(REPO, "test/fixtures/demo/default.nix");
const T = { alice: newToken("alice"), u1: newToken("u1"), u2: newToken("u2"), liar: newToken("liar"), honest: newToken("honest"), idle: newToken("idle"), t1: newToken("t1") };
const FAKE = "trust-tier-fake";

let farm: FarmCluster;
let dir: string;
let stop: () => Promise<void>;
let jobs: string;
/** The demo DAG, built only by two untrusted workers while the other test attacks beside it. */
let demoJob: Promise<{ code: number; stdout: string; stderr: string }>;

beforeAll(async () => {
  ({ farm, dir, stop } = await startTokenFarm("trust-tiers", [
    ["cli", "alice", T.alice],
    ["worker", "u1", `${T.u1} untrusted`],
    ["worker", "u2", `${T.u2} untrusted`],
    ["worker", "liar", `${T.liar} untrusted`],
    ["worker", "honest", `${T.honest} untrusted`],
    ["worker", "idle", `${T.idle} untrusted`],
    ["worker", "t1", T.t1],
  ]));
  jobs = path.join(dir, "tiers.nix");
  writeFileSync(jobs, `let mk = import ${REPO}/test/fixtures/sh-derivation.nix; in { target = mk { name = "tier-target-1.0"; system = "${FAKE}"; script = "echo genuine > $out"; }; }\n`);
  farm.startWorker({ name: "u1", env: { FARM_TOKEN: T.u1 } });
  farm.startWorker({ name: "u2", env: { FARM_TOKEN: T.u2 } });
  await farm.waitForWorkers(2);
  demoJob = farm.cli(["submit", `${DEMO}#demo`, "--follow", "--json"], { env: { FARM_TOKEN: T.alice } });
}, 120_000);

afterAll(async () => {
  await stop?.();
});

const provenanceOf = (storePath: string) => provenanceRecords(farm).get(hashPart(storePath));

describe("untrusted workers", () => {
  it("a disagreeing pair is never signed; a trusted worker builds it and only its build is signed", async () => {
    const nar = (text: string) => narFromTree({ file: text });
    const hashOf = (b: Buffer) => {
      const c = new HashCounter();
      c.update(b);
      return c.result();
    };
    const put = (token: string, storePath: string, body: Buffer, lease: Lease) =>
      fetch(`${farm.cacheUrl}/upload/${hashPart(storePath)}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${token}`, "x-nix-store-path": storePath, "x-nix-references": "", "x-farm-lease-drv": lease.drvPath, "x-farm-lease-epoch": String(lease.epoch) },
        body: new Uint8Array(body),
      });
    /** A fake worker that builds `text` for the next lease it gets, uploads it and reports success. */
    async function buildAs(name: keyof typeof T, text: string): Promise<{ lease: Lease; out: string }> {
      const w = new FakeWorker(farm.coordinatorAddress, T[name]);
      await w.join(name, { systems: [FAKE] });
      let held: Lease[] = [];
      w.keepAlive(1000, () => held);
      const a = await w.assignment();
      held = [a.lease!];
      const out = a.outputs.out;
      expect((await put(T[name], out, nar(text), a.lease!)).status).toBe(202);
      const { hash, size } = hashOf(nar(text));
      const since = w.received.length;
      w.result(a.lease!, BuildStatus.BUILD_STATUS_SUCCEEDED, "", [{ name: "out", path: out, narHash: hash, narSize: size }]);
      await w.ack(a.lease!, since);
      held = [];
      w.close();
      return { lease: a.lease!, out };
    }
    const narinfo = async (p: string) => (await fetch(`${farm.cacheUrl}/${hashPart(p)}.narinfo`)).status;

    const submit = await farm.cli(["submit", `${jobs}#target`, "--json"], { env: { FARM_TOKEN: T.alice } });
    expect(submit.code, submit.stderr).toBe(0);
    const jobId = JSON.parse(submit.stdout).jobId;
    const first = await buildAs("liar", "planted\n");
    expect(await narinfo(first.out)).toBe(404); // one untrusted build is not enough
    const second = await buildAs("honest", "genuine\n");
    expect(await narinfo(second.out)).toBe(404); // and two that disagree are never signed
    const status = JSON.parse((await farm.cli(["status", jobId, "--derivations", "--json"], { env: { FARM_TOKEN: T.alice } })).stdout);
    expect(status.derivations[0].reason).toBe("outputs built on honest disagree with liar's; nothing signed, rebuilding on a trusted worker");
    const metrics = await (await fetch(`http://127.0.0.1:${farm.metricsPort}/metrics`)).text();
    expect(metrics).toMatch(/tmpnix_trust_total\{event="mismatch"\} 1/);

    // Only a trusted worker may take it now: an untrusted one that joins gets nothing.
    const idle = new FakeWorker(farm.coordinatorAddress, T.idle);
    await idle.join("idle", { systems: [FAKE] });
    idle.keepAlive(1000);
    const third = await buildAs("t1", "genuine\n");
    expect(idle.received.some((m) => m.msg?.$case === "assign")).toBe(false);
    idle.close();
    await waitFor("the trusted build signed", async () => (await narinfo(third.out)) === 200, 10_000, 100);
    expect(provenanceOf(third.out)).toMatchObject({ workerId: "t1", narHash: hashOf(nar("genuine\n")).hash });
    expect(JSON.parse((await farm.cli(["status", jobId, "--json"], { env: { FARM_TOKEN: T.alice } })).stdout).state).toBe("succeeded");

    // Its token is revoked later: the operator withdraws what it alone built, and a later job builds it again.
    const byAlice = await farm.cli(["withdraw", "t1"], { env: { FARM_TOKEN: T.alice } });
    expect(byAlice.code).not.toBe(0);
    expect(byAlice.stderr).toMatch(/only an admin token may withdraw outputs/);
    const dry = JSON.parse((await farm.cli(["withdraw", "t1", "--dry-run", "--json"])).stdout);
    expect(dry).toMatchObject({ dryRun: true, storePaths: [third.out] });
    expect(await narinfo(third.out)).toBe(200);
    const done = JSON.parse((await farm.cli(["withdraw", "t1", "--json"])).stdout);
    expect(done).toMatchObject({ dryRun: false, storePaths: [third.out], drvPaths: [third.lease.drvPath] });
    expect(await narinfo(third.out)).toBe(404);
    const row = JSON.parse((await farm.cli(["status", jobId, "--derivations", "--json"])).stdout).derivations[0];
    expect(row).toMatchObject({ state: "failed", reason: "withdrawn: built by t1 alone" });
    const again = await farm.cli(["submit", `${jobs}#target`, "--json"], { env: { FARM_TOKEN: T.alice } });
    expect(again.code, again.stderr).toBe(0);
    const rebuilt = await buildAs("t1", "genuine\n");
    expect(rebuilt.lease.epoch).toBeGreaterThan(third.lease.epoch);
    await waitFor("the rebuild signed", async () => (await narinfo(third.out)) === 200, 10_000, 100);
  }, 120_000);

  it("meanwhile built the demo DAG between them: every signed output was built twice and agreed", async () => {
    const r = await demoJob;
    expect(r.code, r.stderr).toBe(0);
    const job = JSON.parse(r.stdout);
    expect(job.state).toBe("succeeded");
    const status = JSON.parse((await farm.cli(["status", job.jobId, "--derivations", "--json"], { env: { FARM_TOKEN: T.alice } })).stdout);
    const built = status.derivations.filter((d: { cached?: boolean }) => !d.cached);
    const reported = farm.coordinatorLog().split("\n").filter((l) => l.includes('"msg":"build reported"')).map((l) => JSON.parse(l)).filter((x) => x.worker === "u1" || x.worker === "u2");
    const firsts = reported.filter((x) => x.trust === "unconfirmed").length;
    const mismatches = reported.filter((x) => x.trust === "mismatch").length;
    // What a careful reader wants to know: how often two untrusted builds of these fixtures agree.
    console.log("trust-measure", JSON.stringify({ derivations: built.length, firstBuilds: firsts, mismatches, reports: reported.length }));
    expect(mismatches).toBe(0);
    // Every output a worker built and the cache signed: two builds agreed (the second names the first), or it is
    // the demo's one fixed output (libgreet-1.0.c, flat sha256), which matched the hash its .drv declares.
    const records = [...provenanceRecords(farm).values()] as { workerId?: string; uploadedBy?: string; as?: string; drvPath: string; confirms?: string }[];
    // alice's .drv files and sources carry a record too (checked by their bytes, uploaded by her).
    expect(records.filter((p) => p.workerId === undefined).every((p) => p.uploadedBy === "alice" && p.as === "content-addressed")).toBe(true);
    const provenance = records.filter((p) => p.workerId === "u1" || p.workerId === "u2");
    expect(new Set(provenance.map((p) => p.drvPath)).size).toBe(built.length); // one record per output
    for (const prov of provenance) {
      expect(["u1", "u2"]).toContain(prov.workerId);
      if (prov.drvPath.endsWith("-libgreet-1.0.c.drv")) expect(prov.confirms).toBeUndefined();
      else expect(prov.confirms === "u1" || prov.confirms === "u2" ? prov.confirms : "none").not.toBe(prov.workerId);
    }
    expect(provenance.filter((p) => p.confirms === undefined).map((p) => path.basename(p.drvPath).slice(33))).toEqual(["libgreet-1.0.c.drv"]);
    expect(firsts).toBe(built.length - 1);
    await farm.killWorker("u1");
    await farm.killWorker("u2");
  }, 180_000);
});
