import { randomBytes } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../errors.js";
import { compressXz, compressZstd, decompress, pipeThroughCommand, zstdDecompressJs } from "./compression.js";
import { chunked, collect } from "./testing/nar-fixtures.js";

const DATA = Buffer.concat([randomBytes(100_000), Buffer.alloc(300_000, 7), randomBytes(5000)]);

describe("compression", () => {
  it("round-trips zstd through the CLI and through fzstd, in small chunks", async () => {
    const zst = await collect(compressZstd(chunked(DATA, 10_000)));
    expect(zst.length).toBeLessThan(DATA.length);
    expect((await collect(zstdDecompressJs(chunked(zst, 333)))).equals(DATA)).toBe(true);
    expect((await collect(decompress("zstd", chunked(zst, 4096), true))).equals(DATA)).toBe(true);
  });

  it("round-trips xz and passes 'none' through", async () => {
    const xz = await collect(compressXz([DATA]));
    expect((await collect(decompress("xz", chunked(xz, 1000)))).equals(DATA)).toBe(true);
    expect((await collect(decompress("none", chunked(DATA, 999)))).equals(DATA)).toBe(true);
  });

  it("fails on corrupt or truncated input", async () => {
    const zst = await collect(compressZstd([DATA]));
    await expect(collect(zstdDecompressJs([zst.subarray(0, zst.length - 100)]))).rejects.toBeInstanceOf(InvalidInputError);
    await expect(collect(decompress("xz", [Buffer.from("not xz at all")]))).rejects.toBeInstanceOf(InvalidInputError);
  });

  it("propagates a failing source and reports command failures", async () => {
    async function* failing() {
      yield Buffer.from("abc");
      throw new Error("source broke");
    }
    await expect(collect(pipeThroughCommand("cat", [], failing()))).rejects.toThrow("source broke");
    await expect(collect(pipeThroughCommand("sh", ["-c", "cat >/dev/null; echo oops >&2; exit 3"], [DATA]))).rejects.toThrow(/exit 3.*oops/);
    await expect(collect(pipeThroughCommand("/nonexistent/cmd", [], [DATA]))).rejects.toThrow(/ENOENT/);
  });

  it("kills the command when the consumer stops early", async () => {
    const pidFile = join(tmpdir(), `farm-compression-test-${process.pid}.pid`);
    const gen = pipeThroughCommand("sh", ["-c", `echo $$ > ${pidFile}; exec cat`], chunked(Buffer.alloc(10 << 20), 65536));
    for await (const _ of gen) break;
    const pid = Number(await readFile(pidFile, "utf8"));
    await rm(pidFile);
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
  });
});
