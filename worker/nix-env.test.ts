import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { destroyNixEnv, makeNixEnv } from "../proto/nix/testing/nix-env.js";
import { NixEnv, renderNixConf, scrubbedEnv } from "./nix-env.js";

const cache = { cacheUrl: "http://cache:7421", cachePublicKey: "farm-1:abc=" };

describe("the worker's Nix environment", () => {
  it("offers the worker's features to Nix too, and builds as build users only when told", () => {
    expect(renderNixConf(cache)).toContain("build-users-group = \n");
    expect(renderNixConf(cache)).not.toContain("extra-system-features");
    const conf = renderNixConf(cache, "nixbld", ["big-parallel", "snoop"]);
    expect(conf).toContain("build-users-group = nixbld\n");
    expect(conf).toContain("extra-system-features = big-parallel snoop\n");
  });

  it("names its own build hook, unless the path has a space Nix would split it at", () => {
    expect(renderNixConf(cache, "", [], "/tmp/nix/conf/decline-build-hook")).toContain("build-hook = /tmp/nix/conf/decline-build-hook\n");
    expect(renderNixConf(cache, "", [], "/tmp/my nix/decline-build-hook")).not.toContain("build-hook");
  });

  it("says when configuring changed its files, so sessions started with the old ones are ended", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "nix-env-"));
    try {
      const env = new NixEnv({ storeDir: path.join(dir, "store"), stateDir: path.join(dir, "var/nix"), logDir: path.join(dir, "var/log/nix") });
      expect(env.configure(cache)).toBe(true);
      expect(env.configure(cache)).toBe(false);
      expect(env.configure({ ...cache, cacheUrl: "http://other:7421" })).toBe(true);
      expect(readFileSync(path.join(env.confDir, "nix.conf"), "utf8")).toContain("http://other:7421");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("passes Nix nothing of the worker's own settings or secrets", () => {
    const env = scrubbedEnv({ PATH: "/bin", HOME: "/h", LC_TIME: "C", FARM_TOKEN: "secret", COORDINATOR_URL: "c:1", NIX_CONFIG: "x", NIX_SSL_CERT_FILE: "/ca.pem" });
    expect(env).toEqual({ PATH: "/bin", HOME: "/h", LC_TIME: "C", NIX_SSL_CERT_FILE: "/ca.pem" });
  });
});

describe("the worker's build hook (real Nix)", () => {
  it("is what Nix asks, says decline-permanently, and a build that needs two local builds still goes through", async () => {
    const nix = await makeNixEnv();
    try {
      const env = new NixEnv({ storeDir: nix.storeDir, stateDir: path.join(nix.nixRoot, "var/nix"), logDir: path.join(nix.nixRoot, "var/log/nix") });
      env.configure({ cacheUrl: "http://127.0.0.1:1", cachePublicKey: "k:AAAA" });
      const expr = `let a = builtins.derivation { name = "hook-a"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo a > $out"]; };
        in builtins.derivation { name = "hook-b"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "read x < \${a}; echo \${a} $x > $out"]; }`;
      const drv = (await execa("nix-instantiate", ["--expr", expr], { env: env.env(), extendEnv: false })).stdout.trim();
      const built = await execa("nix-store", ["-r", drv, "-vvvvv", "--option", "substitute", "false"], { env: env.env(), extendEnv: false, reject: false });
      expect(built.exitCode, built.stderr.slice(-2000)).toBe(0);
      expect(built.stderr).toContain(`starting build hook '${path.join(env.confDir, "decline-build-hook")}'`);
      expect(built.stderr).toContain("hook reply is 'decline-permanently'");
      expect(built.stderr.match(/starting build hook/g)).toHaveLength(1); // asked once, for the first of the two builds
      expect(readFileSync(built.stdout.trim(), "utf8")).toMatch(/-hook-a a\n$/);
    } finally {
      await destroyNixEnv(nix);
    }
  });
});
