import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FileWriter } from "./file-writer.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "farm-file-writer-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("FileWriter", () => {
  it("creates files from strings and from views of a larger buffer, flushed or not, and renames them", async () => {
    const writer = new FileWriter();
    const big = Buffer.alloc(10); // not from the pool: a buffer of its own, which a transfer would take away
    big.write("0123456789");
    const results = await Promise.all([writer.create(join(dir, "s"), "text ✓", true), writer.create(join(dir, "v"), big.subarray(3, 6), false)]);
    expect(results).toEqual(["done", "done"]);
    expect(await readFile(join(dir, "s"), "utf8")).toBe("text ✓");
    expect(await readFile(join(dir, "v"), "utf8")).toBe("345"); // the view's bytes, not its whole buffer
    expect((await stat(join(dir, "s"))).mode & 0o777).toBe(0o644);
    await writer.rename(join(dir, "s"), join(dir, "t"));
    expect((await readdir(dir)).sort()).toEqual(["t", "v"]);
    expect(big.toString()).toBe("0123456789"); // the caller's buffer is not moved away
  });

  it("leaves a file already there alone and says so", async () => {
    const writer = new FileWriter();
    await writeFile(join(dir, "taken"), "first");
    expect(await writer.create(join(dir, "taken"), "second", true)).toBe("exists");
    expect(await readFile(join(dir, "taken"), "utf8")).toBe("first");
  });

  it("fails one operation with its own error and goes on with the rest of its group", async () => {
    const writer = new FileWriter();
    const outcomes = await Promise.allSettled([
      writer.create(join(dir, "no-such-dir", "f"), "x", true),
      writer.rename(join(dir, "missing"), join(dir, "elsewhere")),
      writer.create(join(dir, "ok"), "fine", true),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(["rejected", "rejected", "fulfilled"]);
    expect((outcomes[0] as PromiseRejectedResult).reason).toMatchObject({ code: "ENOENT", syscall: "open" });
    expect((outcomes[1] as PromiseRejectedResult).reason).toMatchObject({ code: "ENOENT", syscall: "rename" });
    expect(await readFile(join(dir, "ok"), "utf8")).toBe("fine");
  });

  it("writes many files queued at once, each whole", async () => {
    const writer = new FileWriter();
    const n = 500;
    await Promise.all(Array.from({ length: n }, (_, i) => writer.create(join(dir, `f${i}`), `${i}\n`.repeat(i % 50), i % 2 === 0)));
    expect(await readdir(dir)).toHaveLength(n);
    for (const i of [0, 1, 49, 250, 499]) expect(await readFile(join(dir, `f${i}`), "utf8")).toBe(`${i}\n`.repeat(i % 50));
  });
});
