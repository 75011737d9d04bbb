import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { generateKeyPair, readPackageIndex, hashPart } from "../../proto/nix/mod.js";
import { DiskStorage } from "./disk-storage.js";
import { IndexUnreadableError, NotPublishedError, PackageIndexWriter } from "./package-index-writer.js";

const SD = "/tmp/nix/store";
const key = generateKeyPair("farm-1");
const P1 = `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-hello-2.10`;
const P2 = `${SD}/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.12`;
let dir: string;
let storage: DiskStorage;
let writer: PackageIndexWriter;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "index-writer-"));
  storage = await DiskStorage.open(dir);
  writer = new PackageIndexWriter({ storage, storeDir: SD, secretKey: key.secretKey, publicKey: key.publicKey, logger: pino({ level: "silent" }) });
  for (const p of [P1, P2]) await storage.put("narinfo", hashPart(p), `StorePath: ${p}\n`);
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const input = (p: string, jobId: string) => ({ name: "hello", outputs: { out: p }, source: "nixpkgs#hello", jobId, builtAt: new Date(0) });

describe("PackageIndexWriter", () => {
  it("keeps a signed file at <cache>/index/packages.json, newest first, serialising concurrent changes", async () => {
    await Promise.all([writer.publish(input(P1, "j1")), writer.publish({ ...input(P2, "j2"), name: "other" }), writer.publish(input(P2, "j3"))]);
    const { readFile } = await import("node:fs/promises");
    const index = readPackageIndex(await readFile(path.join(dir, "index", "packages.json"), "utf8"), [key.publicKey], SD);
    expect(index.serial).toBe(3);
    expect(index.packages.hello.map((e) => e.jobId)).toEqual(["j3", "j1"]);
    expect(index.packages.hello[0].version).toBe("2.12");
    expect(Object.keys(index.packages).sort()).toEqual(["hello", "other"]);
    expect(await writer.has("hello", "j1")).toBe(true);
    expect(await writer.unpublish("hello")).toEqual({ removed: true, serial: 4 });
    expect(await writer.unpublish("hello")).toEqual({ removed: false, serial: 4 });
  });

  it("refuses a path the cache does not hold signed", async () => {
    const missing = `${SD}/1mdqa9w1p6cmli6976v4wi0sw9r4p5pr-evil`;
    await expect(writer.publish(input(missing, "j"))).rejects.toThrow(NotPublishedError);
    expect(await storage.has("index", "packages.json")).toBe(false);
  });

  it("will not build on an index it cannot verify", async () => {
    await writer.publish(input(P1, "j1"));
    await writeFile(path.join(dir, "index", "packages.json"), (await storage.getText("index", "packages.json"))!.replace("2.10", "2.11"));
    await expect(writer.publish(input(P2, "j2"))).rejects.toThrow(IndexUnreadableError);
  });
});
