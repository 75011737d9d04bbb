import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigError, ensureUserEnv, loadWorkerConfig, resolveWorkerConfig, WORKER_ID_FILE, type HostFacts, type RawWorkerConfig } from "./config.js";

const base = { COORDINATOR_URL: "127.0.0.1:7420", FARM_TOKEN: "t0k3n-t0k3n-t0k3n" };

function load(argv: string[], env: NodeJS.ProcessEnv): RawWorkerConfig {
  const r = loadWorkerConfig(argv, env);
  if (!("config" in r)) throw new Error("expected a config");
  return r.config;
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "worker-config-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const host = (suffix = "abcd1234"): HostFacts => ({
  hostname: () => "box.example",
  cores: () => 3,
  memoryBytes: () => 2 * 1024 ** 3,
  systems: () => ["x86_64-linux", "i686-linux"],
  randomSuffix: () => suffix,
});

describe("loadWorkerConfig", () => {
  it("applies defaults", () => {
    const c = load([], base);
    expect(c.storeDir).toBe("/tmp/nix/store");
    expect(c.maxBuilds).toBe(1);
    expect(c.logLevel).toBe("info");
    expect(c.metricsPort).toBe(0);
  });

  it("merges flags over env over the config file", () => {
    const file = path.join(dir, "w.json");
    writeFileSync(file, JSON.stringify({ maxBuilds: 2, cores: 5, logLevel: "warn", features: ["kvm"] }));
    const c = load(["--config", file, "--cores", "7"], { ...base, FARM_MAX_BUILDS: "3" });
    expect(c.cores).toBe(7); // flag beats file
    expect(c.maxBuilds).toBe(3); // env beats file
    expect(c.logLevel).toBe("warn"); // file beats default
    expect(c.features).toEqual(["kvm"]);
  });

  it("finds the config file through FARM_WORKER_CONFIG", () => {
    const file = path.join(dir, "w.json");
    writeFileSync(file, JSON.stringify({ memoryBytes: "1G" }));
    expect(load([], { ...base, FARM_WORKER_CONFIG: file }).memoryBytes).toBe(1024 ** 3);
  });

  it("rejects unknown keys in the file and unknown flags", () => {
    const file = path.join(dir, "w.json");
    writeFileSync(file, JSON.stringify({ maxbuilds: 2 }));
    expect(problems(() => load(["--config", file], base))).toEqual([`config file ${file}: unknown key 'maxbuilds'`]);
    expect(problems(() => load(["--max-bulds", "2"], base))[0]).toMatch(/max-bulds/);
  });

  it("lists every missing or bad value at once with where it came from", () => {
    const p = problems(() => load(["--max-builds", "0"], { FARM_MEMORY: "lots", COORDINATOR_URL: "nope" }));
    expect(p).toContain("environment FARM_MEMORY: expected a size like 512M or 2G, got 'lots'");
    expect(p).toContain("coordinatorUrl: expected host:port or http(s)://host:port, got 'nope'");
    expect(p).toContain("missing token (set --token, or FARM_TOKEN, or 'token' in the config file)");
    expect(p).toContain("maxBuilds: expected 1 or more, got 0");
  });

  it("accepts https coordinator URLs and returns help on --help", () => {
    expect(load([], { ...base, COORDINATOR_URL: "https://farm.example:443" }).coordinatorUrl).toBe("https://farm.example:443");
    const r = loadWorkerConfig(["--help"], {});
    expect("help" in r && r.help).toMatch(/--coordinator-url \(COORDINATOR_URL\)/);
  });
});

describe("resolveWorkerConfig", () => {
  it("derives Nix dirs from the store dir and fills host limits", () => {
    const c = resolveWorkerConfig(load([], { ...base, NIX_STORE_DIR: path.join(dir, "nix", "store") }), host());
    expect(c.stateDir).toBe(path.join(dir, "nix", "var", "nix"));
    expect(c.logDir).toBe(path.join(dir, "nix", "var", "log", "nix"));
    expect(c.cores).toBe(3);
    expect(c.memoryBytes).toBe(2 * 1024 ** 3);
    expect(c.systems).toEqual(["x86_64-linux", "i686-linux"]);
  });

  it("keeps explicit values", () => {
    const c = resolveWorkerConfig(load(["--cores", "1", "--systems", "i686-linux", "--worker-id", "w1"], base), host());
    expect([c.cores, c.systems, c.workerId]).toEqual([1, ["i686-linux"], "w1"]);
  });

  it("persists the generated worker id in the state dir", () => {
    const raw = load([], { ...base, NIX_STORE_DIR: path.join(dir, "nix", "store") });
    const first = resolveWorkerConfig(raw, host("1111")).workerId;
    expect(first).toBe("box-1111");
    expect(readFileSync(path.join(dir, "nix", "var", "nix", WORKER_ID_FILE), "utf8").trim()).toBe("box-1111");
    expect(resolveWorkerConfig(raw, host("2222")).workerId).toBe("box-1111"); // reconnect/restart keeps it
    rmSync(path.join(dir, "nix"), { recursive: true });
    expect(resolveWorkerConfig(raw, host("3333")).workerId).toBe("box-3333"); // wiped /tmp: new name
  });
});

describe("ensureUserEnv", () => {
  it("sets USER only when missing", () => {
    const env: NodeJS.ProcessEnv = {};
    ensureUserEnv(env);
    expect(env.USER).toBeTruthy();
    const kept: NodeJS.ProcessEnv = { USER: "alice" };
    ensureUserEnv(kept);
    expect(kept.USER).toBe("alice");
  });
});
