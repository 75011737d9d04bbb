import { describe, expect, it } from "vitest";
import { capLine, LineSplitter, LineTail, LogThrottle, parseDryRun, parseNixError } from "./nix-log.js";

describe("LineSplitter", () => {
  it("joins lines split across chunks and keeps the unfinished tail", () => {
    const s = new LineSplitter();
    expect(s.push(Buffer.from("a\nb"))).toEqual(["a"]);
    expect(s.push(Buffer.from("c\r\nd"))).toEqual(["bc"]);
    expect(s.end()).toEqual(["d"]);
    expect(s.end()).toEqual([]);
  });

  it("does not split a UTF-8 character across chunks", () => {
    const s = new LineSplitter();
    const bytes = Buffer.from("é\n");
    expect(s.push(bytes.subarray(0, 1))).toEqual([]);
    expect(s.push(bytes.subarray(1))).toEqual(["é"]);
  });
});

describe("LogThrottle", () => {
  const limits = { maxLineChars: 10, linesPerSecond: 5, batchLines: 4, batchMs: 100 };

  it("batches by size and by age", () => {
    const out: string[][] = [];
    const t = new LogThrottle((l) => out.push(l), limits, 0);
    for (let i = 0; i < 5; i++) t.push(`l${i}`, 0);
    expect(out).toEqual([["l0", "l1", "l2", "l3"]]);
    t.flush(50);
    expect(out).toHaveLength(1); // l4 is too young to go alone
    t.flush(100);
    expect(out[1]).toEqual(["l4"]);
  });

  it("drops a flood beyond the rate and says how much it dropped", () => {
    const out: string[] = [];
    const t = new LogThrottle((l) => out.push(...l), limits, 0);
    for (let i = 0; i < 100; i++) t.push(`x${i}`, 0); // burst allowance is 2 s worth = 10 lines
    t.flush(0, true);
    expect(out.slice(0, 10)).toEqual(Array.from({ length: 10 }, (_, i) => `x${i}`));
    expect(out[10]).toBe("[farm-worker: dropped 90 log lines (over 5 lines/s)]");
    t.push("later", 1000);
    t.flush(1000, true);
    expect(out.at(-1)).toBe("later");
  });

  it("cuts long lines", () => {
    expect(capLine("0123456789abc", 10)).toBe("0123456789 [farm-worker: cut 3 chars]");
    expect(capLine("short", 10)).toBe("short");
  });
});

describe("LineTail", () => {
  it("keeps the last lines", () => {
    const t = new LineTail(2);
    ["a", "b", "c"].forEach((l) => t.push(l));
    expect(t.all).toEqual(["b", "c"]);
  });
});

describe("parseNixError", () => {
  it("takes Nix's last error line, without colours or the trailing semicolon", () => {
    const lines = [
      "building '/tmp/nix/store/abc-bad.drv'...",
      "oops",
      "\x1b[31;1merror:\x1b[0m builder for '\x1b[35;1m/tmp/nix/store/abc-bad.drv\x1b[0m' failed with exit code 2;",
      "       last 10 log lines:",
    ];
    expect(parseNixError(lines)).toBe("builder for '/tmp/nix/store/abc-bad.drv' failed with exit code 2");
  });

  it("reads multi-line errors and says nothing when there is no error", () => {
    expect(parseNixError(["error:", "", "       … while fetching the input"])).toBe("… while fetching the input");
    expect(parseNixError(["all good"])).toBeUndefined();
  });
});

describe("parseDryRun", () => {
  it("lists derivations to build and paths to fetch", () => {
    const plan = parseDryRun([
      "these 2 derivations will be built:",
      "  /tmp/nix/store/a-x.drv",
      "  /tmp/nix/store/b-y.drv",
      "these 1 paths will be fetched (0.01 MiB download, 0.05 MiB unpacked):",
      "  /tmp/nix/store/c-z",
      "warning: something",
    ]);
    expect(plan).toEqual({ build: ["/tmp/nix/store/a-x.drv", "/tmp/nix/store/b-y.drv"], fetch: ["/tmp/nix/store/c-z"] });
    expect(parseDryRun(["this derivation will be built:", "  /tmp/nix/store/a-x.drv"]).build).toEqual(["/tmp/nix/store/a-x.drv"]);
  });
});
