import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makePrivateStore, nix, type PrivateStore } from "../../test/fixtures/nix-store.js";
import { InvalidInputError } from "../errors.js";
import { drvNodeFromText, parseDrvName, verifiedDrvNode } from "./drv-node.js";

const NAMES = [
  "hello-2.10",
  "gcc-wrapper-9.3.0",
  "chromium-unwrapped-84.0.4147.89",
  "bootstrap-stage0-stdenv-linux",
  "foo",
  "foo-",
  "-1.0",
  "python3.8-setuptools-47.3.1",
  "font-bh-100dpi-1.0.3",
  "libX11-1.6.8.tar.bz2",
  "a-b-c-1-2",
  "x--1",
  "perl5.30.2-Test-Simple-1.302175",
  "nss-cacert-3.54",
  "xz-5.2.5-bin",
];

describe("parseDrvName", () => {
  it("splits like a few known cases", () => {
    expect(parseDrvName("hello-2.10")).toEqual({ pname: "hello", version: "2.10" });
    expect(parseDrvName("gcc-wrapper-9.3.0")).toEqual({ pname: "gcc-wrapper", version: "9.3.0" });
    expect(parseDrvName("foo")).toEqual({ pname: "foo", version: "" });
  });

  it("agrees with Nix's builtins.parseDrvName", async () => {
    const store = await makePrivateStore();
    try {
      const expr = `map builtins.parseDrvName (builtins.fromJSON ${JSON.stringify(JSON.stringify(NAMES))})`;
      const out = await nix(store, "nix-instantiate", ["--eval", "--strict", "--json", "--expr", expr]);
      const want = (JSON.parse(out) as { name: string; version: string }[]).map((r) => ({ pname: r.name, version: r.version }));
      expect(NAMES.map(parseDrvName)).toEqual(want);
    } finally {
      await store.cleanup();
    }
  });
});

describe("drvNodeFromText (real .drv files)", () => {
  let store: PrivateStore;
  const drv = async (attrs: string): Promise<ReturnType<typeof drvNodeFromText>> => {
    const file = join(store.root, "t.nix");
    await writeFile(file, `builtins.derivation ({ system = "x86_64-linux"; builder = "/bin/sh"; } // ${attrs})`);
    const path = (await nix(store, "nix-instantiate", [file])).trim();
    return drvNodeFromText(path, await readFile(path, "utf8"));
  };
  beforeAll(async () => {
    store = await makePrivateStore();
  });
  afterAll(() => store.cleanup());

  it("uses defaults when nothing is set", async () => {
    const n = await drv(`{ name = "hello-2.10"; }`);
    expect(n).toMatchObject({
      name: "hello-2.10",
      pname: "hello",
      version: "2.10",
      system: "x86_64-linux",
      fixedOutput: false,
      requiredSystemFeatures: [],
      preferLocalBuild: false,
      allowSubstitutes: true,
      enableParallelBuilding: false,
      inputDrvs: [],
      inputSrcs: [],
    });
    expect(Object.keys(n.outputs)).toEqual(["out"]);
    expect(n.drvPath).toMatch(/-hello-2\.10\.drv$/);
  });

  it("decodes env booleans (Nix writes true as \"1\", false as \"\") and features", async () => {
    const n = await drv(`{
      name = "tool-1.0"; pname = "my-tool"; version = "1.0-rc1";
      preferLocalBuild = true; allowSubstitutes = false; enableParallelBuilding = true;
      requiredSystemFeatures = [ "big-parallel" "kvm" ];
    }`);
    expect(n).toMatchObject({
      pname: "my-tool",
      version: "1.0-rc1",
      preferLocalBuild: true,
      allowSubstitutes: false,
      enableParallelBuilding: true,
      requiredSystemFeatures: ["big-parallel", "kvm"],
    });
    const f = await drv(`{ name = "t"; preferLocalBuild = false; allowSubstitutes = true; enableParallelBuilding = false; }`);
    expect(f).toMatchObject({ preferLocalBuild: false, allowSubstitutes: true, enableParallelBuilding: false });
  });

  it("reads __structuredAttrs from __json", async () => {
    const n = await drv(`{
      __structuredAttrs = true; name = "structured-2.0";
      preferLocalBuild = true; allowSubstitutes = false; enableParallelBuilding = true;
      requiredSystemFeatures = [ "big-parallel" ];
    }`);
    expect(n).toMatchObject({
      name: "structured-2.0",
      pname: "structured",
      version: "2.0",
      preferLocalBuild: true,
      allowSubstitutes: false,
      enableParallelBuilding: true,
      requiredSystemFeatures: ["big-parallel"],
    });
  });

  it("marks fixed-output derivations and multi-output inputs", async () => {
    const fod = await drv(`{ name = "src.tar.gz"; outputHashMode = "flat"; outputHashAlgo = "sha256";
      outputHash = "01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b"; }`);
    expect(fod.fixedOutput).toBe(true);
    expect(fod.pname).toBe("src.tar.gz");
    const user = await drv(`{ name = "user"; dep = (builtins.derivation { name = "multi"; system = "x86_64-linux";
      builder = "/bin/sh"; outputs = [ "out" "lib" ]; }).lib; }`);
    expect(user.fixedOutput).toBe(false);
    expect(user.inputDrvs).toEqual([{ drvPath: expect.stringMatching(/-multi\.drv$/), outputs: ["lib"] }]);
  });
});

describe("drvNodeFromText (hand-written)", () => {
  const withEnv = (env: string): string =>
    `Derive([("out","/s/aaa-x","","")],[],[],"x86_64-linux","/bin/sh",[],[${env}])`;

  it("falls back to the drv path's name", () => {
    const n = drvNodeFromText("/s/0123456789abcdfghijklmnpqrsvwxyz-foo-1.2.drv", withEnv(""));
    expect(n).toMatchObject({ name: "foo-1.2", pname: "foo", version: "1.2" });
  });

  it("rejects a malformed __json", () => {
    expect(() => drvNodeFromText("/s/x.drv", withEnv('("__json","[1]")'))).toThrow(InvalidInputError);
    expect(() => drvNodeFromText("/s/x.drv", withEnv('("__json","{\\"preferLocalBuild\\":\\"yes\\"}")'))).toThrow(
      /preferLocalBuild is not a boolean/,
    );
  });
});

describe("derivationPathOf / verifiedDrvNode (real .drv files)", () => {
  let store: PrivateStore;
  beforeAll(async () => {
    store = await makePrivateStore();
  });
  afterAll(() => store.cleanup());

  it("gives every .drv of the demo's closure the path Nix gave it (sources, input drvs, a fixed output)", async () => {
    const demo = join(__dirname, "../../test/fixtures/demo/default.nix");
    const root = (await nix(store, "nix-instantiate", [demo, "-A", "demo"])).trim();
    const drvs = (await nix(store, "nix-store", ["-qR", root])).trim().split("\n").filter((p) => p.endsWith(".drv"));
    expect(drvs.length).toBeGreaterThanOrEqual(12);
    for (const p of drvs) {
      const text = await readFile(p, "utf8");
      expect(verifiedDrvNode(p, text).drvPath).toBe(p);
    }
  });

  it("refuses a .drv whose text is not its path's: a changed output, builder or input", async () => {
    const file = join(store.root, "v.nix");
    await writeFile(file, `builtins.derivation { name = "verify-me-1.0"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo hi > $out" ]; }`);
    const p = (await nix(store, "nix-instantiate", [file])).trim();
    const text = await readFile(p, "utf8");
    const out = verifiedDrvNode(p, text).outputs.out;
    const evil = out.replace(/\/[0-9a-z]{32}-/, "/00000000000000000000000000000000-");
    for (const tampered of [text.replaceAll(out, evil), text.replace("echo hi", "echo pwned")]) {
      expect(() => verifiedDrvNode(p, tampered)).toThrow(InvalidInputError);
      expect(() => verifiedDrvNode(p, tampered)).toThrow(new RegExp(`^${p}: the \\.drv stored under that path is the text of /`));
    }
  });
});
