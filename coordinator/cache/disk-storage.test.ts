import { mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { InvalidInputError } from "../core/errors.js";
import { DiskStorage } from "./disk-storage.js";
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

  it("first writer wins with ifAbsent; plain put replaces", async () => {
    expect(await storage.put("narinfo", "p", "first", { ifAbsent: true })).toBe(true);
    expect(await storage.put("narinfo", "p", "second", { ifAbsent: true })).toBe(false);
    expect(await storage.getText("narinfo", "p")).toBe("first");
    expect(await storage.put("narinfo", "p", "third")).toBe(true);
    expect(await storage.getText("narinfo", "p")).toBe("third");
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

  it("rejects names that could escape the root", async () => {
    for (const bad of ["../x", "a/b", ".hidden", "", "a b"]) {
      await expect(storage.put("nar", bad, "x")).rejects.toBeInstanceOf(InvalidInputError);
    }
  });

  it("removes stale temp files on open but keeps fresh ones", async () => {
    await writeFile(join(root, ".tmp", "old"), "x");
    await writeFile(join(root, ".tmp", "fresh"), "x");
    await utimes(join(root, ".tmp", "old"), 1000, 1000);
    await DiskStorage.open(root, Date.now());
    expect(await readdir(join(root, ".tmp"))).toEqual(["fresh"]);
  });
});
