import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findOnPath } from "../proto/nix/mod.js";
import { dumpDbFormat, NixUnavailableError, provideNix } from "./nix-bootstrap.js";

// Made in beforeAll, not when the file is collected: `vitest list` runs no hooks, and would leave it behind.
let dir = "";
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "nix-bootstrap-"));
});
afterAll(() => dir && rmSync(dir, { recursive: true, force: true }));
const logger = pino({ level: "silent" });
const base = () => ({ storeDir: path.join(dir, "nix", "store"), stateDir: path.join(dir, "nix", "var", "nix"), logDir: path.join(dir, "nix", "var", "log", "nix"), cacheUrl: "", cachePublicKey: "", logger });

describe("which Nix the worker runs", () => {
  it("finds only an executable regular file: a name covered by /dev/null (a hidden host Nix) is no Nix", () => {
    const bin = path.join(dir, "bin");
    const hidden = path.join(dir, "hidden");
    for (const d of [bin, hidden]) mkdirSync(d, { recursive: true });
    writeFileSync(path.join(bin, "nix-store"), "#!/bin/sh\n");
    chmodSync(path.join(bin, "nix-store"), 0o755);
    writeFileSync(path.join(bin, "not-exec"), "");
    symlinkSync("/dev/null", path.join(hidden, "nix-store"));
    expect(findOnPath("nix-store", `${hidden}:${bin}`)).toBe(path.join(bin, "nix-store"));
    expect(findOnPath("nix-store", hidden)).toBeUndefined();
    expect(findOnPath("not-exec", bin)).toBeUndefined();
  });

  it("keeps a host's Nix (its version asked in the worker's own dirs, not /nix), and says where it is", async () => {
    const nix = await provideNix({ ...base(), choice: "auto", pathEnv: "/usr/bin:/bin" });
    expect(nix).toEqual({ version: "2.8.0", source: expect.stringMatching(/^host \/.*nix-store$/) });
  });

  it("with no Nix and no cache settings, stops with one line naming them", async () => {
    const err = await provideNix({ ...base(), choice: "auto", pathEnv: path.join(dir, "empty") }).catch((e) => e);
    expect(err).toBeInstanceOf(NixUnavailableError);
    expect(err.message).toMatch(/set FARM_CACHE_URL and FARM_CACHE_PUBLIC_KEY/);
    await expect(provideNix({ ...base(), choice: "host", pathEnv: path.join(dir, "empty") })).rejects.toThrow(/FARM_NIX=host, but there is no nix-store on PATH/);
  });

  it("writes valid-path records as nix-store --dump-db does", () => {
    const SD = "/tmp/nix/store";
    const text = dumpDbFormat(
      [{ storePath: `${SD}/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nix-2.8.0`, url: "nar/x", compression: "gzip", narHash: "sha256:1mdy1md8w2xdihxsmy3jzabnwhcw3lypjq7sspc9cb0ghszla123", narSize: 9320, references: ["bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nix-unwrapped-2.8.0"], sigs: [] }],
      SD,
    );
    expect(text).toBe(`${SD}/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nix-2.8.0\nsha256:1mdy1md8w2xdihxsmy3jzabnwhcw3lypjq7sspc9cb0ghszla123\n9320\n\n1\n${SD}/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-nix-unwrapped-2.8.0\n`);
  });
});
