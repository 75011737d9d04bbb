// The isolation every integration test and the demo rely on
// (deploy/local/isolate.sh): /tmp/nix inside is the caller's directory whether
// or not the host has a /tmp/nix, hidden host paths are empty inside whether or
// not the host has them, the host's /tmp stays reachable, nothing on the host
// is created, and a step that fails ends the run loudly.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ISOLATION_FAILED, runIsolated } from "./isolated.js";

let dir: string;
let hostHadTmpNix: boolean;

beforeAll(() => {
  hostHadTmpNix = existsSync("/tmp/nix");
  dir = mkdtempSync(path.join(os.tmpdir(), "tmpnix-isolate-"));
  chmodSync(dir, 0o755);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const sh = (script: string, opts: Partial<Parameters<typeof runIsolated>[3]> = {}) =>
  runIsolated("isolate-test", "/bin/sh", ["-c", script], { nixDir: path.join(dir, "nix"), env: { PATH: "/usr/bin:/bin" }, ...opts });

describe("isolate.sh", () => {
  it("binds the caller's directory at /tmp/nix and leaves the host's /tmp as it was", async () => {
    mkdirSync(path.join(dir, "nix"), { recursive: true });
    writeFileSync(path.join(dir, "nix", "marker"), "mine\n");
    const r = await sh(`cat /tmp/nix/marker && echo inside > /tmp/nix/written && cat ${dir}/nix/marker && touch /tmp/private-scratch-$$ && echo $$`);
    expect(r.code, r.stderr).toBe(0);
    const [marker, again, pid] = r.stdout.trim().split("\n");
    expect([marker, again]).toEqual(["mine", "mine"]); // /tmp/nix is the test's dir, and the rest of /tmp is still there
    expect(readFileSync(path.join(dir, "nix", "written"), "utf8")).toBe("inside\n");
    expect(existsSync(`/tmp/private-scratch-${pid}`)).toBe(false); // the top of /tmp is the namespace's own
    expect(existsSync("/tmp/nix")).toBe(hostHadTmpNix); // no host directory made to get there
  });

  it("hides a host directory (and a file), and a path the host lacks is no error", async () => {
    const secret = path.join(dir, "host-store");
    mkdirSync(path.join(secret, "store"), { recursive: true });
    writeFileSync(path.join(secret, "store", "planted"), "x");
    writeFileSync(path.join(dir, "host-binary"), "#!/bin/sh\necho host\n");
    const missing = path.join(dir, "no-such-dir");
    const r = await sh(`ls -A ${secret}; wc -c < ${dir}/host-binary; ls ${missing} 2>&1 || true`, {
      hide: [secret, path.join(dir, "host-binary"), missing],
    });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0].trim()).toBe("0"); // the dir is empty inside (ls printed nothing) and the file reads as empty
    expect(lines[1]).toMatch(/No such file/);
    expect(existsSync(missing)).toBe(false);
    expect(statSync(path.join(secret, "store", "planted")).size).toBe(1); // the host's copy untouched
  });

  it("hides /nix where the host has one; where it has none there is still none inside", async () => {
    const r = await sh("if [ -e /nix ]; then ls -A /nix | wc -l; else echo absent; fi", { hideNix: true });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(existsSync("/nix") ? "0" : "absent");
  });

  it("runs as the uid it is given, with the PATH it is given", async () => {
    const r = await sh("id -u; echo $PATH", { uid: 65534, env: { PATH: "/usr/bin:/bin" } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n")).toEqual(["65534", "/usr/bin:/bin"]);
  });

  it("fails loudly when a step of the isolation fails", async () => {
    await expect(sh("true", { nixDir: path.join(dir, "nix"), expose: { source: path.join(dir, "nope"), at: path.join(dir, "nix") } })).rejects.toThrow(
      /isolation of \/bin\/sh failed: .*isolate: --expose source/s,
    );
    expect(ISOLATION_FAILED).toBe(125);
  });
});
