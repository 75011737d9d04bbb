import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readFile, readlink, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { InvalidInputError } from "../errors.js";
import { TooLargeError } from "./errors.js";
import { dumpPath, formatSha256, hashSource, NarHasher, narEventsOf, parseNar, restoreNar, validatedNar, type NarEvent } from "./nar.js";
import type { NarLimits } from "./nar-parse.js";
import { chunked, collect, narFromTree, SAMPLE_TREE, type NarTree } from "./testing/nar-fixtures.js";
import { encodeString, encodeU64 } from "./serialise.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "farm-nar-test-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A file's contents as one `data` event, as narEventsOf gives them. */
function mergeData(events: NarEvent[]): NarEvent[] {
  const out: NarEvent[] = [];
  for (const ev of events) {
    const last = out[out.length - 1];
    if (ev.type === "data" && last?.type === "data") out[out.length - 1] = { type: "data", chunk: Buffer.concat([last.chunk, ev.chunk]) };
    else out.push(ev.type === "data" ? { type: "data", chunk: Buffer.from(ev.chunk) } : ev);
  }
  return out;
}

async function settle(run: () => Promise<NarEvent[]>): Promise<{ events: NarEvent[] } | { error: Error }> {
  return run().then((events) => ({ events }), (error: Error) => ({ error }));
}

/**
 * The events parseNar streams from `nar` in chunks; narEventsOf, reading the same bytes held whole, must give the
 * same events (contents merged) or fail with the same error: the two drivers share one grammar.
 */
async function events(nar: Buffer, chunk = 7, limits: NarLimits = {}): Promise<NarEvent[]> {
  const streamed = await settle(async () => {
    const out: NarEvent[] = [];
    for await (const ev of parseNar(chunked(nar, chunk), limits)) out.push(ev.type === "data" ? { type: "data", chunk: Buffer.from(ev.chunk) } : ev);
    return out;
  });
  const whole = await settle(async () => [...narEventsOf(nar, limits)]);
  if ("error" in streamed) {
    expect("error" in whole ? [whole.error.constructor, whole.error.message] : "no error").toEqual([streamed.error.constructor, streamed.error.message]);
    throw streamed.error;
  }
  expect("events" in whole ? whole.events : whole.error).toEqual(mergeData(streamed.events));
  return streamed.events;
}

async function rejects(nar: Buffer, pattern: RegExp, cls: Function = InvalidInputError): Promise<void> {
  const err = await events(nar).then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(cls);
  expect(String((err as Error).message)).toMatch(pattern);
}

describe("NAR round trip", () => {
  it("restore then dump reproduces the same bytes, and dump of the restored tree matches the fixture serialiser", async () => {
    const nar = narFromTree(SAMPLE_TREE);
    const dest = join(dir, "out");
    await restoreNar(chunked(nar, 5), dest);
    expect((await lstat(join(dest, "bin/hello"))).mode & 0o111).toBe(0o111);
    expect((await lstat(join(dest, "share/data.txt"))).mode & 0o100).toBe(0);
    expect(await readlink(join(dest, "link"))).toBe("bin/hello");
    expect(await readdir(join(dest, "emptydir"))).toEqual([]);
    expect(await readFile(join(dest, "share/naïve"), "utf8")).toBe("utf8 name");
    expect((await collect(dumpPath(dest))).equals(nar)).toBe(true);
  });

  it("dumps directory entries in byte order regardless of creation order", async () => {
    const root = join(dir, "t");
    await mkdir(root);
    for (const n of ["b", "B", "a", "_", "aa"]) await writeFile(join(root, n), n);
    const names = (await events(await collect(dumpPath(root)))).flatMap((e) => (e.type === "file" ? [e.path[0].toString()] : []));
    expect(names).toEqual(["B", "_", "a", "aa", "b"]);
  });

  it("handles a regular file and a symlink as the root", async () => {
    for (const tree of [{ file: "x".repeat(1000), executable: true }, { symlink: "/nonexistent/target" }] as NarTree[]) {
      const nar = narFromTree(tree);
      const dest = join(dir, "root-" + Object.keys(tree)[0]);
      await restoreNar(chunked(nar, 64), dest);
      expect((await collect(dumpPath(dest))).equals(nar)).toBe(true);
    }
  });

  it("streams file contents in pieces instead of one buffer", async () => {
    const big = Buffer.alloc(300_000, 1);
    const evs = await events(narFromTree({ file: big }), 65536);
    const data = evs.filter((e) => e.type === "data");
    expect(data.length).toBeGreaterThan(3);
    expect(Buffer.concat(data.map((d) => (d as { chunk: Buffer }).chunk)).equals(big)).toBe(true);
  });

  it("validatedNar passes bytes through unchanged and hashers agree with sha256", async () => {
    const nar = narFromTree(SAMPLE_TREE);
    expect((await collect(validatedNar(chunked(nar, 3)))).equals(nar)).toBe(true);
    const want = formatSha256(createHash("sha256").update(nar).digest());
    expect(await hashSource(chunked(nar))).toEqual({ hash: want, size: nar.length });
    const hasher = new NarHasher();
    const out: Buffer[] = [];
    hasher.on("data", (c: Buffer) => out.push(c));
    await pipeline(Readable.from(chunked(nar)), hasher);
    expect(hasher.result).toEqual({ hash: want, size: nar.length });
    expect(Buffer.concat(out).equals(nar)).toBe(true);
  });
});

describe("NAR validation", () => {
  const file: NarTree = { file: "x" };
  it.each([
    ["empty", ""],
    ["dot", "."],
    ["dotdot", ".."],
    ["slash", "a/b"],
    ["leading slash", "/etc"],
    ["NUL", "a\0b"],
  ])("rejects an entry name that is %s", async (_label, name) => {
    await rejects(narFromTree({ dir: [[name, file]] }), /entry name/);
  });

  it("rejects unsorted and duplicate entries", async () => {
    await rejects(narFromTree({ dir: [["b", file], ["a", file]] }), /ascending/);
    await rejects(narFromTree({ dir: [["a", file], ["a", file]] }), /ascending/);
    // Byte order, not locale order: "B" (0x42) sorts before "a" (0x61).
    await rejects(narFromTree({ dir: [["a", file], ["B", file]] }), /ascending/);
  });

  it("rejects every truncation of a valid NAR", async () => {
    const nar = narFromTree(SAMPLE_TREE);
    for (let len = 0; len < nar.length; len += 1) {
      const err = await events(nar.subarray(0, len), 11).then(() => null, (e: unknown) => e);
      expect(err, `prefix of ${len} bytes`).toBeInstanceOf(InvalidInputError);
    }
  });

  it("rejects trailing data, bad magic, unknown types and non-zero padding", async () => {
    const nar = narFromTree(SAMPLE_TREE);
    await rejects(Buffer.concat([nar, Buffer.alloc(8)]), /trailing/);
    await rejects(Buffer.concat([encodeString("nix-archive-2"), nar.subarray(24)]), /expected 'nix-archive-1'/);
    const fifo = Buffer.concat(["nix-archive-1", "(", "type", "fifo", ")"].map((t) => encodeString(t)));
    await rejects(fifo, /unknown node type/);
    const padded = narFromTree({ file: "abc" });
    const badPad = Buffer.from(padded);
    badPad[padded.length - 16 - 1] = 1; // last padding byte before ")"
    await rejects(badPad, /padding/);
  });

  it("rejects a non-empty executable marker and bad symlink targets", async () => {
    const t = (...xs: string[]) => Buffer.concat(xs.map((x) => encodeString(x)));
    await rejects(Buffer.concat([t("nix-archive-1", "(", "type", "regular", "executable", "yes")]), /expected ''/);
    await rejects(narFromTree({ symlink: "" }), /symlink target/);
    await rejects(narFromTree({ symlink: "a\0b" }), /symlink target/);
  });

  it("rejects huge declared sizes without allocating them", async () => {
    const head = Buffer.concat(["nix-archive-1", "(", "type", "regular", "contents"].map((x) => encodeString(x)));
    await rejects(Buffer.concat([head, encodeU64(2n ** 63n)]), /too large/);
    await rejects(Buffer.concat([head, encodeU64(2 ** 50), Buffer.alloc(64)]), /truncated/);
    await expect(events(Buffer.concat([head, encodeU64(2 ** 40)]), 7, { maxNarBytes: 1 << 20 })).rejects.toBeInstanceOf(TooLargeError);
    // Held whole, a NAR over the limit is refused before it is parsed.
    expect(() => [...narEventsOf(narFromTree(SAMPLE_TREE), { maxNarBytes: 64 })]).toThrow(TooLargeError);
    // A huge string length (e.g. a name) is refused before reading it.
    const hugeName = Buffer.concat([...["nix-archive-1", "(", "type", "directory", "entry", "(", "name"].map((x) => encodeString(x)), encodeU64(1 << 30)]);
    await rejects(hugeName, /exceeds limit/);
  });

  it("enforces the nesting limit", async () => {
    let tree: NarTree = file;
    for (let i = 0; i < 40; i++) tree = { dir: [["d", tree]] };
    await expect(events(narFromTree(tree), 7, { maxDepth: 10 })).rejects.toThrow(/nesting/);
  });
});

describe("restoreNar safety", () => {
  it("refuses an existing destination and leaves it untouched", async () => {
    const dest = join(dir, "exists");
    await mkdir(dest);
    await writeFile(join(dest, "keep"), "mine");
    await expect(restoreNar(chunked(narFromTree(SAMPLE_TREE)), dest)).rejects.toThrow(/EEXIST/);
    expect(await readFile(join(dest, "keep"), "utf8")).toBe("mine");
  });

  it("does not follow a symlink planted at the destination", async () => {
    const victim = join(dir, "victim");
    await mkdir(victim);
    const dest = join(dir, "planted");
    await symlink(victim, dest);
    await expect(restoreNar(chunked(narFromTree({ file: "evil" })), dest)).rejects.toThrow();
    expect(await readdir(victim)).toEqual([]);
  });

  it("removes everything it wrote when the NAR turns out invalid", async () => {
    const nar = narFromTree({ dir: [["a", { file: "ok" }], ["b", { dir: [["..", { file: "escape" }]] }]] });
    const dest = join(dir, "partial");
    await expect(restoreNar(chunked(nar), dest)).rejects.toBeInstanceOf(InvalidInputError);
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(join(dir, "escape"))).toBe(false);
  });

  it("removes everything when the source itself fails", async () => {
    const nar = narFromTree(SAMPLE_TREE);
    async function* failing() {
      yield nar.subarray(0, 200);
      throw new Error("connection reset");
    }
    const dest = join(dir, "broken");
    await expect(restoreNar(failing(), dest)).rejects.toThrow("connection reset");
    expect(existsSync(dest)).toBe(false);
  });
});
