// Jobs belong to their submitter (real gRPC, NATS, Nix, an isolated worker):
// bob's CLI token can't list, read, watch, cancel, read the logs of, or
// install by ref what alice submitted, and an idempotency key of his never
// finds her job; an admin token sees both.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Metadata, status as grpcStatus, type ServiceError } from "@grpc/grpc-js";
import { REPO, type FarmCluster } from "../harness/cluster.js";
import { nodeToWire } from "../../proto/convert/mod.js";
import { drvNodeFromText } from "../../proto/nix/mod.js";
import type { DrvNode } from "../../proto/types.js";
import { farmClient, newToken, startHealthyJob, startTokenFarm } from "./support.js";

const T = { alice: newToken("alice"), bob: newToken("bob"), carol: newToken("carol"), w1: newToken("w1") };

let farm: FarmCluster;
let dir: string;
let stop: () => Promise<void>;
let jobs: string;
let healthy: ReturnType<typeof startHealthyJob>;

beforeAll(async () => {
  ({ farm, dir, stop } = await startTokenFarm("owners", [["cli", "alice", T.alice], ["cli", "bob", T.bob], ["cli", "carol", `${T.carol} publish`], ["worker", "w1", T.w1]]));
  jobs = path.join(dir, "owners.nix");
  writeFileSync(
    jobs,
    `let mk = import ${REPO}/test/fixtures/sh-derivation.nix; in {\n` +
      `  quick = mk { name = "owners-quick"; script = "echo alice > $out"; };\n` +
      `  slow = mk { name = "owners-slow"; script = "sleep 60; echo slow > $out"; };\n}\n`,
  );
  farm.startWorker({ name: "w1", env: { FARM_TOKEN: T.w1 } });
  await farm.waitForWorkers(1);
  healthy = startHealthyJob(farm, farm.token);
}, 120_000);

afterAll(async () => {
  await stop?.();
});

const as = (who: keyof typeof T | "admin", args: string[]) => farm.cli(args, { env: { FARM_TOKEN: who === "admin" ? farm.token : T[who] } });
/** The first thing a WatchJob stream gives `token`: a snapshot, or its error. */
async function watchAs(token: string, jobId: string): Promise<"a snapshot" | ServiceError> {
  const { client, close } = farmClient(farm.coordinatorAddress, token);
  const md = new Metadata();
  md.set("authorization", `Bearer ${token}`);
  try {
    return await new Promise((resolve) => {
      const stream = client.watchJob({ jobId, derivations: false }, md);
      stream.on("data", () => {
        resolve("a snapshot");
        stream.cancel();
      });
      stream.on("error", (err: ServiceError) => resolve(err));
    });
  } finally {
    close();
  }
}

/** The quick derivation as its .drv (which the submitter's store holds) says it is. */
let quickDrvPath = "";
const quickNode = (): DrvNode => drvNodeFromText(quickDrvPath, readFileSync(path.join(farm.root, "submitter", "nix", quickDrvPath.slice("/tmp/nix/".length)), "utf8"));

const jobIds = async (who: keyof typeof T | "admin") => (JSON.parse((await as(who, ["status", "--json"])).stdout) as { jobId: string }[]).map((j) => j.jobId);

describe("jobs belong to their submitter", () => {
  let quickJob = "";
  let quickDrv = "";

  it("alice's finished job is hers: bob can't see it, its log, or install it by ref; admin sees it", async () => {
    const r = await as("alice", ["submit", `${jobs}#quick`, "--follow", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    quickJob = JSON.parse(r.stdout).jobId;
    const detail = JSON.parse((await as("alice", ["status", quickJob, "--derivations", "--json"])).stdout);
    quickDrv = detail.derivations[0].drvPath;
    quickDrvPath = quickDrv;

    expect(await jobIds("alice")).toEqual([quickJob]);
    expect(await jobIds("bob")).toEqual([]);
    expect(await jobIds("admin")).toContain(quickJob);
    const status = await as("bob", ["status", quickJob]);
    expect(status.code).not.toBe(0);
    expect(status.stderr.trim()).toMatch(new RegExp(`no job '${quickJob}'`));
    expect((await as("alice", ["logs", quickDrv])).code).toBe(0);
    const logs = await as("bob", ["logs", quickDrv]);
    expect(logs.code).not.toBe(0);
    expect(logs.stderr).toMatch(/no log for/);
    const install = await as("bob", ["install", `${jobs}#quick`, "--trusted-key", farm.publicKey()]);
    expect(install.code).not.toBe(0);
    expect(install.stderr).toMatch(/nor a ref the farm has built/);
  }, 90_000);

  it("a submitter's job names what users install only where the operator allowed it ('publish' on its token line)", async () => {
    const indexNames = async () => {
      const res = await fetch(`${farm.cacheUrl}/index/packages.json`);
      return res.status === 404 ? [] : Object.keys(JSON.parse(JSON.parse(await res.text()).body).packages);
    };
    expect(await indexNames()).not.toContain("quick"); // alice's succeeded job: her token may not publish
    const r = await as("carol", ["submit", `${jobs}#quick`, "--follow", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    await vi.waitFor(async () => expect(await indexNames()).toContain("quick"), { timeout: 20_000, interval: 250 });
    expect((await as("admin", ["unpublish", "quick"])).code).toBe(0);
  }, 90_000);

  it("only an admin token publishes or withdraws a package by hand", async () => {
    const [jobId] = await jobIds("alice");
    for (const args of [["publish", "mine", "--job", jobId], ["unpublish", "quick"]]) {
      const r = await as("bob", args);
      expect(r.code, args.join(" ")).not.toBe(0);
      expect(r.stderr.trim()).toMatch(/^farm (un)?publish: .*only an admin token may (un)?publish packages$/);
    }
    const pub = await as("admin", ["publish", "pinned", "--job", jobId, "--json"]);
    expect(pub.code, pub.stderr).toBe(0);
    expect(JSON.parse(pub.stdout).name).toBe("pinned");
    expect((await as("admin", ["unpublish", "pinned"])).code).toBe(0);
  }, 60_000);

  it("bob can neither cancel nor watch alice's running job; alice can cancel it", async () => {
    const r = await as("alice", ["submit", `${jobs}#slow`, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const slowJob = JSON.parse(r.stdout).jobId;
    const cancel = await as("bob", ["cancel", slowJob]);
    expect(cancel.code).not.toBe(0);
    expect(cancel.stderr).toMatch(new RegExp(`no job '${slowJob}'`));
    expect(await watchAs(T.bob, slowJob)).toMatchObject({ code: grpcStatus.NOT_FOUND });
    expect(await watchAs(T.alice, slowJob)).toBe("a snapshot");
    expect(JSON.parse((await as("alice", ["status", slowJob, "--json"])).stdout).state).toBe("running");
    const own = await as("alice", ["cancel", slowJob]);
    expect(own.code, own.stderr).toBe(0);
    expect(JSON.parse((await as("admin", ["status", slowJob, "--json"])).stdout).state).toBe("cancelled");
  }, 90_000);

  it("the same idempotency key from two users makes two jobs", async () => {
    const node = quickNode();
    const req = { nodes: [nodeToWire(node)], roots: [node.drvPath], description: "same key", idempotencyKey: "shared-key-1", noPublish: true, source: "" };
    const alice = farmClient(farm.coordinatorAddress, T.alice);
    const bob = farmClient(farm.coordinatorAddress, T.bob);
    try {
      const a1 = await alice.call(alice.client.submit, req);
      const a2 = await alice.call(alice.client.submit, req);
      const b1 = await bob.call(bob.client.submit, req);
      expect(a2).toMatchObject({ jobId: a1.jobId, existing: true });
      expect(b1.existing).toBe(false);
      expect(b1.jobId).not.toBe(a1.jobId);
      expect(await jobIds("bob")).toEqual([b1.jobId]);
    } finally {
      alice.close();
      bob.close();
    }
  }, 60_000);

  it("a node that disagrees with its .drv is refused with one line, and alice's job still reports the true outputs", async () => {
    const truth = quickNode();
    const bobsJobs = await jobIds("bob");
    const bob = farmClient(farm.coordinatorAddress, T.bob);
    const submit = (node: DrvNode) => bob.call(bob.client.submit, { nodes: [nodeToWire(node)], roots: [node.drvPath], description: "hijack", idempotencyKey: "", noPublish: true, source: "" });
    const planted = truth.outputs.out.replace(/\/[0-9a-z]{32}-/, "/0000000000000000000000000000000a-");
    try {
      for (const [node, says] of [
        [{ ...truth, outputs: { out: planted } }, `submitted outputs [["out","${planted}"]] is not what its .drv says`],
        [{ ...truth, system: "i686-linux" }, "submitted system \"i686-linux\" is not what its .drv says"],
        [{ ...truth, drvPath: truth.drvPath.replace(/\/[0-9a-z]{32}-/, "/0000000000000000000000000000000b-") }, "its .drv is not in the farm's cache"],
      ] as const) {
        const err = await submit(node).catch((e) => e);
        expect(err).toMatchObject({ code: grpcStatus.INVALID_ARGUMENT });
        expect(err.details.split("\n")).toHaveLength(1);
        expect(err.details).toContain(says);
      }
    } finally {
      bob.close();
    }
    expect(await jobIds("bob")).toEqual(bobsJobs); // nothing was accepted
    const again = await as("alice", ["submit", `${jobs}#quick`, "--follow", "--json"]);
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).outputs[0].outputs.out).toBe(truth.outputs.out);
    expect(farm.coordinatorLog()).toMatch(/"owner":"bob".*"msg":"submit refused"/);
  }, 60_000);

  it("meanwhile the healthy job beside it built and completed", async () => {
    await healthy.succeeded();
  }, 120_000);
});
