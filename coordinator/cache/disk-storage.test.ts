import { mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { InvalidInputError } from "../core/errors.js";
import { DiskStorage } from "./disk-storage.js";
import { prepareAll } from "./storage.js";
import { collect } from "../../proto/nix/testing/nar-fixtures.js";

let root: string;
let storage: DiskStorage;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "farm-disk-storage-"));
  storage = await DiskStorage.open(root);
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function names(kind: "narinfo" | "nar" | "log"): Promise<string[]> {
  const out: string[] = [];
  for await (const n of storage.list(kind)) out.push(n);
  return out.sort();
}

describe("DiskStorage", () => {
  it("puts, gets, lists and mirrors the HTTP layout", async () => {
    expect(await storage.get("narinfo", "abc")).toBeNull();
    expect(await storage.put("narinfo", "abc", "info")).toBe(true);
    await storage.put("log", "x.drv", "log text");
    expect(await storage.getText("narinfo", "abc")).toBe("info");
    expect(await storage.has("log", "x.drv")).toBe(true);
    const f = (await storage.get("log", "x.drv"))!;
    expect(f.size).toBe(8);
    expect((await collect(f.stream)).toString()).toBe("log text");
    expect(await names("narinfo")).toEqual(["abc"]);
    expect((await readdir(root)).sort()).toEqual([".tmp", "abc.narinfo", "index", "log", "nar", "provenance", "staged"]);
  });

  it("writes empty and multi-megabyte files whole, and leaves no temp file behind", async () => {
    const big = Buffer.alloc(3 << 20, 7);
    big[big.length - 1] = 9;
    await storage.put("log", "empty.drv", "");
    await storage.put("nar", "big.nar", big);
    expect(await storage.getText("log", "empty.drv")).toBe("");
    expect((await storage.getBytes("nar", "big.nar"))!.equals(big)).toBe(true);
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("first writer wins with ifAbsent; plain put replaces", async () => {
    expect(await storage.put("narinfo", "p", "first", { ifAbsent: true })).toBe(true);
    expect(await storage.put("narinfo", "p", "second", { ifAbsent: true })).toBe(false);
    expect(await storage.getText("narinfo", "p")).toBe("first");
    expect(await storage.put("narinfo", "p", "third")).toBe(true);
    expect(await storage.getText("narinfo", "p")).toBe("third");
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("gives a narinfo to one of two creates-if-absent at once, and none over one it knows", async () => {
    const [a, b] = await Promise.all([storage.prepare("from a"), storage.prepare("from b")]);
    const won = await Promise.all([a.commit("narinfo", "q", { ifAbsent: true }), b.commit("narinfo", "q", { ifAbsent: true })]);
    expect(won.sort()).toEqual([false, true]);
    const text = await readFile(join(root, "q.narinfo"), "utf8");
    expect(["from a", "from b"]).toContain(text);
    expect(await storage.getText("narinfo", "q")).toBe(text);
    // Known from the directory at open, not only from this process's writes.
    await writeFile(join(root, "r.narinfo"), "earlier");
    const reopened = await DiskStorage.open(root);
    expect(await reopened.put("narinfo", "r", "later", { ifAbsent: true })).toBe(false);
    expect(await readFile(join(root, "r.narinfo"), "utf8")).toBe("earlier");
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("tells the loser of a create-if-absent only once the winner's narinfo can be read", async () => {
    // An upload that loses reads the narinfo that beat it, to answer 200 or 409: it must be there.
    const [a, b] = await Promise.all([storage.prepare("from a"), storage.prepare("from b")]);
    const seenByLoser: (string | null)[] = [];
    const commit = (f: typeof a) => f.commit("narinfo", "q", { ifAbsent: true }).then(async (won) => (won ? undefined : seenByLoser.push(await storage.getText("narinfo", "q"))));
    await Promise.all([commit(a), commit(b)]);
    expect(seenByLoser).toHaveLength(1);
    expect(["from a", "from b"]).toContain(seenByLoser[0]);
  });

  it("writes a NAR file in place, keeps one already there, and replaces a torn one", async () => {
    const nar = Buffer.from("nix-archive-1 bytes named by their hash");
    const [first, second] = await Promise.all([storage.put("nar", "h1.nar", nar), storage.put("nar", "h1.nar", nar)]);
    expect([first, second]).toEqual([true, true]);
    expect((await readFile(join(root, "nar", "h1.nar"))).equals(nar)).toBe(true);
    // A crash mid-write left the start of it: the next write of that NAR replaces it whole.
    await writeFile(join(root, "nar", "h2.nar"), nar.subarray(0, 10));
    expect(await storage.put("nar", "h2.nar", nar)).toBe(true);
    expect((await readFile(join(root, "nar", "h2.nar"))).equals(nar)).toBe(true);
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("creates a derivation's first log in place and replaces it whole with a later one", async () => {
    await storage.put("log", "a.drv", "first build\n");
    expect(await storage.getText("log", "a.drv")).toBe("first build\n");
    await storage.put("log", "a.drv", "second\n");
    expect(await readFile(join(root, "log", "a.drv"), "utf8")).toBe("second\n");
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("keeps a staged file invisible until commit, and leaves nothing when discarded or failed", async () => {
    const staged = await storage.stage();
    await pipeline(Readable.from([Buffer.from("nar bytes")]), staged.writable);
    expect(await names("nar")).toEqual([]);
    expect(await staged.commit("nar", "h.nar.zst")).toBe(true);
    expect(await storage.getText("nar", "h.nar.zst")).toBe("nar bytes");

    const failed = await storage.stage();
    async function* broken() {
      yield Buffer.from("partial");
      throw new Error("client went away");
    }
    await expect(pipeline(Readable.from(broken()), failed.writable)).rejects.toThrow("client went away");
    await expect(failed.commit("nar", "bad.nar.zst")).rejects.toThrow(/before its stream finished/);
    await failed.discard();
    await failed.discard();
    expect(await names("nar")).toEqual(["h.nar.zst"]);
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("keeps staged records in one journal, replayed and compacted when it opens, with no file per record", async () => {
    await storage.put("staged", "s1", "staged record");
    await storage.put("staged", "s2", "from before");
    expect(await storage.put("staged", "s2", "again", { ifAbsent: true })).toBe(false);
    await storage.remove("staged", "s1");
    expect(await storage.getText("staged", "s1")).toBeNull();
    expect(await storage.has("staged", "s2")).toBe(true);
    await expect((await storage.prepare("prepared record")).commit("staged", "s3")).resolves.toBe(true);
    expect(await readdir(join(root, "staged"))).toEqual(["journal"]);
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
    // A torn last line (a crash mid-append) and a record in the layout of older versions.
    await writeFile(join(root, "staged", "journal"), '{"n":"s4"', { flag: "a" });
    await writeFile(join(root, "staged", "s5"), "one file of an older version");
    const again = await DiskStorage.open(root);
    const names: string[] = [];
    for await (const n of again.list("staged")) names.push(n);
    expect(names.sort()).toEqual(["s2", "s3", "s5"]);
    expect(await again.getText("staged", "s2")).toBe("from before");
    expect(await again.getText("staged", "s5")).toBe("one file of an older version");
    expect(await readdir(join(root, "staged"))).toEqual(["journal"]);
    expect((await readFile(join(root, "staged", "journal"), "utf8")).trim().split("\n")).toHaveLength(3);
  });

  it("prepares small files invisibly, several at once, until each is committed or discarded", async () => {
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((x) => storage.prepare(`info ${x}`)));
    expect(await names("narinfo")).toEqual([]);
    expect(await a.commit("narinfo", "pa", { ifAbsent: true })).toBe(true);
    expect(await storage.getText("narinfo", "pa")).toBe("info a");
    expect(await b.commit("narinfo", "pa", { ifAbsent: true })).toBe(false); // first writer wins, as with put
    expect(await storage.getText("narinfo", "pa")).toBe("info a");
    await c.discard();
    await Promise.all([a, b, c].map((f) => f.discard())); // after a commit, or twice: nothing to do
    expect(await names("narinfo")).toEqual(["pa"]);
    await expect((await storage.prepare("x")).commit("narinfo", "../escape")).rejects.toBeInstanceOf(InvalidInputError);
    expect(await readdir(join(root, ".tmp"))).toHaveLength(1); // that one is the caller's to discard
  });

  it("prepares files beside a NAR's commit, and leaves none behind when that commit fails", async () => {
    const nar = await storage.stage();
    await pipeline(Readable.from([Buffer.from("nar bytes")]), nar.writable);
    const [info, record] = await prepareAll(storage, ["info", "record"], nar.commit("nar", "x.nar"));
    expect(await info.commit("narinfo", "px")).toBe(true);
    expect(await record.commit("provenance", "px")).toBe(true);
    const failing = prepareAll(storage, ["info", "record"], Promise.reject(new Error("disk went away")));
    await expect(failing).rejects.toThrow("disk went away");
    expect(await readdir(join(root, ".tmp"))).toEqual([]);
  });

  it("rejects names that could escape the root", async () => {
    for (const bad of ["../x", "a/b", ".hidden", "", "a b"]) {
      await expect(storage.put("nar", bad, "x")).rejects.toBeInstanceOf(InvalidInputError);
    }
  });

  it("serves narinfos from memory, and a publish or a removal at once", async () => {
    const path = join(root, "p.narinfo");
    expect(await storage.getText("narinfo", "p")).toBeNull(); // an unknown name...
    await storage.put("narinfo", "p", "published", { ifAbsent: true });
    expect(await storage.getText("narinfo", "p")).toBe("published"); // ...is not remembered as missing
    expect(await storage.has("narinfo", "p")).toBe(true);
    await writeFile(path, "edited behind the storage's back");
    expect(await storage.getText("narinfo", "p")).toBe("published"); // from memory, not the file
    await storage.remove("narinfo", "p");
    expect([await storage.getText("narinfo", "p"), await storage.has("narinfo", "p"), await storage.get("narinfo", "p")]).toEqual([null, false, null]);
    await writeFile(path, "a file this process did not write");
    expect(await storage.getText("narinfo", "p")).toBeNull(); // one writer: the storage knows what it published
  });

  it("finds narinfos written before it opened, and reads each from disk once", async () => {
    await storage.put("narinfo", "old", "from before");
    const reopened = await DiskStorage.open(root);
    expect(reopened.narinfoStats()).toEqual({ known: 1, held: 0, heldBytes: 0 });
    expect(await reopened.getText("narinfo", "old")).toBe("from before");
    await rm(join(root, "old.narinfo"));
    expect(await reopened.getText("narinfo", "old")).toBe("from before");
    expect(reopened.narinfoStats()).toMatchObject({ known: 1, held: 1 });
  });

  it("holds narinfo bytes within its budget, least recently used out first", async () => {
    const small = await DiskStorage.open(root, Date.now(), { narinfoMemoBytes: 3 * (100 + 160) });
    for (const n of ["a", "b", "c"]) await small.put("narinfo", n, n.repeat(100));
    await small.getText("narinfo", "a"); // now b is the least recently used
    await small.put("narinfo", "d", "d".repeat(100));
    expect(small.narinfoStats()).toEqual({ known: 4, held: 3, heldBytes: 3 * 260 });
    await rm(join(root, "b.narinfo"));
    await rm(join(root, "a.narinfo"));
    expect(await small.getText("narinfo", "b")).toBeNull(); // evicted, so read from disk: gone
    expect(await small.getText("narinfo", "a")).toBe("a".repeat(100)); // still held
  });

  it("does not keep what a read raced with a removal", async () => {
    const fresh = await DiskStorage.open(root);
    await storage.put("narinfo", "r", "to be withdrawn");
    const reader = await DiskStorage.open(root);
    const reading = reader.getText("narinfo", "r"); // reads the file: not held yet
    await reader.remove("narinfo", "r");
    await reading;
    expect(await reader.getText("narinfo", "r")).toBeNull();
    expect(reader.narinfoStats()).toEqual({ known: 0, held: 0, heldBytes: 0 });
    expect(await fresh.has("narinfo", "r")).toBe(false); // opened before it was written
  });

  it("removes stale temp files on open but keeps fresh ones", async () => {
    await writeFile(join(root, ".tmp", "old"), "x");
    await writeFile(join(root, ".tmp", "fresh"), "x");
    await utimes(join(root, ".tmp", "old"), 1000, 1000);
    await DiskStorage.open(root, Date.now());
    expect(await readdir(join(root, ".tmp"))).toEqual(["fresh"]);
  });
});
