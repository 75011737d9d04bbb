import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makePrivateStore, nix, type PrivateStore } from "../../test/fixtures/nix-store.js";
import { InvalidInputError } from "../errors.js";
import { parseDerivation } from "./aterm.js";

const MINIMAL =
  'Derive([("out","/s/aaa-x","","")],[("/s/bbb-y.drv",["dev","out"])],["/s/ccc-src"],"x86_64-linux","/bin/sh",["-c","echo"],[("name","x"),("out","/s/aaa-x")])';

describe("parseDerivation (hand-written input)", () => {
  it("reads every field", () => {
    const d = parseDerivation(MINIMAL);
    expect(d.outputs).toEqual([{ name: "out", path: "/s/aaa-x", hashAlgo: "", hash: "" }]);
    expect(d.inputDrvs).toEqual([{ path: "/s/bbb-y.drv", outputs: ["dev", "out"] }]);
    expect(d.inputSrcs).toEqual(["/s/ccc-src"]);
    expect(d.system).toBe("x86_64-linux");
    expect(d.builder).toBe("/bin/sh");
    expect(d.args).toEqual(["-c", "echo"]);
    expect([...d.env]).toEqual([["name", "x"], ["out", "/s/aaa-x"]]);
  });

  it("decodes the escapes Nix writes", () => {
    const d = parseDerivation(MINIMAL.replace('"echo"', String.raw`"a\"b\\c\nd\re\tf"`));
    expect(d.args[1]).toBe('a"b\\c\nd\re\tf');
  });

  it("tolerates one trailing newline only", () => {
    expect(parseDerivation(MINIMAL + "\n").system).toBe("x86_64-linux");
    expect(() => parseDerivation(MINIMAL + "x")).toThrow(`offset ${MINIMAL.length}: trailing characters`);
  });

  const at = (text: string, marker: string, extra = 0): RegExp => new RegExp(`offset ${text.indexOf(marker) + extra}: `);
  const badEscape = MINIMAL.replace('"echo"', String.raw`"a\x"`);
  const noComma = MINIMAL.replace('"/bin/sh",', '"/bin/sh"');
  const badSep = MINIMAL.replace('["-c","echo"]', '["-c";"echo"]');
  const bad: [string, string, RegExp[]][] = [
    ["empty input", "", [/offset 0: expected "Derive\(", found end of input/]],
    ["wrong header", "Derivation(", [/offset 0: expected "Derive\(", found "Derivation\("/]],
    ["truncated", MINIMAL.slice(0, 60), [new RegExp(`offset ${MINIMAL.lastIndexOf('"', 59)}: unterminated string`)]],
    ["unknown escape", badEscape, [at(badEscape, "\\x"), /unknown string escape "\\x"/]],
    ["missing comma", noComma, [at(noComma, '["-c"'), /expected ","/]],
    ["bad list separator", badSep, [at(badSep, ";"), /expected "," or "\]" in list/]],
    ["duplicate env key", MINIMAL.replace('("out","/s/aaa-x")]', '("name","y")]'), [/duplicate env key "name"/]],
    ["no outputs", MINIMAL.replace('("out","/s/aaa-x","","")', ""), [/derivation has no outputs/]],
  ];
  for (const [what, text, msgs] of bad) {
    it(`rejects ${what} with its position`, () => {
      let err: unknown;
      try {
        parseDerivation(text, "/s/test.drv");
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidInputError);
      expect((err as Error).message).toMatch(/^malformed derivation \/s\/test\.drv at offset \d+: /);
      for (const msg of msgs) expect((err as Error).message).toMatch(msg);
    });
  }
});

describe("parseDerivation (real .drv files from Nix 2.8)", () => {
  let store: PrivateStore;
  beforeAll(async () => {
    store = await makePrivateStore();
  });
  afterAll(() => store.cleanup());

  const tricky = 'quote " backslash \\ newline \n cr \r tab \t dollar $ unicode é ✓ end';

  it("round-trips strings with every escape through a real .drv", async () => {
    const file = join(store.root, "esc.nix");
    await writeFile(join(store.root, "src.txt"), "a source file\n");
    await writeFile(
      file,
      `builtins.derivation {
        name = "esc-1.0"; system = "x86_64-linux"; builder = "/bin/sh";
        args = [ "-c" (builtins.fromJSON ${JSON.stringify(JSON.stringify(tricky))}) ];
        tricky = builtins.fromJSON ${JSON.stringify(JSON.stringify(tricky))};
        src = ./src.txt;
        outputs = [ "out" "doc" ];
      }`,
    );
    const drvPath = (await nix(store, "nix-instantiate", [file])).trim();
    const d = parseDerivation(await readFile(drvPath, "utf8"), drvPath);
    expect(d.args).toEqual(["-c", tricky]);
    expect(d.env.get("tricky")).toBe(tricky);
    expect(d.outputs.map((o) => o.name)).toEqual(["doc", "out"]);
    expect(d.outputs.every((o) => o.path.startsWith(store.storeDir + "/"))).toBe(true);
    expect(d.inputSrcs).toHaveLength(1);
    expect(d.inputSrcs[0]).toMatch(/-src\.txt$/);
    expect(d.env.get("src")).toBe(d.inputSrcs[0]);
  });

  it("reads every .drv of the demo closure, including the fixed-output and multi-output ones", async () => {
    const demo = join(__dirname, "../../test/fixtures/demo/default.nix");
    const root = (await nix(store, "nix-instantiate", [demo, "-A", "demo"])).trim();
    const closure = (await nix(store, "nix-store", ["-qR", root])).trim().split("\n").filter((p) => p.endsWith(".drv"));
    const drvs = await Promise.all(closure.map(async (p) => [p, parseDerivation(await readFile(p, "utf8"), p)] as const));
    expect(drvs).toHaveLength(12);
    const byName = new Map(drvs.map(([p, d]) => [d.env.get("name"), { p, d }]));
    const src = byName.get("libgreet-1.0.c")!.d;
    expect(src.outputs).toEqual([
      {
        name: "out",
        path: expect.stringMatching(/-libgreet-1\.0\.c$/),
        hashAlgo: "sha256",
        hash: "d7bac41f6d5b506968103282f4d17efbd442f25952940268695335d8ea7b2087",
      },
    ]);
    const lib = byName.get("libgreet-1.0")!;
    expect(lib.d.outputs.map((o) => o.name)).toEqual(["dev", "lib", "out"]);
    const count = byName.get("greet-count-1.0")!.d;
    expect(count.inputDrvs.find((i) => i.path === lib.p)?.outputs).toEqual(["lib"]);
    const hello = byName.get("hello-greet-1.0")!.d;
    expect(hello.inputDrvs.find((i) => i.path === lib.p)?.outputs).toEqual(["dev", "lib"]);
  });
});
