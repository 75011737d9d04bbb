import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { destroyNixEnv, makeNixEnv, nixLines } from "../proto/nix/testing/nix-env.js";
import { NixEnv } from "./nix-env.js";
import { NixCommandError, NixStore, parseDumpDb } from "./nix-store.js";

const A = "/tmp/nix/store/54p3cnzxvhr11saklva8cryka50jha0j-hostname";
const B = "/tmp/nix/store/6crkkd9c58rjkq3ik45xfh5j3z6m1wng-f";
const DRV = "/tmp/nix/store/5g4kwpr0w70gpxbc0dp3yq0c167sxivw-f.drv";

describe("parseDumpDb", () => {
  it("reads hash, size and references of each path, with or without a deriver", () => {
    // As Nix 2.8's `nix-store --dump-db A B` prints it.
    const text = [A, "bcfc1a2d3fcc29a318e1ed9d31e57718f7b16731ac624a48d0ef5ec177372411", "152", "", "0", B, "468db5ea6007c3a5aecb8697570efd25274f83d620158c22f17d8e0978660a12", "184", DRV, "2", A, B, ""].join("\n");
    const infos = parseDumpDb(text);
    expect(infos.map((i) => i.path)).toEqual([A, B]);
    // `nix-store -q --hash A` says sha256:04946xvw2ppgs144lqmc65kv3xqqfzjk37gdw4ca6afc7wnimz5w for that digest.
    expect(infos[0]).toEqual({ path: A, narHash: "sha256:04946xvw2ppgs144lqmc65kv3xqqfzjk37gdw4ca6afc7wnimz5w", narSize: 152, references: [] });
    expect(infos[1].references).toEqual([A, B]);
    expect(infos[1].narSize).toBe(184);
  });

  it("refuses output it does not understand instead of guessing", () => {
    expect(() => parseDumpDb(`${A}\nnot-a-hash\n152\n\n0\n`)).toThrow(NixCommandError);
    expect(() => parseDumpDb(`${A}\nbcfc1a2d3fcc29a318e1ed9d31e57718f7b16731ac624a48d0ef5ec177372411\n152\n\n2\n${B}\n`)).toThrow(/ends before the references/);
  });
});

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
    } finally {
      await destroyNixEnv(nix);
    }
  });
});
