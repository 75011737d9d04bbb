// The submitter's upload check against real Nix: every .drv, source and text
// file `nix-instantiate` puts in a store is recognised as its own bytes' path,
// and the same bytes under any other name are refused.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makePrivateStore, nix, type PrivateStore } from "../../test/fixtures/nix-store.js";
import { AuthError } from "../core/errors.js";
import { dumpPath, HashCounter, parseStorePath } from "../../proto/nix/mod.js";
import { assertContentAddressed, type ContentClaim } from "./content-address.js";

let store: PrivateStore;
beforeAll(async () => {
  store = await makePrivateStore();
});
afterAll(() => store.cleanup());

/** What an upload of `p` would claim, measured as the cache measures it. */
async function claimOf(p: string): Promise<ContentClaim> {
  const counter = new HashCounter();
  for await (const chunk of dumpPath(p)) counter.update(chunk);
  const references = (await nix(store, "nix-store", ["-q", "--references", p])).trim().split("\n").filter(Boolean).map((r) => r.slice(store.storeDir.length + 1));
  const singleFile = await readFile(p).catch(() => undefined);
  return { storePath: p, storeDir: store.storeDir, name: parseStorePath(p, store.storeDir).name, narHash: counter.result().hash, references, singleFile };
}

describe("assertContentAddressed (real Nix)", () => {
  it("accepts every .drv, source and text file of the demo's evaluation", async () => {
    const demo = join(__dirname, "../../test/fixtures/demo/default.nix");
    const root = (await nix(store, "nix-instantiate", [demo, "-A", "demo"])).trim();
    const closure = (await nix(store, "nix-store", ["-qR", root])).trim().split("\n");
    const sources = closure.filter((p) => !p.endsWith(".drv"));
    expect(closure.filter((p) => p.endsWith(".drv")).length).toBeGreaterThanOrEqual(12);
    expect(sources.length).toBeGreaterThanOrEqual(1);
    for (const p of closure) {
      const ca = assertContentAddressed(await claimOf(p));
      // A source's CA is Nix's own NAR hash of it; a text file's (every .drv is one) is the hash of its text.
      if (p.endsWith(".drv")) expect(ca, p).toMatch(/^text:sha256:[0-9a-z]{52}$/);
      else expect(ca, p).toBe(`fixed:r:${(await nix(store, "nix-store", ["-q", "--hash", p])).trim()}`);
    }
  });

  it("refuses the same bytes under another name, with other references, or a .drv that is no derivation", async () => {
    const file = join(store.root, "t.nix");
    await writeFile(file, `builtins.derivation { name = "ca-1.0"; system = "x86_64-linux"; builder = "/bin/sh"; src = ./t.nix; }`);
    const drv = (await nix(store, "nix-instantiate", [file])).trim();
    const claim = await claimOf(drv);
    const src = claim.references[0];
    const renamed = { ...claim, storePath: drv.replace(/\/[0-9a-z]{32}-/, "/0000000000000000000000000000000a-") };
    expect(() => assertContentAddressed(renamed)).toThrow(AuthError);
    expect(() => assertContentAddressed({ ...claim, references: [] })).toThrow(/is not the path of its own bytes/);
    const source = await claimOf(`${store.storeDir}/${src}`);
    expect(() => assertContentAddressed({ ...source, narHash: claim.narHash })).toThrow(/a submitter may upload only/);
  });
});
