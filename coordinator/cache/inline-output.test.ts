// Outputs sent inline in a build report, over real disk storage: staged as their
// uploads would be, so acceptance signs exactly what was sent and nothing else.
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { formatNarInfo, generateKeyPair, HashCounter, hashPart, parseNarInfo, parseSecretKey, verifyNarInfo } from "../../proto/nix/mod.js";
import { narFromTree } from "../../proto/nix/testing/nar-fixtures.js";
import { mkNode } from "../core/test-support.js";
import type { BuildReport, BuiltOutput, DrvNode, Lease } from "../core/types.js";
import { publishOutputs } from "../server/output-check.js";
import { DiskStorage } from "./disk-storage.js";
import { InlineOutputStager } from "./inline-output.js";
import { OutputPublisher, stagedName } from "./staged-output.js";

const keys = generateKeyPair("inline-output-test-1");
const node: DrvNode = mkNode("lib", [], { outputs: ["out", "dev"] });
const lease: Lease = { drvPath: node.drvPath, epoch: 2 };
const base = (p: string) => p.slice(p.lastIndexOf("/") + 1);

let dir: string;
let storage: DiskStorage;
let stager: InlineOutputStager;
let publisher: OutputPublisher;
const warnings: Record<string, unknown>[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "inline-output-"));
  storage = await DiskStorage.open(dir);
  warnings.length = 0;
  const logger = pino({ level: "warn" }, { write: (line: string) => void warnings.push(JSON.parse(line)) });
  const signingKey = parseSecretKey(keys.secretKey);
  stager = new InlineOutputStager({ storage, storeDir: "/tmp/nix/store", signingKey, maxNarBytes: 1 << 20, narCompression: "gzip", logger });
  publisher = new OutputPublisher({ storage, signingKey, logger });
});
afterEach(() => rm(dir, { recursive: true, force: true }));

function inline(name: string, storePath: string, nar: Buffer, references: string[] = [], reportedFrom: Buffer = nar): BuiltOutput {
  const counter = new HashCounter();
  counter.update(reportedFrom);
  const { hash, size } = counter.result();
  return { name, path: storePath, narHash: hash, narSize: size, inline: { nar, references } };
}

const reportOf = (outputs: BuiltOutput[]): BuildReport => ({ lease, outcome: "succeeded", outputs, durationMs: 1, peakMemoryBytes: 1, cores: 1, error: "" });
const declared = new Set(Object.values(node.outputs));

describe("InlineOutputStager", () => {
  it("stages a build's inline outputs, one referring to its sibling, and acceptance signs exactly those bytes", async () => {
    // `dev` refers to `out` (as nixpkgs' propagated-build-inputs do): neither is published while they are staged.
    const outNar = narFromTree({ file: "the library\n" });
    const devNar = narFromTree({ file: `${node.outputs.out}\n` });
    const outputs = [inline("dev", node.outputs.dev, devNar, [base(node.outputs.out)]), inline("out", node.outputs.out, outNar)];
    const held = await stager.stage(lease, "w1", outputs, declared, true);
    expect(warnings).toEqual([]);
    // A trusted worker's NARs stay in memory until they are published: staging writes no file.
    expect([...held.keys()].sort()).toEqual([node.outputs.dev, node.outputs.out].sort());
    expect(await readdir(path.join(dir, "nar"))).toEqual([]);

    const published = await publishOutputs(publisher, node, ["j1"], reportOf(outputs), "w1", pino({ level: "silent" }), { held });
    expect(published.verified).toBe(true);
    await published.written;
    for (const [p, nar] of [[node.outputs.out, outNar], [node.outputs.dev, devNar]] as const) {
      const info = parseNarInfo((await storage.getText("narinfo", hashPart(p)))!, "/tmp/nix/store");
      expect(verifyNarInfo(info, [keys.publicKey])).toBe(true);
      expect(info.deriver).toBe(base(node.drvPath));
      // Small NARs are stored as they are: the file is the bytes the worker sent.
      expect((await readFile(path.join(dir, info.url))).equals(nar)).toBe(true);
    }
  });

  it("keeps a trusted worker's staged records in memory only, and journals an untrusted worker's", async () => {
    const nar = narFromTree({ file: "small\n" });
    const held = await stager.stage(lease, "trusted", [inline("out", node.outputs.out, nar)], declared, true);
    expect(await stager.stage(lease, "untrusted", [inline("out", node.outputs.out, nar)], declared, false)).toEqual(new Map());
    expect(await readdir(path.join(dir, "nar"))).toHaveLength(1); // the untrusted worker's, written at once
    expect(await publisher.staged(node.outputs.out, lease, "trusted")).not.toBeNull();
    expect(await publisher.staged(node.outputs.out, lease, "untrusted")).not.toBeNull();
    // What a restart finds: the trusted worker resends its result, outputs and all; the untrusted one's waits for a confirming build.
    const reopened = new OutputPublisher({ storage: await DiskStorage.open(dir), signingKey: parseSecretKey(keys.secretKey), logger: pino({ level: "silent" }) });
    expect(await reopened.staged(node.outputs.out, lease, "trusted")).toBeNull();
    expect(await reopened.staged(node.outputs.out, lease, "untrusted")).not.toBeNull();
    // Accepted, the in-memory record goes without a journal line.
    const journal = () => readFile(path.join(dir, "staged", "journal"), "utf8");
    const before = await journal();
    const published = await publishOutputs(publisher, mkNode("lib", [], { outputs: ["out"] }), ["j1"], reportOf([inline("out", node.outputs.out, nar)]), "trusted", pino({ level: "silent" }), { held });
    await published.written;
    expect(published.verified).toBe(true);
    expect(await publisher.staged(node.outputs.out, lease, "trusted")).toBeNull();
    expect(await journal()).toBe(before);
  });

  it("signs a held NAR's output only with those bytes in hand, and writes them before the narinfo", async () => {
    const nar = narFromTree({ file: "held\n" });
    const single = mkNode("lib", [], { outputs: ["out"] });
    const held = await stager.stage(lease, "w1", [inline("out", node.outputs.out, nar)], declared, true);
    // Without the bytes (or with others'), nothing is signed: the narinfo would name a NAR that is nowhere.
    const report = reportOf([inline("out", node.outputs.out, nar)]);
    expect((await publishOutputs(publisher, single, ["j1"], report, "w1", pino({ level: "silent" }))).verified).toBe(false);
    const other = { ...held.get(node.outputs.out)!, file: `${"0".repeat(52)}.nar` };
    expect((await publishOutputs(publisher, single, ["j1"], report, "w1", pino({ level: "silent" }), { held: new Map([[node.outputs.out, other]]) })).verified).toBe(false);
    expect(await storage.getText("narinfo", hashPart(node.outputs.out))).toBeNull();
    expect(await readdir(path.join(dir, "nar"))).toEqual([]);
    expect(warnings.map((w) => w.msg)).toEqual(Array(2).fill("a staged output's NAR was held in memory, and this publish does not have it"));

    // What staging kept of the record is used only while it is the stored text: edited, the stored record decides.
    const h = held.get(node.outputs.out)!;
    const forged = { ...h.staged.narInfo, narHash: `sha256:${"1".repeat(52)}` };
    const edited = new Map([[node.outputs.out, { ...h, staged: { text: `${h.staged.text} `, record: { ...h.staged.record, narInfo: formatNarInfo(forged) }, narInfo: forged } }]]);
    const published = await publishOutputs(publisher, single, ["j1"], report, "w1", pino({ level: "silent" }), { held: edited });
    expect(published.verified).toBe(true);
    await published.written;
    const info = parseNarInfo((await storage.getText("narinfo", hashPart(node.outputs.out)))!, "/tmp/nix/store");
    expect(info.narHash).toBe(h.staged.narInfo.narHash);
    expect((await readFile(path.join(dir, info.url))).equals(nar)).toBe(true);
  });

  it("refuses a held record read back after a restart: its NAR went with the process", async () => {
    const nar = narFromTree({ file: "gone\n" });
    const single = mkNode("lib", [], { outputs: ["out"] });
    await stager.stage(lease, "w1", [inline("out", node.outputs.out, nar)], declared, true);
    // As a compaction of the journal would: the in-memory record, mark and all, written out.
    const name = stagedName(node.outputs.out, lease, "w1");
    await storage.put("staged", name, (await storage.getText("staged", name))!);
    const reopened = await DiskStorage.open(dir);
    const after = new OutputPublisher({ storage: reopened, signingKey: parseSecretKey(keys.secretKey), logger: pino({ level: "silent" }) });
    expect(await after.staged(node.outputs.out, lease, "w1")).not.toBeNull();
    const published = await publishOutputs(after, single, ["j1"], reportOf([inline("out", node.outputs.out, nar)]), "w1", pino({ level: "silent" }));
    expect(published.verified).toBe(false);
    expect(await reopened.getText("narinfo", hashPart(node.outputs.out))).toBeNull();
  });

  it("takes a NAR by the same rules whether it is read whole (small) or streamed: junk, a cut and trailing bytes refused under their own hashes", async () => {
    const small = narFromTree({ file: "small\n" });
    const big = narFromTree({ file: "b".repeat(10_000) }); // over one disk block: streamed and compressed
    const bad = (nar: Buffer) => [Buffer.from("not a NAR at all"), nar.subarray(0, nar.length - 8), Buffer.concat([nar, Buffer.alloc(8)])];
    for (const [i, nar] of [...bad(small), ...bad(big)].entries()) {
      const l = { ...lease, epoch: 10 + i };
      await stager.stage(l, "w1", [inline("out", node.outputs.out, nar)], declared, true);
      expect(await publisher.staged(node.outputs.out, l, "w1"), `case ${i}`).toBeNull();
    }
    expect(warnings.filter((w) => w.msg === "inline output refused")).toHaveLength(6);
    const [a, b] = [{ ...lease, epoch: 20 }, { ...lease, epoch: 21 }];
    const heldSmall = await stager.stage(a, "w1", [inline("out", node.outputs.out, small)], declared, true);
    const heldBig = await stager.stage(b, "w1", [inline("out", node.outputs.out, big)], declared, true);
    const smallInfo = (await publisher.staged(node.outputs.out, a, "w1"))!;
    const bigInfo = (await publisher.staged(node.outputs.out, b, "w1"))!;
    expect([smallInfo.compression, smallInfo.fileHash, smallInfo.narSize]).toEqual(["none", smallInfo.narHash, small.length]);
    expect(heldSmall.get(node.outputs.out)!.bytes.equals(small)).toBe(true);
    expect([bigInfo.compression, bigInfo.narSize, bigInfo.fileSize! < big.length]).toEqual(["gzip", big.length, true]);
    expect(heldBig.get(node.outputs.out)!.bytes.length).toBe(bigInfo.fileSize);
  });

  it("stages nothing for bytes that are not the reported NAR, nor for a path the derivation doesn't declare", async () => {
    const genuine = narFromTree({ file: "genuine\n" });
    const planted = narFromTree({ file: "planted!\n" });
    const stranger = `/tmp/nix/store/${"6".repeat(32)}-stranger`;
    const outputs = [inline("out", node.outputs.out, planted, [], genuine), inline("dev", node.outputs.dev, genuine), inline("x", stranger, genuine)];
    await stager.stage(lease, "w1", outputs, declared, false);
    expect(warnings.map((w) => [w.msg, w.storePath])).toEqual([
      ["inline output refused: not an output of the lease's derivation", stranger],
      ["inline output refused", node.outputs.out],
    ]);
    expect(await publisher.staged(node.outputs.out, lease, "w1")).toBeNull();
    expect(await publisher.staged(stranger, lease, "w1")).toBeNull();
    expect(await publisher.staged(node.outputs.dev, lease, "w1")).not.toBeNull();
    // So the build's success fails its check, all or none: not even `dev` is signed.
    expect((await publishOutputs(publisher, node, ["j1"], reportOf(outputs), "w1", pino({ level: "silent" }))).verified).toBe(false);
    expect(await storage.getText("narinfo", hashPart(node.outputs.dev))).toBeNull();
  });
});
