// Output acceptance over real disk storage: only what the reporting worker
// staged under the reported lease, with the reported NAR hash, gets signed and
// published, with a provenance record; nothing else counts.
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DiskStorage } from "../cache/disk-storage.js";
import { OutputPublisher, stagedName, type Provenance, type StagedOutput } from "../cache/staged-output.js";
import { mkNode } from "../core/test-support.js";
import type { BuildReport, DrvNode, Lease } from "../core/types.js";
import { formatNarInfo, generateKeyPair, hashPart, parseNarInfo, parseSecretKey, verifyNarInfo } from "../../proto/nix/mod.js";
import { publishOutputs } from "./output-check.js";

/** publishOutputs, waited for until its writes have landed: the verdict. */
async function accepted(...args: Parameters<typeof publishOutputs>): Promise<boolean> {
  const p = await publishOutputs(...args);
  await p.written;
  return p.verified;
}

const NAR_HASH = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
const OTHER_HASH = "sha256:0000000000000000000000000000000000000000000000000000";
const keys = generateKeyPair("output-check-test-1");
const logger = pino({ level: "silent" });

let dir: string;
let storage: DiskStorage;
let publisher: OutputPublisher;
const node: DrvNode = mkNode("a", [], { outputs: ["out", "dev"] });
const lease: Lease = { drvPath: node.drvPath, epoch: 3 };

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "output-check-"));
  storage = await DiskStorage.open(dir);
  publisher = new OutputPublisher({ storage, signingKey: parseSecretKey(keys.secretKey), logger, now: () => 42 });
});
afterEach(() => rm(dir, { recursive: true, force: true }));

async function stage(storePath: string, workerId: string, at: Lease = lease, references: string[] = []): Promise<void> {
  const narInfo = formatNarInfo({ storePath, url: "nar/x.nar.zst", compression: "zstd", narHash: NAR_HASH, narSize: 8, references, sigs: [] });
  const staged: StagedOutput = { narInfo, workerId, drvPath: at.drvPath, epoch: at.epoch, stagedAtMs: 1 };
  await storage.put("staged", stagedName(storePath, at, workerId), JSON.stringify(staged));
}

const report = (narHash = NAR_HASH, at: Lease = lease): BuildReport => ({
  lease: at,
  outcome: "succeeded",
  outputs: Object.entries(node.outputs).map(([name, p]) => ({ name, path: p, narHash, narSize: 8 })),
  durationMs: 1,
  peakMemoryBytes: 0,
  cores: 1,
  error: "",
});

describe("publishOutputs", () => {
  it("signs and publishes what the reporting worker staged under the lease, and records who built it", async () => {
    await stage(node.outputs.out, "w1");
    await stage(node.outputs.dev, "w1");
    expect(await accepted(publisher, node, ["j1"], report(), "w1", logger)).toBe(true);
    const info = parseNarInfo((await storage.getText("narinfo", hashPart(node.outputs.out)))!, "/tmp/nix/store");
    expect(verifyNarInfo(info, [keys.publicKey])).toBe(true);
    const prov = JSON.parse((await storage.getText("provenance", hashPart(node.outputs.out)))!) as Provenance;
    expect(prov).toEqual({ storePath: node.outputs.out, narHash: NAR_HASH, workerId: "w1", drvPath: lease.drvPath, epoch: 3, jobs: ["j1"], acceptedAtMs: 42 });
    expect(await storage.getText("staged", stagedName(node.outputs.out, lease, "w1"))).toBeNull();
  });

  it("counts nothing another worker staged, an older lease's upload, a different NAR hash, or a missing output", async () => {
    await stage(node.outputs.out, "w2");
    await stage(node.outputs.dev, "w2");
    expect(await accepted(publisher, node, ["j1"], report(), "w1", logger)).toBe(false);
    await stage(node.outputs.out, "w1", { ...lease, epoch: 2 });
    await stage(node.outputs.dev, "w1", { ...lease, epoch: 2 });
    expect(await accepted(publisher, node, ["j1"], report(), "w1", logger)).toBe(false);
    await stage(node.outputs.out, "w1");
    await stage(node.outputs.dev, "w1");
    expect(await accepted(publisher, node, ["j1"], report(OTHER_HASH), "w1", logger)).toBe(false);
    await storage.remove("staged", stagedName(node.outputs.dev, lease, "w1"));
    expect(await accepted(publisher, node, ["j1"], report(), "w1", logger)).toBe(false);
    // All or none: the output that was staged is not signed alone either.
    expect(await storage.getText("narinfo", hashPart(node.outputs.dev))).toBeNull();
    expect(await storage.getText("narinfo", hashPart(node.outputs.out))).toBeNull();
  });

  it("lets an output an accepted build published before stand", async () => {
    await stage(node.outputs.out, "w1");
    await stage(node.outputs.dev, "w1");
    expect(await accepted(publisher, node, ["j1"], report(), "w1", logger)).toBe(true);
    const again: Lease = { ...lease, epoch: 4 };
    expect(await accepted(publisher, node, ["j2"], report(OTHER_HASH, again), "w2", logger)).toBe(true);
    expect(JSON.parse((await storage.getText("provenance", hashPart(node.outputs.out)))!).workerId).toBe("w1");
  });

  it("publishes an output that refers to a sibling output of the same build, whichever comes first", async () => {
    const base = (p: string) => p.slice(p.lastIndexOf("/") + 1);
    await stage(node.outputs.out, "w1", lease, [base(node.outputs.dev)]); // `out` is planned first and refers to `dev`
    await stage(node.outputs.dev, "w1");
    expect(await accepted(publisher, node, ["j1"], report(), "w1", logger)).toBe(true);
    expect(parseNarInfo((await storage.getText("narinfo", hashPart(node.outputs.out)))!, "/tmp/nix/store").references).toEqual([base(node.outputs.dev)]);
  });

  it("counts a path as published from the moment its writes start: a second build accepted before they land finds it present", async () => {
    await stage(node.outputs.out, "w1");
    await stage(node.outputs.dev, "w1");
    const again: Lease = { ...lease, epoch: 4 };
    await stage(node.outputs.out, "w2", again);
    await stage(node.outputs.dev, "w2", again);
    const first = await publishOutputs(publisher, node, ["j1"], report(), "w1", logger);
    const second = await publishOutputs(publisher, node, ["j2"], report(NAR_HASH, again), "w2", logger);
    expect([first.verified, second.verified]).toEqual([true, true]);
    await Promise.all([first.written, second.written]);
    expect(JSON.parse((await storage.getText("provenance", hashPart(node.outputs.out)))!).workerId).toBe("w1");
    expect(await storage.getText("staged", stagedName(node.outputs.out, again, "w2"))).not.toBeNull(); // never published: swept later
  });

  it("retries a failed write of an accepted output until it lands, going on from what landed", async () => {
    // Each output's provenance fails once, after its narinfo landed: the retry records it, though the narinfo is there now.
    let failures = 2;
    const flaky = new Proxy(storage, {
      get: (target, key) => {
        if (key === "put") {
          return (kind: string, ...rest: unknown[]) =>
            kind === "provenance" && failures > 0 ? (failures--, Promise.reject(new Error("ENOSPC: no space left on device"))) : (target.put as (...a: unknown[]) => unknown)(kind, ...rest);
        }
        const v = Reflect.get(target, key) as unknown;
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const errors: string[] = [];
    const watched = pino({ level: "error" }, { write: (line: string) => void errors.push(JSON.parse(line).msg) });
    const onFlaky = new OutputPublisher({ storage: flaky, signingKey: parseSecretKey(keys.secretKey), logger: watched, now: () => 42 });
    await stage(node.outputs.out, "w1");
    await stage(node.outputs.dev, "w1");
    expect(await accepted(onFlaky, node, ["j1"], report(), "w1", logger)).toBe(true);
    expect(failures).toBe(0);
    expect(errors).toEqual(["writing an accepted output failed; retrying", "writing an accepted output failed; retrying"]);
    for (const p of Object.values(node.outputs)) {
      expect(verifyNarInfo(parseNarInfo((await storage.getText("narinfo", hashPart(p)))!, "/tmp/nix/store"), [keys.publicKey])).toBe(true);
      expect(JSON.parse((await storage.getText("provenance", hashPart(p)))!)).toMatchObject({ storePath: p, workerId: "w1" });
      expect(await storage.getText("staged", stagedName(p, lease, "w1"))).toBeNull();
    }
  });

  it("sweeps staged uploads whose leases ended without acceptance", async () => {
    await stage(node.outputs.out, "w9");
    expect(await publisher.sweep(100)).toBe(0); // staged at 1, now 42
    expect(await publisher.sweep(10)).toBe(1);
    expect(await storage.getText("staged", stagedName(node.outputs.out, lease, "w9"))).toBeNull();
  });
});
