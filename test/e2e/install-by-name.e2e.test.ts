// Installing by name as a user with nothing but the cache URL and the farm's
// key: a real farm (coordinator, NATS, Nix workers in their own namespaces)
// builds the demo and publishes it in the signed package index; uid 65534, in
// a namespace with an empty /tmp/nix, nothing under /nix, and an environment
// of PATH (node only), HOME, FARM_CACHE_URL and FARM_TRUSTED_KEYS, installs it
// by name, upgrades to a rebuilt demo (surviving a SIGKILL mid-upgrade), rolls
// back, removes it and collects the garbage. Bad indexes are refused.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { FarmCluster, REPO, FARM_CLI } from "../harness/cluster.js";
import { runIsolated, spawnIsolated } from "../harness/isolated.js";
import { waitFor } from "../harness/ports.js";
import { generateKeyPair, readPackageIndex, signPackageIndex, type PackageIndex } from "../../proto/nix/mod.js";

const DEMO = path.join(REPO, "test/fixtures/demo/default.nix");
const SH_DRV = path.join(REPO, "test/fixtures/sh-derivation.nix");
const EXPECTED = "hello from tmpnix farm (libgreet 1.0, 2 programs)";
const EXPECTED_V2 = "hello from tmpnix farm v2 (libgreet 1.0, 3 programs)";
const NOBODY = 65534;
const SD = "/tmp/nix/store";

let farm: FarmCluster;
let box: ReturnType<typeof userSandbox>;

beforeAll(async () => {
  farm = await FarmCluster.start({ workers: [{ name: "w1" }, { name: "w2" }] });
  box = userSandbox();
}, 120_000);

afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
});

/** uid 65534's empty /tmp/nix and HOME, node alone on PATH, the checkout exposed at `repo`. */
function userSandbox() {
  const dir = mkdtempSync(path.join(farm.root, "user-"));
  chmodSync(dir, 0o755);
  const nixDir = path.join(dir, "nix");
  const home = path.join(dir, "home");
  const repo = path.join(dir, "repo");
  const bin = path.join(dir, "bin");
  for (const d of [nixDir, home, repo, bin]) {
    mkdirSync(d, { recursive: true });
    chownSync(d, NOBODY, NOBODY);
  }
  symlinkSync(process.execPath, path.join(bin, "node"));
  const profile = path.join(home, ".local/share/tmpnix/profile");
  return { dir, nixDir, home, bin, profile, cli: path.join(repo, path.relative(REPO, FARM_CLI)), expose: { source: REPO, at: repo } };
}

/** The user's environment: nothing but these four. */
const userEnv = (cacheUrl = farm.cacheUrl) => ({ PATH: box.bin, HOME: box.home, FARM_CACHE_URL: cacheUrl, FARM_TRUSTED_KEYS: farm.publicKey() });

/** Runs `sh -c script` as uid 65534 in the user's namespace. */
function asUser(script: string, cacheUrl?: string) {
  return runIsolated("user", "/bin/sh", ["-c", script], { nixDir: box.nixDir, uid: NOBODY, hideNix: true, expose: box.expose, cwd: box.home, env: userEnv(cacheUrl) });
}

const farmCmd = (args: string) => `node ${box.cli} ${args}`;
const demoBin = () => `${box.profile}/bin/tmpnix-demo`;
const storeEntries = () => (existsSync(path.join(box.nixDir, "store")) ? readdirSync(path.join(box.nixDir, "store")).sort() : []);
const validNixPaths = async () => (await import("../../proto/nix/install/mod.js")).validPaths(path.join(box.nixDir, "var/nix"));
const indexFile = () => path.join(farm.dataDir, "cache", "index", "packages.json");
const readIndex = (): PackageIndex => readPackageIndex(readFileSync(indexFile(), "utf8"), [farm.publicKey()], SD);

/** Submits a ref as the operator and waits until the index names its outputs under `name`. */
async function buildAndPublish(ref: string, name: string): Promise<string> {
  const r = await farm.cli(["submit", ref, "--follow", "--json"]);
  expect(r.code, r.stderr).toBe(0);
  const job = JSON.parse(r.stdout);
  expect(job.state).toBe("succeeded");
  const out = job.outputs[0].outputs.out as string;
  await waitFor(`'${name}' → ${out} in the index`, async () => existsSync(indexFile()) && readIndex().packages[name]?.[0]?.outputs.out === out, 30_000, 200);
  return out;
}

/** A changed demo: a new program (v2) on the same library, carrying 24 MiB of data so an upgrade takes long enough to be killed. */
function writeDemoV2(): string {
  const file = path.join(farm.root, "demo-v2.nix");
  writeFileSync(
    file,
    `let mk = import ${SH_DRV}; d = import ${DEMO};
  data = mk { name = "demo-data-2.0"; script = "head -c 25165824 /dev/urandom > $out"; };
in { demo = mk {
  name = "tmpnix-demo-2.0";
  script = ''
    mkdir -p "$out/bin"
    printf '#!/bin/sh\\n# data: %s\\nexec %s "tmpnix farm v2" 3\\n' \${data} \${d.helloGreet}/bin/hello-greet > "$out/bin/tmpnix-demo"
    chmod +x "$out/bin/tmpnix-demo"
  '';
}; }
`,
  );
  chmodSync(file, 0o644);
  return file;
}

describe("farm install by name, as nobody with only a cache URL and a key", () => {
  let v1 = "";
  let v2 = "";

  it("installs the demo by name in an empty namespace with no Nix, and it runs; farm list shows it", async () => {
    v1 = await buildAndPublish(`${DEMO}#demo`, "demo");
    const script = [
      "set -e",
      `test "$(/usr/bin/id -u)" = ${NOBODY}`,
      'test -z "$(/bin/ls -A /nix)" && test -z "$(/bin/ls -A /tmp/nix)"',
      'if command -v nix-store || command -v nix; then echo "nix is on PATH" >&2; exit 9; fi',
      'test "$(/usr/bin/env | /usr/bin/cut -d= -f1 | /usr/bin/sort | /usr/bin/tr "\\n" " ")" = "FARM_CACHE_URL FARM_TRUSTED_KEYS HOME PATH PWD " || { /usr/bin/env >&2; exit 8; }',
      farmCmd("install demo"),
      demoBin(),
      farmCmd("list --json"),
    ].join("; ");
    const r = await asUser(script);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    const demoLine = lines.findIndex((l) => l === EXPECTED);
    expect(demoLine, r.stdout).toBeGreaterThan(-1);
    const listed = JSON.parse(lines.slice(demoLine + 1).join("\n"));
    expect(listed.generation).toBe(1);
    expect(listed.packages).toMatchObject([{ name: "demo", version: "1.0", outputs: { out: v1 }, fromIndex: true }]);
    expect(listed.packages[0].source).toContain(`${DEMO}#demo`);
  }, 300_000);

  it("an operator publishes a name by hand (only paths the cache holds signed) and withdraws it", async () => {
    const pub = await farm.cli(["publish", "demo-pinned", v1, "--source", "pinned by hand", "--json"]);
    expect(pub.code, pub.stderr).toBe(0);
    expect(readIndex().packages["demo-pinned"][0]).toMatchObject({ outputs: { out: v1 }, source: "pinned by hand", version: "1.0" });
    const unsigned = `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-not-in-the-cache`;
    const bad = await farm.cli(["publish", "evil", unsigned]);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe(`farm publish: refusing to publish 'evil': output out (${unsigned}) is not in the cache signed`);
    expect((await farm.cli(["unpublish", "demo-pinned"])).code).toBe(0);
    expect(Object.keys(readIndex().packages)).toEqual(["demo"]);
  }, 60_000);

  it("stock Nix sees what farm installed: nix-store -r downloads nothing and --verify --check-contents passes", async () => {
    const conf = path.join(box.dir, "nix-conf");
    mkdirSync(conf);
    writeFileSync(path.join(conf, "nix.conf"), `build-users-group =\nsandbox = false\nsubstituters = ${farm.cacheUrl}\ntrusted-public-keys = ${farm.publicKey()}\nrequire-sigs = true\n`);
    chmodSync(conf, 0o755);
    const nixEnv = `PATH=/usr/bin:/bin NIX_CONF_DIR=${conf} NIX_STORE_DIR=${SD} NIX_STATE_DIR=/tmp/nix/var/nix NIX_LOG_DIR=/tmp/nix/var/log/nix`;
    const r = await asUser(`set -e; export ${nixEnv}; nix-store -r ${v1} 2>&1; nix-store --verify --check-contents 2>&1; echo verify-ok; nix-store -q --references ${v1}`);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/will be fetched|copying path|downloading/);
    expect(r.stdout).not.toMatch(/was modified|invalid|error/i);
    // Nix warns that a bare -r adds no GC root; nothing else may be said.
    const lines = r.stdout.trim().split("\n").filter((l) => !l.startsWith("warning: you did not specify '--add-root'"));
    expect(lines[0]).toBe(v1);
    expect(lines).toContain("verify-ok");
    expect(lines.slice(lines.indexOf("verify-ok") + 1).length).toBeGreaterThan(3); // its references are registered too
  }, 120_000);

  it("a SIGKILL in the middle of an upgrade leaves the first generation working; the next upgrade completes", async () => {
    v2 = await buildAndPublish(`${writeDemoV2()}#demo`, "demo");
    expect(readIndex().packages.demo.map((e) => e.outputs.out)).toEqual([v2, v1]); // the earlier build is kept for pinning
    const store = path.join(box.nixDir, "store");
    const p = spawnIsolated("upgrade", "/bin/sh", ["-c", farmCmd("upgrade")], { nixDir: box.nixDir, uid: NOBODY, hideNix: true, expose: box.expose, cwd: box.home, env: userEnv(), logFile: path.join(box.dir, "upgrade.log") });
    try {
      // The 24 MiB path is being unpacked: its temp dir is in the store.
      await waitFor("a download in progress", async () => storeEntries().some((n) => n.startsWith(".tmp-")) || p.exitCode !== undefined, 60_000, 5);
      expect(p.exitCode, p.log()).toBeUndefined();
      p.killAll();
      expect(await p.exited).toBe(137);
    } finally {
      await p.dispose();
    }
    expect(readdirSync(store).some((n) => n.startsWith(".tmp-"))).toBe(true); // really interrupted mid-download
    expect(readlinkSync(box.profile)).toBe("profile-generations/1");
    const after = await asUser(`set -e; ${demoBin()}; ${farmCmd("list --json")}; ${farmCmd("upgrade")}; ${demoBin()}`);
    expect(after.code, after.stderr).toBe(0);
    const out = after.stdout.trim().split("\n");
    expect(out[0]).toBe(EXPECTED);
    expect(out, after.stdout).toContain("upgraded demo 1.0 -> 2.0");
    expect(out.at(-1)).toBe(EXPECTED_V2);
    expect(readlinkSync(box.profile)).toBe("profile-generations/2");
  }, 300_000);

  it("rolls back to the first demo, and both print what they should", async () => {
    const r = await asUser(`set -e; ${demoBin()}; ${farmCmd("rollback")}; ${demoBin()}; ${farmCmd("list --json")}`);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe(EXPECTED_V2);
    expect(lines[1]).toBe("switched from generation 2 to 1: demo 1.0");
    expect(lines[2]).toBe(EXPECTED);
    expect(JSON.parse(lines.slice(3).join("\n"))).toMatchObject({ generation: 1, generations: [1, 2], packages: [{ outputs: { out: v1 } }] });
  }, 120_000);

  it("refuses a tampered index, one signed by another key, and an entry outside the store dir, with one line each and no change", async () => {
    const signed = readFileSync(indexFile(), "utf8");
    const index = readIndex();
    const outside: PackageIndex = { ...index, packages: { ...index.packages, evil: [{ ...index.packages.demo[0], name: "evil", outputs: { out: "/tmp/evil/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-evil" } }] } };
    const secret = readFileSync(path.join(farm.dataDir, "signing-key.sec"), "utf8").trim();
    const variants: Record<string, string> = {
      tampered: signed.replace(v1.slice(SD.length + 1, SD.length + 33), v2.slice(SD.length + 1, SD.length + 33)),
      otherKey: signPackageIndex(index, generateKeyPair(farm.publicKey().split(":")[0]).secretKey),
      outside: signPackageIndex(outside, secret),
    };
    expect(variants.tampered).not.toBe(signed);
    const before = { store: storeEntries(), profile: readlinkSync(box.profile), gens: readdirSync(`${box.profile}-generations`).sort() };
    for (const [what, text] of Object.entries(variants)) {
      const mirror = await serveIndex(text);
      try {
        const r = await asUser(`${farmCmd(what === "outside" ? "install evil" : "upgrade demo")}`, mirror.url);
        expect(r.code, `${what}: ${r.stderr}`).toBe(1);
        const lines = r.stderr.trim().split("\n");
        expect(lines, what).toHaveLength(1);
        const want = { tampered: /not signed by a trusted key/, otherKey: /not signed by a trusted key/, outside: /output out is \/tmp\/evil\/.*not a store path in \/tmp\/nix\/store/ }[what]!;
        expect(lines[0], what).toMatch(want);
        expect(lines[0]).toMatch(/^farm (upgrade|install): package index/);
      } finally {
        await mirror.close();
      }
      expect({ store: storeEntries(), profile: readlinkSync(box.profile), gens: readdirSync(`${box.profile}-generations`).sort() }, what).toEqual(before);
    }
  }, 120_000);

  it("remove then gc leaves the store empty and says how many bytes it freed", async () => {
    expect(storeEntries().length).toBeGreaterThan(5);
    const r = await asUser(`set -e; ${farmCmd("remove demo")}; ${farmCmd("gc --json")}`);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^removed demo; generation 3/);
    const gc = JSON.parse(lines.slice(1).join("\n"));
    expect(gc.bytesFreed).toBeGreaterThan(24 * 2 ** 20);
    expect(gc.deleted).toEqual(expect.arrayContaining([v1, v2]));
    expect(gc.generationsDeleted).toEqual([1, 2]);
    // Nothing is left but the empty .links dir the stock Nix run above made for itself.
    expect(storeEntries().filter((n) => n !== ".links")).toEqual([]);
    expect(await validNixPaths()).toEqual([]);
    await expect(asUser(demoBin())).resolves.toMatchObject({ code: 127 });
  }, 120_000);
});

/** A cache mirror serving `indexText` as its index and the farm's nix-cache-info. */
async function serveIndex(indexText: string): Promise<{ url: string; close: () => Promise<void> }> {
  const info = await (await fetch(`${farm.cacheUrl}/nix-cache-info`)).text();
  const server = http.createServer((req, res) => {
    if (req.url === "/nix-cache-info") return res.writeHead(200).end(info);
    if (req.url === "/index/packages.json") return res.writeHead(200, { "Content-Type": "application/json" }).end(indexText);
    res.writeHead(404).end("not here\n");
  });
  await new Promise<void>((r) => server.listen(0, "0.0.0.0", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise((r) => server.close(() => r())) };
}
