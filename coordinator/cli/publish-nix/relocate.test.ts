// Relocating the host's Nix (Debian's nix-bin) for /tmp/nix/store, checked
// with the real thing: Nix's own path computation, the dynamic loader's own
// tracing in a namespace where the host's Nix is hidden, and a real build run
// by the relocated Nix as an unprivileged uid, under a seccomp filter that
// denies newer syscalls as the seed's hosts do.
import { cpSync, chmodSync, chownSync, lchownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execa } from "execa";
import { REPO } from "../../../test/harness/cluster.js";
import { runIsolated } from "../../../test/harness/isolated.js";
import { BARE_UID, bareEnv, hostNixPaths } from "../../../test/harness/bare-container.js";
import { parseLdd, relocateHostNix, type RelocatedNix } from "./relocate.js";
import { parseNixVersion } from "../../../proto/nix/mod.js";

const STORE = "/tmp/nix/store";
let root: string;
let relocated: RelocatedNix;

beforeAll(async () => {
  root = mkdtempSync(path.join(tmpdir(), "tmpnix-relocate-"));
  chmodSync(root, 0o755);
  const work = path.join(root, "work");
  mkdirSync(work);
  relocated = await relocateHostNix({ nixBinary: "/usr/bin/nix-store", storeDir: STORE, workDir: work, logger: pino({ level: "silent" }) });
}, 120_000);

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("parsing", () => {
  it("reads ldd and nix --version", () => {
    const text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibnixexpr.so => /usr/lib/nix/libnixexpr.so (0x00007f01)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f02)\n";
    const { loader, libs } = parseLdd(text);
    expect(loader).toBe("/lib64/ld-linux-x86-64.so.2");
    expect([...libs]).toEqual([["libnixexpr.so", "/usr/lib/nix/libnixexpr.so"]]);
    expect(() => parseLdd("\tlibfoo.so => not found\n")).toThrow(/misses a library/);
    expect(parseNixVersion("nix (Nix) 2.8.0\n")).toBe("2.8.0");
  });
});

describe("relocating the host's Nix", () => {
  it("makes three paths, each named as Nix names a source with those bytes and references", async () => {
    expect(relocated.paths.map((p) => path.basename(p.storePath).slice(33))).toEqual([`nix-libs-${relocated.version}`, `nix-unwrapped-${relocated.version}`, `nix-${relocated.version}`]);
    expect(relocated.paths[1].references).toEqual([relocated.paths[0].storePath]);
    expect(relocated.paths[2].references).toEqual([relocated.paths[0].storePath, relocated.paths[1].storePath]);
    // Nix's own answer for the path without references: `nix-store --add` of the same tree under the same name.
    const dir = path.join(root, "add");
    const named = path.join(dir, `nix-libs-${relocated.version}`);
    cpSync(relocated.paths[0].dir, named, { recursive: true, verbatimSymlinks: true });
    const r = await runIsolated("nix-add", "nix-store", ["--add", named], { nixDir: path.join(root, "add-nix"), env: { ...process.env, NIX_STORE_DIR: STORE, NIX_STATE_DIR: "/tmp/nix/var/nix" } });
    expect(r.stderr).not.toMatch(/error/);
    expect(r.stdout.trim()).toBe(relocated.paths[0].storePath);
  }, 120_000);

  it("runs as nobody where the host's Nix is hidden, loads nothing from the host, and builds", async () => {
    const hidden = hostNixPaths();
    expect(hidden.length).toBeGreaterThan(0);
    const nixDir = path.join(root, "bare-nix");
    for (const p of relocated.paths) cpSync(p.dir, path.join(nixDir, "store", path.basename(p.storePath)), { recursive: true, verbatimSymlinks: true });
    writeFileSync(path.join(root, "t.nix"), 'builtins.derivation { name = "t"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo built by the relocated nix > $out" ]; }\n');
    chownRecursive(nixDir, BARE_UID);
    const bin = `${relocated.main.storePath}/bin`;
    const unwrapped = `${relocated.paths[1].storePath}/bin/nix-store`;
    // The seed's hosts answer clone3, close_range, faccessat2 and fchmodat2 with EPERM (and affinity calls
    // with EINVAL): a seccomp filter of the test's own does the same to everything below it.
    const deny = path.join(root, "deny-new-syscalls");
    await execa("cc", ["-O1", "-o", deny, path.join(REPO, "test/fixtures/seccomp/deny-new-syscalls.c")]);
    const script = [
      // The host's Nix really is gone here.
      "if nix-store --version 2>/dev/null; then echo HOST-NIX-RUNS; fi",
      // Its own dirs, so nothing below can fail for want of a writable /nix/var.
      "export NIX_STORE_DIR=/tmp/nix/store NIX_STATE_DIR=/tmp/nix/var/nix NIX_LOG_DIR=/tmp/nix/var/log/nix",
      `${unwrapped} --version > /tmp/nix/allowed 2>&1`,
      `LD_DEBUG=libs ${unwrapped} --version 2>&1 | grep 'calling init:' | sed 's/.*calling init: //' | sort -u > /tmp/nix/loaded`,
      // glibc 2.36 falls back from clone3 only on ENOSYS: bare, this Nix can't start a thread there.
      `${deny} ${unwrapped} --version > /tmp/nix/denied 2>&1 || echo "exit $?" >> /tmp/nix/denied`,
      `export PATH=${bin}:$PATH`,
      // Its wrappers run it through syscall-compat, which turns those EPERMs back into ENOSYS.
      `${deny} /bin/sh -c 'drv=$(nix-instantiate ${root}/t.nix) && out=$(nix-store -r "$drv") && cat "$out"'`,
    ].join("\n");
    const r = await runIsolated("bare-nix", "/bin/sh", ["-c", script], { nixDir, hide: hidden, uid: BARE_UID, cwd: root, env: { ...bareEnv({}), HOME: "/tmp/nix" } });
    expect(r.stdout).not.toMatch(/HOST-NIX-RUNS/);
    expect(r.stdout.trim().split("\n").at(-1), r.stderr).toBe("built by the relocated nix");
    const loaded = readFileSync(path.join(nixDir, "loaded"), "utf8").trim().split("\n");
    expect(loaded.length).toBeGreaterThan(10);
    expect(loaded.filter((f) => !f.startsWith(`${STORE}/`))).toEqual([]);
    // Without the filter it runs; under it, it fails: what fails is the filter's doing.
    expect(readFileSync(path.join(nixDir, "allowed"), "utf8").trim()).toBe(`nix-store (Nix) ${relocated.version}`);
    expect(readFileSync(path.join(nixDir, "denied"), "utf8")).toMatch(/Operation not permitted[\s\S]*exit [1-9]/);
  }, 180_000);
});

function chownRecursive(dir: string, uid: number): void {
  chownSync(dir, uid, uid);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) chownRecursive(p, uid);
    else lchownSync(p, uid, uid);
  }
}
