import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { generateKeyPair, hashPart } from "../../proto/nix/mod.js";
import { DiskStorage } from "../cache/disk-storage.js";
import { PackageIndexWriter } from "../cache/package-index-writer.js";
import type { Scheduler } from "../core/scheduler.js";
import type { JobRecord } from "../core/types.js";
import { PackagePublishing, rootOutputs } from "./package-publishing.js";

const SD = "/tmp/nix/store";
const OUT = `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-hello-2.12`;
const DRV = `${SD}/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.12.drv`;
const key = generateKeyPair("farm-1");
const log = pino({ level: "silent" });
let dir: string, storage: DiskStorage, writer: PackageIndexWriter;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "publishing-"));
  storage = await DiskStorage.open(dir);
  await storage.put("narinfo", hashPart(OUT), `StorePath: ${OUT}\n`);
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const job = (jobId: string, finishedAtMs: number, extra: Partial<JobRecord> = {}): JobRecord => ({
  jobId,
  description: "nixpkgs#hello",
  roots: [DRV],
  idempotencyKey: "",
  state: "succeeded",
  createdAtMs: 0,
  finishedAtMs,
  publish: { name: "hello", source: "nixpkgs#hello from x" },
  ...extra,
});

/** Just what PackagePublishing reads of the scheduler. */
const schedulerOf = (jobs: JobRecord[]) =>
  ({ jobs: () => jobs, job: (id: string) => jobs.find((j) => j.jobId === id), drv: () => ({ node: { outputs: { out: OUT } } }) }) as unknown as Scheduler;

describe("PackagePublishing", () => {
  it("takes the roots' outputs, suffixing a second root's", () => {
    const outs: Record<string, Record<string, string>> = { "/s/a.drv": { out: "/s/a", dev: "/s/a-dev" }, "/s/b.drv": { out: "/s/b" } };
    expect(rootOutputs({ roots: ["/s/a.drv", "/s/b.drv"] } as JobRecord, (p) => outs[p])).toEqual({ out: "/s/a", dev: "/s/a-dev", "out-1": "/s/b" });
  });

  it("after a restart publishes succeeded jobs the index missed, once, and not those an operator withdrew since", async () => {
    let now = 1_000;
    writer = new PackageIndexWriter({ storage, storeDir: SD, secretKey: key.secretKey, publicKey: key.publicKey, logger: log, now: () => new Date(now) });
    const jobs = [job("j-old", 500), job("j-kept-out", 900, { publish: undefined }), job("j-failed", 950, { state: "failed" })];
    const first = new PackagePublishing({ scheduler: schedulerOf(jobs), writer, logger: log });
    expect(await first.catchUp()).toBe(1); // j-old: nothing was ever published
    await first.unpublish("hello"); // at 1000: the operator withdrew it
    now = 3_000;
    jobs.push(job("j-new", 2_000)); // succeeded, then the coordinator died before writing the index
    const restarted = new PackagePublishing({ scheduler: schedulerOf(jobs), writer, logger: log });
    expect(await restarted.catchUp()).toBe(1);
    expect(await restarted.catchUp()).toBe(0);
    const index = await writer.read();
    expect(index.packages.hello.map((e) => e.jobId)).toEqual(["j-new"]);
    expect(index.packages.hello[0]).toMatchObject({ outputs: { out: OUT }, source: "nixpkgs#hello from x", builtAt: new Date(2_000).toISOString() });
  });
});
