import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { destroyNixEnv, makeNixEnv, nixLines } from "../proto/nix/testing/nix-env.js";
import { NixEnv } from "./nix-env.js";
import { NixStore } from "./nix-store.js";
import { narFromTree } from "../proto/nix/testing/nar-fixtures.js";


describe("NixStore.invalidPaths (real Nix)", () => {
  it("remembers what Nix said is valid: asking again, or about a path not on disk, starts no nix-store", async () => {
    const nix = await makeNixEnv();
    try {
      // A nix-store in front of the real one that counts its calls.
      const bin = path.join(nix.dir, "bin");
      const calls = path.join(nix.dir, "calls");
      mkdirSync(bin);
      writeFileSync(calls, "");
      const real = execFileSync("sh", ["-c", "command -v nix-store"], { encoding: "utf8" }).trim();
      writeFileSync(path.join(bin, "nix-store"), `#!/bin/sh\necho "$1" >> ${calls}\nexec ${real} "$@"\n`, { mode: 0o755 });
      const count = () => readFileSync(calls, "utf8").split("\n").filter(Boolean).length;
      const env = new NixEnv({ storeDir: nix.storeDir, stateDir: path.join(nix.nixRoot, "var/nix"), logDir: path.join(nix.nixRoot, "var/log/nix") }, { PATH: `${bin}:${process.env.PATH}` });
      env.configure({ cacheUrl: "http://127.0.0.1:1", cachePublicKey: "k:AAAA" });
      const store = new NixStore(env);
      const file = path.join(nix.dir, "hello.txt");
      writeFileSync(file, "hello\n");
      const [added] = await nixLines(nix, "nix-store", ["--add", file]);
      const missing = `${nix.storeDir}/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-missing`;

      expect(await store.invalidPaths([added, missing])).toEqual(new Set([missing]));
      expect(count()).toBe(1); // one call, about the path that is on disk
      expect(await store.invalidPaths([added, missing])).toEqual(new Set([missing]));
      expect(count()).toBe(1); // known valid, and still not on disk

      // Gone from disk behind Nix's back: invalid, whatever was remembered, still without a call.
      rmSync(added, { force: true });
      expect(await store.invalidPaths([added])).toEqual(new Set([added]));
      expect(count()).toBe(1);

      // What the serve session imported, it holds as a temporary root: deleting closes the session first.
      const imported = `${nix.storeDir}/1mdqa9w1p6cmli6976v4wi0sw9r4p5pr-imported`;
      expect(await store.import([{ storePath: imported, references: [], nar: [narFromTree({ file: "x" })] }])).toEqual([imported]);
      expect((await store.pathInfos([imported])).get(imported)?.narSize).toBeGreaterThan(0);
      await store.deletePaths([imported]);
      expect(await store.invalidPaths([imported])).toEqual(new Set([imported]));
      expect(readFileSync(calls, "utf8").split("\n").filter(Boolean)).toEqual(["--serve", "--delete"]); // gone from disk: invalid without asking
      await store.close();
    } finally {
      await destroyNixEnv(nix);
    }
  });
});
