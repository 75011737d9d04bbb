import { randomBytes } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../errors.js";
import { compressGzip, compressWherePays, compressXz, compressZstd, decompress, pipeThroughCommand, zstdDecompressJs } from "./compression.js";
import { chunked, collect } from "./testing/nar-fixtures.js";

const DATA = Buffer.concat([randomBytes(100_000), Buffer.alloc(300_000, 7), randomBytes(5000)]);

describe("compression", () => {
  it("round-trips zstd through the CLI and through fzstd, in small chunks", async () => {
    const zst = await collect(compressZstd(chunked(DATA, 10_000)));
    expect(zst.length).toBeLessThan(DATA.length);
    expect((await collect(zstdDecompressJs(chunked(zst, 333)))).equals(DATA)).toBe(true);
    expect((await collect(decompress("zstd", chunked(zst, 4096), { preferCli: true }))).equals(DATA)).toBe(true);
  });

  it("round-trips gzip in-process, and the gzip CLI reads it", async () => {
    const gz = await collect(compressGzip(chunked(DATA, 10_000)));
    expect(gz.length).toBeLessThan(DATA.length);
    expect((await collect(decompress("gzip", chunked(gz, 777)))).equals(DATA)).toBe(true);
    expect((await collect(pipeThroughCommand("gzip", ["-dc"], [gz]))).equals(DATA)).toBe(true);
    const corrupt = Buffer.from(gz);
    corrupt[corrupt.length >> 1] ^= 0xff;
    await expect(collect(decompress("gzip", [corrupt]))).rejects.toBeInstanceOf(InvalidInputError);
    await expect(collect(decompress("gzip", [gz.subarray(0, gz.length - 20)]))).rejects.toBeInstanceOf(InvalidInputError);
  });

  it("passes a small or hardly compressible input through as it is, compresses the rest, and lets go of the source either way", async () => {
    const rule = { maxAsIs: 4096, probeBytes: 16_384, minSaving: 0.1 };
    const text = Buffer.from("a line of a wrapper script\n".repeat(4000));
    const random = randomBytes(100_000);
    for (const [data, method] of [
      [text.subarray(0, 0), "none"],
      [text.subarray(0, 300), "none"],
      [text.subarray(0, 4096), "none"],
      [text.subarray(0, 4097), "gzip"],
      [text, "gzip"],
      [random, "none"], // its first 16 KiB save nothing
      [random.subarray(0, 10_000), "none"], // shorter than the probe: compressed whole, which saved nothing
      [Buffer.concat([random.subarray(0, 5000), text]), "gzip"], // a probe that saves enough compresses it all
    ] as const) {
      const out = compressWherePays(chunked(data, 1000), rule, "gzip", (s) => compressGzip(s));
      expect(() => out.method()).toThrow(/before it ended/);
      const bytes = await collect(out.stream);
      expect([data.length, out.method()]).toEqual([data.length, method]);
      expect((method === "none" ? bytes : await collect(decompress("gzip", [bytes]))).equals(data)).toBe(true);
    }
    // A consumer that stops early closes the source, on every path.
    for (const data of [text.subarray(0, 300), text, random]) {
      let closed = false;
      const source = (async function* () {
        try {
          yield* chunked(data, 100);
        } finally {
          closed = true;
        }
      })();
      for await (const _ of compressWherePays(source, rule, "gzip", (s) => compressGzip(s)).stream) break;
      expect(closed).toBe(true);
    }
  });

  it("refuses zstd frames declaring a window over the limit before decoding them", async () => {
    const level19 = await collect(pipeThroughCommand("zstd", ["-cq", "-19"], [DATA, DATA]));
    const limit = 8 << 20;
    expect((await collect(zstdDecompressJs(chunked(level19, 100), limit))).equals(Buffer.concat([DATA, DATA]))).toBe(true);
    // Two frames and a skippable frame between them, fed a byte at a time.
    const skippable = Buffer.concat([Buffer.from([0x5a, 0x2a, 0x4d, 0x18]), Buffer.from([3, 0, 0, 0]), Buffer.from("abc")]);
    const zst = await collect(compressZstd([DATA]));
    expect((await collect(zstdDecompressJs(chunked(Buffer.concat([zst, skippable, zst]), 1), limit))).length).toBe(2 * DATA.length);
    // A frame (single segment, 8-byte content size) that would make fzstd allocate 1 GiB.
    const huge = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xe0]), Buffer.from([0, 0, 0, 0x40, 0, 0, 0, 0]), Buffer.from([1, 0, 0])]);
    await expect(collect(zstdDecompressJs([huge], limit))).rejects.toThrow(/1073741824-byte window/);
    // A window descriptor of 2^30 in a multi-segment frame.
    await expect(collect(zstdDecompressJs([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 20 << 3])], limit))).rejects.toThrow(/window/);
    await expect(collect(zstdDecompressJs([zst.subarray(0, zst.length - 3)], limit))).rejects.toBeInstanceOf(InvalidInputError);
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
