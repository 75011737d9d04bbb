// instantiate() against real Nix 2.8 in a private store, for the demo fixture,
// a stand-in nixpkgs directory and every error a user can cause.

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makePrivateStore, type PrivateStore } from "../../../test/fixtures/nix-store.js";
import { type InstantiateOptions, instantiate } from "./instantiate.js";
import { EvaluationError, MissingFileError, NixNotInstalledError, UnknownAttributeError } from "./nix-errors.js";

const DEMO_DIR = join(__dirname, "../../../test/fixtures/demo");
const logger = pino({ level: "silent" });

let store: PrivateStore;
let work: string;
const opts = (ref: string, extra: Partial<InstantiateOptions> = {}): InstantiateOptions => ({
  ref,
  storeDir: store.storeDir,
  stateDir: store.stateDir,
  logDir: store.logDir,
  logger,
  cwd: DEMO_DIR,
  ...extra,
});

/** The error instantiate() throws, checked to be a single line. */
async function failure(o: InstantiateOptions): Promise<Error> {
  const err = await instantiate(o).then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  expect(err, "instantiate should have failed").toBeInstanceOf(Error);
  expect(err!.message).not.toContain("\n");
  return err!;
}

beforeAll(async () => {
  store = await makePrivateStore();
  work = join(store.root, "work");
  await mkdir(work);
});
afterAll(() => store.cleanup());

describe("instantiate (good references)", () => {
  it("returns the demo DAG: roots, 12 nodes, every .drv and input source", async () => {
    const r = await instantiate(opts("./default.nix#demo"));
    expect(r.roots).toHaveLength(1);
    expect(r.roots[0]).toMatch(new RegExp(`^${store.storeDir}/[0-9a-z]{32}-tmpnix-demo-1\\.0\\.drv$`));
    expect(r.nodes).toHaveLength(12);
    const paths = new Set(r.nodes.map((n) => n.drvPath));
    expect(paths.has(r.roots[0])).toBe(true);
    for (const n of r.nodes) for (const i of n.inputDrvs) expect(paths.has(i.drvPath)).toBe(true);
    const drvFiles = r.closurePaths.filter((p) => p.endsWith(".drv"));
    expect(new Set(drvFiles)).toEqual(paths);
    const sources = r.closurePaths.filter((p) => !p.endsWith(".drv"));
    expect(sources).toEqual([expect.stringMatching(/-greet-count\.c$/)]);
    expect(r.nodes.flatMap((n) => n.inputSrcs)).toEqual(sources);

    const byName = new Map(r.nodes.map((n) => [n.name, n]));
    expect(byName.get("libgreet-1.0.c")!.fixedOutput).toBe(true);
    const lib = byName.get("libgreet-1.0")!;
    expect(Object.keys(lib.outputs).sort()).toEqual(["dev", "lib", "out"]);
    expect(byName.get("greet-count-1.0")!.inputDrvs.find((i) => i.drvPath === lib.drvPath)!.outputs).toEqual(["lib"]);
    expect(byName.get("tmpnix-demo-1.0")).toMatchObject({ pname: "tmpnix-demo", version: "1.0", system: "x86_64-linux" });
  });

  it("takes the file's own value for an empty attribute, resolving paths against cwd", async () => {
    const a = await instantiate(opts(`${DEMO_DIR}/default.nix#`));
    const b = await instantiate(opts("./default.nix#demo"));
    const c = await instantiate(opts("./default.nix", { cwd: DEMO_DIR }));
    const d = await instantiate(opts(".#demo"));
    expect(a.roots).toEqual(b.roots);
    expect(c.roots).toEqual(b.roots);
    expect(d.roots).toEqual(b.roots);
  });

  it("instantiates a derivation that will fail to build (and its dependent)", async () => {
    const r = await instantiate(opts("./default.nix#brokenDependent"));
    expect(r.nodes.map((n) => n.name).sort()).toEqual(["broken-1.0", "broken-dependent-1.0"]);
  });

  it("makes every derivation of a list or attrset a root", async () => {
    await writeFile(
      join(work, "many.nix"),
      `let d = n: builtins.derivation { name = n; system = "x86_64-linux"; builder = "/bin/sh"; };
       in { list = [ (d "a") (d "b") (d "a") ]; set = { x = d "x"; y = d "y"; z = 3; }; }`,
    );
    const list = await instantiate(opts("./many.nix#list", { cwd: work }));
    expect(list.roots).toHaveLength(2);
    expect(list.nodes).toHaveLength(2);
    const set = await instantiate(opts("./many.nix#set", { cwd: work }));
    expect(set.roots.map((p) => p.replace(/^.*\/[0-9a-z]{32}-/, "")).sort()).toEqual(["x.drv", "y.drv"]);
  });

  it("evaluates nixpkgs#attr against a nixpkgs path with empty config and overlays", async () => {
    const pkgs = join(work, "fake-nixpkgs");
    await mkdir(pkgs);
    await writeFile(
      join(pkgs, "default.nix"),
      `{ config ? { fromUser = true; }, overlays ? [ "user" ] }:
       assert config == {} && overlays == [];
       let d = n: builtins.derivation { name = n; system = "x86_64-linux"; builder = "/bin/sh"; };
       in rec { hello = d "hello-2.10"; python3Packages.requests = d "requests-2.24.0"; app = d "app-1.0" // { dep = hello; }; }`,
    );
    const r = await instantiate(opts("nixpkgs#python3Packages.requests", { nixpkgs: pkgs }));
    expect(r.nodes.map((n) => n.name)).toEqual(["requests-2.24.0"]);
    const rel = await instantiate(opts("nixpkgs#hello", { nixpkgs: "./fake-nixpkgs", cwd: work }));
    expect(rel.nodes[0]).toMatchObject({ pname: "hello", version: "2.10" });
    const err = await failure(opts("nixpkgs#nope", { nixpkgs: pkgs }));
    expect(err).toBeInstanceOf(UnknownAttributeError);
    expect(err.message).toMatch(/^unknown attribute 'nope' in nixpkgs/);
  });
});

describe("instantiate (errors, one line each)", () => {
  it("unknown attribute", async () => {
    const err = await failure(opts("./default.nix#nope"));
    expect(err).toBeInstanceOf(UnknownAttributeError);
    expect(err.message).toMatch(/^unknown attribute 'nope' in \.\/default\.nix( \(did you mean .*\?\))?$/);
    const nested = await failure(opts("./default.nix#libgreet.nope.x"));
    expect(nested.message).toMatch(/^unknown attribute 'nope' in \.\/default\.nix \(selecting 'libgreet\.nope\.x'\)/);
  });

  it("evaluation error: the first error line of Nix", async () => {
    const err = await failure(opts("./default.nix#evalError"));
    expect(err).toBeInstanceOf(EvaluationError);
    expect(err.message).toBe(
      "evaluation of ./default.nix#evalError failed: evalError: this attribute fails to evaluate on purpose (tmpnix farm bad-input fixture)",
    );
    await writeFile(join(work, "syntax.nix"), "{ x = 1 +; }");
    const syntax = await failure(opts("./syntax.nix#x", { cwd: work }));
    expect(syntax).toBeInstanceOf(EvaluationError);
    expect(syntax.message).toBe("evaluation of ./syntax.nix#x failed: syntax error, unexpected ';'");
    await writeFile(join(work, "value.nix"), "{ x = 1; empty = []; }");
    const notDrv = await failure(opts("./value.nix#x", { cwd: work }));
    expect(notDrv.message).toMatch(/^evaluation of \.\/value\.nix#x failed: expression does not evaluate to a derivation/);
    const empty = await failure(opts("./value.nix#empty", { cwd: work }));
    expect(empty.message).toBe("evaluation of ./value.nix#empty failed: it yields no derivations");
  });

  it("missing file or nixpkgs path", async () => {
    const err = await failure(opts("./nope.nix#a"));
    expect(err).toBeInstanceOf(MissingFileError);
    expect(err.message).toBe("file not found: ./nope.nix");
    const dir = await failure(opts("../#a"));
    expect(dir.message).toBe("file not found: ../");
    const pkgs = await failure(opts("nixpkgs#hello", { nixpkgs: "/nonexistent/nixpkgs" }));
    expect(pkgs).toBeInstanceOf(MissingFileError);
    expect(pkgs.message).toBe("nixpkgs not found: /nonexistent/nixpkgs");
  });

  it.each([
    ["holds the store's database", "error: SQLite database '/tmp/nix/var/nix/db/db.sqlite' is busy"],
    ["made the gcroots link first", "error: creating symlink from '/tmp/nix/var/nix/gcroots/profiles' to '/tmp/nix/var/nix/profiles': File exists"],
  ])("tries again when another Nix process setting up the same fresh store %s", async (_, error) => {
    // A nix-instantiate that fails once as Nix 2.8 does when a second process sets up a fresh store at the same time.
    const bin = await mkdtemp(join(tmpdir(), "farm-busy-nix-"));
    try {
      const real = (cmd: string) => execFileSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" }).trim();
      await writeFile(join(bin, "nix-instantiate"), `#!/bin/sh\nif [ ! -e "${bin}/tried" ]; then touch "${bin}/tried"; echo "${error}" >&2; exit 1; fi\nexec ${real("nix-instantiate")} "$@"\n`, { mode: 0o755 });
      await symlink(real("nix-store"), join(bin, "nix-store"));
      const r = await instantiate(opts("./default.nix#demo", { nixBinDir: bin }));
      expect(r.roots).toHaveLength(1);
      expect(existsSync(join(bin, "tried"))).toBe(true);
    } finally {
      await rm(bin, { recursive: true });
    }
  });

  it("Nix not installed", async () => {
    const empty = await mkdtemp(join(tmpdir(), "farm-no-nix-"));
    try {
      const err = await failure(opts("./default.nix#demo", { nixBinDir: empty }));
      expect(err).toBeInstanceOf(NixNotInstalledError);
      expect(err.message).toBe("nix-instantiate not found: install Nix 2.8 (nix-bin) and put it on PATH");
    } finally {
      await rm(empty, { recursive: true });
    }
  });
});
