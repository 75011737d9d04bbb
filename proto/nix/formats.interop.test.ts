// Interoperability of the wire formats with REAL Nix 2.8 in a private store.

import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeExport, parseExport, topoSortByReferences, type ExportItem } from "./export-stream.js";
import { dumpPath, hashSource, restoreNar } from "./nar.js";
import { parseNarInfo } from "./narinfo.js";
import { generateKeyPair, publicKeyOf, verifyNarInfo } from "./signing.js";
import { hashPart, makeStorePath } from "./store-path.js";
import { collect } from "./testing/nar-fixtures.js";
import { buildTestAttr, destroyNixEnv, makeAltRoot, makeNixEnv, nixLines, runNix, type TestNixEnv } from "./testing/nix-env.js";

let nix: TestNixEnv;
let outputs: Record<string, string>;
let closure: string[];

beforeAll(async () => {
  nix = await makeNixEnv();
  outputs = {};
  for (const attr of ["app", "file", "link"]) outputs[attr] = await buildTestAttr(nix, attr);
  closure = await nixLines(nix, "nix-store", ["-qR", outputs.app]);
  outputs.dep = closure.find((p) => p.endsWith("-farm-test-dep-1.0"))!;
}, 120_000);

afterAll(async () => {
  if (nix) await destroyNixEnv(nix);
});

async function query(flag: string, path: string): Promise<string[]> {
  return nixLines(nix, "nix-store", ["-q", flag, path]);
}

describe("formats against nix-store", () => {
  it("dumpPath is byte-identical to nix-store --dump, and NarHash/NarSize match", async () => {
    for (const [attr, path] of Object.entries(outputs)) {
      const ours = await collect(dumpPath(path));
      const theirs = (await runNix(nix, "nix-store", ["--dump", path])).stdout;
      expect(ours.equals(theirs), attr).toBe(true);
      const { hash, size } = await hashSource(dumpPath(path));
      expect(hash).toBe((await query("--hash", path))[0]);
      expect(size).toBe(Number((await query("--size", path))[0]));
    }
  });

  it("restoreNar of Nix's dump re-dumps (by Nix) to the same NAR", async () => {
    const tmp = await mkdtemp("/tmp/farm-cache-restore-");
    try {
      for (const path of Object.values(outputs)) {
        const nar = (await runNix(nix, "nix-store", ["--dump", path])).stdout;
        const dest = join(tmp, hashPart(path));
        await restoreNar([nar], dest);
        expect((await runNix(nix, "nix-store", ["--dump", dest])).stdout.equals(nar)).toBe(true);
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it("computes the store path of `nix-store --add` (source paths use the NAR hash)", async () => {
    const file = join(nix.dir, "added.txt");
    await writeFile(file, "some content\n");
    const [added] = await nixLines(nix, "nix-store", ["--add", file]);
    const narSha = createHash("sha256").update(await collect(dumpPath(file))).digest();
    expect(makeStorePath("source", narSha, "added.txt", nix.storeDir)).toBe(added);
  });

  it("parses nix-store --export output and re-encodes it byte for byte", async () => {
    const exported = (await runNix(nix, "nix-store", ["--export", ...closure])).stdout;
    const items = [];
    for await (const item of parseExport([exported], (nar) => collect(nar), nix.storeDir)) items.push(item);
    expect(items.map((i) => i.storePath)).toEqual(topoSortByReferences(items).map((i) => i.storePath));
    for (const item of items) {
      expect(item.narHash).toBe((await query("--hash", item.storePath))[0]);
      expect(item.sinkResult.equals(await collect(dumpPath(item.storePath)))).toBe(true);
      expect([...item.references].sort()).toEqual((await query("--references", item.storePath)).sort());
      expect(item.deriver).toBe((await query("--deriver", item.storePath))[0]);
    }
    const reencoded = await collect(encodeExport(items.map((i) => ({ ...i, nar: [i.sinkResult] }))));
    expect(reencoded.equals(exported)).toBe(true);
  });

  it("nix-store --import accepts our export stream into a fresh store at the same path", async () => {
    const metas = await Promise.all(
      closure.map(async (p) => ({ storePath: p, references: await query("--references", p), deriver: (await query("--deriver", p))[0] })),
    );
    const items: ExportItem[] = topoSortByReferences(metas).map((m) => ({ ...m, nar: dumpPath(m.storePath) }));
    const stream = await collect(encodeExport(items));
    const alt = await makeAltRoot(nix, "import");
    const out = await runNix(nix, "nix-store", ["--import"], { altRoot: alt, input: stream });
    expect(out.stdout.toString().trim().split("\n")).toEqual(items.map((i) => i.storePath));
    await runNix(nix, "nix-store", ["--verify-path", outputs.app], { altRoot: alt });
    const refs = await nixLines(nix, "nix-store", ["-q", "--references", outputs.app], { altRoot: alt });
    expect(refs.sort()).toEqual((await query("--references", outputs.app)).sort());
    const hello = await runNix(nix, `${outputs.app}/bin/app-hello`, [], { altRoot: alt });
    expect(hello.stdout.toString()).toBe("hi from dep\n");
    // The host store is untouched by the namespace; the alt root got the files.
    expect(await readFile(join(alt, "store", hashPart(outputs.dep) + "-farm-test-dep-1.0", "share/greeting"), "utf8")).toBe("hello\n");
  });

  it("verifies narinfos that Nix itself signed (nix copy --to file://)", async () => {
    const keys = generateKeyPair("nix-made-1");
    const keyFile = join(nix.dir, "nix-made.sec");
    await writeFile(keyFile, keys.secretKey);
    const cacheDir = join(nix.dir, "nix-made-cache");
    await runNix(nix, "nix", ["copy", "--to", `file://${cacheDir}?secret-key=${keyFile}&compression=none`, outputs.app]);
    for (const path of closure) {
      const info = parseNarInfo(await readFile(join(cacheDir, `${hashPart(path)}.narinfo`), "utf8"), nix.storeDir);
      expect(info.storePath).toBe(path);
      expect(info.narHash).toBe((await query("--hash", path))[0]);
      expect(verifyNarInfo(info, [publicKeyOf(keys.secretKey)])).toBe(true);
      expect(verifyNarInfo({ ...info, narSize: info.narSize + 1 }, [keys.publicKey])).toBe(false);
    }
  });
});
