import pino from "pino";
import { describe, expect, it } from "vitest";
import { formatNarInfo } from "../cache/narinfo.js";
import type { CacheFileKind, CacheStorage } from "../cache/storage.js";
import { hashPart } from "../cache/store-path.js";
import { mkNode } from "../core/test-support.js";
import type { BuildReport } from "../core/types.js";
import { outputsInCache } from "./output-check.js";

const NAR_HASH = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";

/** Just the reads output checking does, over a map. */
function memoryCache(files: Record<string, string>): CacheStorage {
  const key = (kind: CacheFileKind, name: string) => `${kind}/${name}`;
  return {
    getText: async (kind, name) => files[key(kind, name)] ?? null,
    has: async (kind, name) => key(kind, name) in files,
  } as CacheStorage;
}

function narinfo(storePath: string, nar = "x.nar.zst"): Record<string, string> {
  const text = formatNarInfo({ storePath, url: `nar/${nar}`, compression: "zstd", narHash: NAR_HASH, narSize: 8, references: [], sigs: [] });
  return { [`narinfo/${hashPart(storePath)}`]: text, [`nar/${nar}`]: "" };
}

describe("outputsInCache", () => {
  const node = mkNode("a", [], { outputs: ["out", "dev"] });
  const report: BuildReport = { lease: { drvPath: node.drvPath, epoch: 1 }, outcome: "succeeded", outputs: [], durationMs: 1, peakMemoryBytes: 0, cores: 1, error: "" };
  const logger = pino({ level: "silent" });

  it("is true only when every output has its narinfo and NAR in the cache", async () => {
    const both = { ...narinfo(node.outputs.out, "o.nar.zst"), ...narinfo(node.outputs.dev, "d.nar.zst") };
    expect(await outputsInCache(memoryCache(both), node, report, logger)).toBe(true);
    expect(await outputsInCache(memoryCache(narinfo(node.outputs.out)), node, report, logger)).toBe(false);
    const noNar = { ...both };
    delete noNar["nar/d.nar.zst"];
    expect(await outputsInCache(memoryCache(noNar), node, report, logger)).toBe(false);
  });
});
