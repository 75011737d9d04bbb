// Paths registered by nix-db.ts are valid to a stock Nix 2.8: built in one
// store, copied file by file into a fresh store at the same path (no Nix
// involved), registered, then checked there with stock nix-store.
import { readFile, writeFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildTestAttr, destroyNixEnv, makeAltRoot, makeNixEnv, nixLines, runNix, type TestNixEnv } from "../testing/nix-env.js";
import { NixDbBusyError, registerValidPaths, unregisterPaths, validPaths, type ValidPath } from "./nix-db.js";

let nix: TestNixEnv;
let alt: string;
let infos: ValidPath[];
let app: string;

/** What stock Nix records for each path of a closure (hashes as in a narinfo: sha256:<nix32>). */
async function pathInfos(root: string): Promise<ValidPath[]> {
  const q = async (flag: string, p: string) => nixLines(nix, "nix-store", ["-q", flag, p]);
  return Promise.all(
    (await q("-R", root)).map(async (p) => ({ storePath: p, narHash: (await q("--hash", p))[0], narSize: Number((await q("--size", p))[0]), references: await q("--references", p), sigs: [] })),
  );
}

beforeAll(async () => {
  nix = await makeNixEnv();
  app = await buildTestAttr(nix, "app");
  infos = await pathInfos(app);
  alt = await makeAltRoot(nix, "fresh");
  // The bytes arrive without Nix (as farm install puts them there).
  for (const p of infos) await execa("cp", ["-a", p.storePath, join(alt, "store")]);
}, 120_000);

afterAll(async () => {
  if (nix) await destroyNixEnv(nix);
});

describe("registering paths in a stock Nix database", () => {
  it("makes copied paths valid: nix-store -r needs nothing, --verify --check-contents passes, references match", async () => {
    expect(infos.length).toBe(2);
    const added = await registerValidPaths(join(alt, "var/nix"), infos);
    expect(added.sort()).toEqual(infos.map((i) => i.storePath).sort());
    expect((await readFile(join(alt, "var/nix/db/schema"), "utf8")).trim()).toBe("10");
    // substituters is empty: realising works only if the path is valid already.
    expect(await nixLines(nix, "nix-store", ["-r", app], { altRoot: alt })).toEqual([app]);
    const verify = await runNix(nix, "nix-store", ["--verify", "--check-contents"], { altRoot: alt });
    expect(verify.stderr).not.toMatch(/error|invalid|modified|path '.*' was/i);
    expect((await nixLines(nix, "nix-store", ["-q", "--references", app], { altRoot: alt })).sort()).toEqual(infos.find((i) => i.storePath === app)!.references.sort());
    // The tables are the ones stock Nix creates.
    const schema = async (root: string) => (await execa("sqlite3", [join(root, "var/nix/db/db.sqlite"), ".schema"])).stdout.replace(/\s+/g, " ").replace(/ --[^,)]*/g, "");
    expect(await schema(alt)).toContain("CREATE TABLE ValidPaths");
    expect(await schema(alt)).toContain("CREATE TABLE Refs");
  });

  it("adds to a database Nix has used (WAL header), refuses while Nix has it open, and unregisters", async () => {
    const stateDir = join(alt, "var/nix");
    await runNix(nix, "nix-store", ["-q", "--hash", app], { altRoot: alt }); // Nix opened it: WAL mode in the header
    expect((await readFile(join(stateDir, "db/db.sqlite")).then((b) => b[18]))).toBe(2);
    expect(await registerValidPaths(stateDir, infos)).toEqual([]);
    await writeFile(join(stateDir, "db/db.sqlite-wal"), "");
    await expect(unregisterPaths(stateDir, [app])).rejects.toThrow(NixDbBusyError);
    await rm(join(stateDir, "db/db.sqlite-wal"));
    expect(await unregisterPaths(stateDir, [app])).toEqual([app]);
    expect((await validPaths(stateDir)).sort()).toEqual(infos.filter((i) => i.storePath !== app).map((i) => i.storePath));
    await expect(runNix(nix, "nix-store", ["-q", "--hash", app], { altRoot: alt })).rejects.toThrow(/not valid/);
  });
});
