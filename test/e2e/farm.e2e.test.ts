// The spine, end to end, with real NATS, real Nix, real gRPC and separate
// worker "containers": `farm submit` a 12-derivation DAG, build it on three
// isolated workers, check the signed cache, resubmit (nothing rebuilt), and
// install the result as an unprivileged user with stock Nix and with
// `farm install` (no Nix on PATH). Bad input gets one clear line each.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import path from "node:path";
import { FarmCluster, REPO, FARM_CLI } from "../harness/cluster.js";
import { runIsolated } from "../harness/isolated.js";
import { parseNarInfo, verifyNarInfo } from "../../proto/nix/mod.js";

const DEMO = path.join(REPO, "test/fixtures/demo/default.nix");
const EXPECTED = "hello from tmpnix farm (libgreet 1.0, 2 programs)";
const NOBODY = 65534;

let farm: FarmCluster;

beforeAll(async () => {
  farm = await FarmCluster.start({ workers: [{ name: "w1" }, { name: "w2" }, { name: "w3" }] });
}, 120_000);

afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
});

/** The job JSON printed by `farm submit --follow --json`. */
async function submit(ref: string) {
  const r = await farm.cli(["submit", ref, "--follow", "--json"]);
  return { ...r, job: r.stdout.trim() ? JSON.parse(r.stdout) : undefined };
}

function narinfos(): string[] {
  const dir = path.join(farm.dataDir, "cache");
  return readdirSync(dir).filter((f) => f.endsWith(".narinfo")).map((f) => readFileSync(path.join(dir, f), "utf8"));
}

function builtOn(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const line of farm.coordinatorLog().split("\n")) {
    if (!line.includes('"build reported"')) continue;
    const rec = JSON.parse(line);
    if (rec.outcome === "succeeded") counts[rec.worker] = (counts[rec.worker] ?? 0) + 1;
  }
  return counts;
}

/**
 * An empty /tmp/nix and HOME owned by an unprivileged user, and the checkout
 * exposed at `repo` (CI's clone may sit below a dir that user can't enter).
 */
function userSandbox(name: string) {
  const dir = mkdtempSync(path.join(farm.root, `${name}-`));
  const nixDir = path.join(dir, "nix");
  const home = path.join(dir, "home");
  const repo = path.join(dir, "repo");
  for (const d of [dir, nixDir, home, repo]) {
    mkdirSync(d, { recursive: true });
    chownSync(d, NOBODY, NOBODY);
  }
  return { dir, nixDir, home, repo, cli: path.join(repo, path.relative(REPO, FARM_CLI)), expose: { source: REPO, at: repo } };
}

describe("farm end to end", () => {
  let demoOut = "";

  it("builds the demo DAG on three isolated workers, every input through the cache", async () => {
    const { code, job, stderr } = await submit(`${DEMO}#demo`);
    expect(stderr).not.toMatch(/unexpected error/);
    expect(code, stderr).toBe(0);
    expect(job.state).toBe("succeeded");
    expect(job.counts.total).toBeGreaterThanOrEqual(12);
    expect(job.counts.failed ?? 0).toBe(0);
    demoOut = job.outputs[0].outputs.out;
    expect(demoOut).toMatch(/^\/tmp\/nix\/store\/[0-9a-z]{32}-tmpnix-demo/);
    // Work was spread: more than one worker built something.
    expect(Object.keys(builtOn()).length).toBeGreaterThan(1);
    // Workers never received Nix expressions.
    for (const w of ["w1", "w2", "w3"]) {
      const store = path.join(farm.root, "workers", w, "nix", "store");
      if (existsSync(store)) expect(readdirSync(store).filter((f) => f.endsWith(".nix"))).toEqual([]);
    }
  }, 300_000);

  it("signs every narinfo in the cache with the farm key", () => {
    const infos = narinfos();
    expect(infos.length).toBeGreaterThanOrEqual(13);
    for (const text of infos) {
      const info = parseNarInfo(text, "/tmp/nix/store");
      expect(verifyNarInfo(info, [farm.publicKey()]), info.storePath).toBe(true);
      // gzip, except a NAR of one disk block, kept as it is
      expect(info.compression, info.storePath).toBe(info.narSize <= 4096 ? "none" : "gzip");
    }
  });

  it("builds nothing when the same job is submitted again", async () => {
    const before = builtOn();
    const { code, job } = await submit(`${DEMO}#demo`);
    expect(code).toBe(0);
    expect(job.state).toBe("succeeded");
    // Everything it needs is done already: nothing queued, nothing built.
    expect(job.counts.done).toBe(job.counts.total);
    expect(builtOn()).toEqual(before);
  }, 120_000);

  it("installs as an unprivileged user with stock nix-store from the cache, and the program runs", async () => {
    const box = userSandbox("stock-nix");
    const conf = path.join(box.dir, "conf");
    mkdirSync(conf);
    writeFileSync(path.join(conf, "nix.conf"), `build-users-group =\nsandbox = false\nsubstituters = ${farm.cacheUrl}\ntrusted-public-keys = ${farm.publicKey()}\nrequire-sigs = true\n`);
    const env = {
      PATH: "/usr/bin:/bin",
      HOME: box.home,
      USER: "nobody",
      NIX_CONF_DIR: conf,
      NIX_STORE_DIR: "/tmp/nix/store",
      NIX_STATE_DIR: "/tmp/nix/var/nix",
      NIX_LOG_DIR: "/tmp/nix/var/log/nix",
    };
    const script = `set -e; test "$(id -u)" = ${NOBODY}; test -z "$(ls -A /nix)"; nix-store -r ${demoOut} >/dev/null; ${demoOut}/bin/tmpnix-demo`;
    const r = await runIsolated("install-stock", "/bin/sh", ["-c", script], { nixDir: box.nixDir, uid: NOBODY, hideNix: true, env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(EXPECTED);
  }, 120_000);

  it("installs with `farm install` as an unprivileged user with no Nix on PATH", async () => {
    const box = userSandbox("farm-install");
    const bin = path.join(box.dir, "bin");
    mkdirSync(bin);
    symlinkSync(process.execPath, path.join(bin, "node"));
    const profile = path.join(box.home, "profile");
    const env = { PATH: bin, HOME: box.home, FARM_COORDINATOR: farm.coordinatorAddress, FARM_TOKEN: farm.token, FARM_TRUSTED_KEYS: farm.publicKey(), FARM_PROFILE: profile };
    const script = `set -e; if command -v nix-store || command -v nix; then echo "nix is on PATH" >&2; exit 9; fi; node ${box.cli} install ${DEMO}#demo; exec ${profile}/bin/tmpnix-demo`;
    const r = await runIsolated("install-farm", "/bin/sh", ["-c", script], { nixDir: box.nixDir, uid: NOBODY, hideNix: true, expose: box.expose, env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n").at(-1)).toBe(EXPECTED);
  }, 120_000);

  it("`farm install` refuses a /tmp/nix another local user owns or can write, and runs nothing planted there", async () => {
    const VICTIM = 65533; // a second unprivileged user
    const box = userSandbox("planted");
    chmodSync(box.dir, 0o755); // the victim reaches its home and the checkout below it
    const home = path.join(box.dir, "victim-home");
    mkdirSync(home);
    chownSync(home, VICTIM, VICTIM);
    const profile = path.join(home, "profile");
    // The attacker (nobody) made /tmp/nix and a world-writable store with the demo's path in it.
    const planted = path.join(box.nixDir, "store", path.basename(demoOut));
    mkdirSync(path.join(planted, "bin"), { recursive: true });
    writeFileSync(path.join(planted, "bin", "tmpnix-demo"), "#!/bin/sh\necho planted\n", { mode: 0o755 });
    chmodSync(path.join(box.nixDir, "store"), 0o1777);
    for (const p of [path.join(box.nixDir, "store"), planted, path.join(planted, "bin"), path.join(planted, "bin", "tmpnix-demo")]) chownSync(p, NOBODY, NOBODY);
    const install = () =>
      runIsolated("install-planted", process.execPath, [box.cli, "install", `${DEMO}#demo`], {
        nixDir: box.nixDir,
        uid: VICTIM,
        hideNix: true,
        expose: box.expose,
        env: { PATH: "/usr/bin:/bin", HOME: home, FARM_PROFILE: profile, FARM_COORDINATOR: farm.coordinatorAddress, FARM_TOKEN: farm.token, FARM_TRUSTED_KEYS: farm.publicKey() },
      });
    const lines = (t: string) => t.trim().split("\n").filter(Boolean);
    const owned = await install();
    expect(owned.code).toBe(1);
    expect(lines(owned.stderr)).toEqual(["farm install: refusing /tmp/nix: it belongs to uid 65534, not to you (uid 65533), who could plant programs in it; have it removed, or install into a store dir of your own (--store-dir)"]);
    // /tmp/nix and its store are the victim's, but the store is writable by everyone (a lax umask, say).
    chownSync(box.nixDir, VICTIM, VICTIM);
    chownSync(path.join(box.nixDir, "store"), VICTIM, VICTIM);
    const writable = await install();
    expect(writable.code).toBe(1);
    expect(lines(writable.stderr)).toHaveLength(1);
    expect(writable.stderr).toMatch(/^farm install: refusing \/tmp\/nix\/store: other users can write it \(mode 1777\)/);
    expect(existsSync(path.join(profile, "bin", "tmpnix-demo"))).toBe(false);
  }, 60_000);

  it("shows a derivation's build log, and status with a row per derivation", async () => {
    const status = JSON.parse((await farm.cli(["status", "--json"])).stdout) as { jobId: string }[];
    const job = JSON.parse((await farm.cli(["status", status[0].jobId, "--json"])).stdout);
    const test = job.derivations.find((d: { name: string }) => d.name === "greet-test-1.0");
    expect(test.state).toBe("done");
    expect(test.workerId).toMatch(/^w[123]$/);
    const logs = await farm.cli(["logs", test.drvPath]);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain("greet-test: hello from test (libgreet 1.0, 0 programs)");
    const json = JSON.parse((await farm.cli(["logs", test.drvPath, "--json"])).stdout);
    expect(json.log).toBe(logs.stdout);
    const text = await farm.cli(["workers"]);
    expect(text.stdout).toMatch(/^WORKER\s+STATE/);
    // Cancelling a finished job changes nothing and says so.
    const cancel = JSON.parse((await farm.cli(["cancel", status[0].jobId, "--json"])).stdout);
    expect(cancel.state).toBe("succeeded");
    const missing = await farm.cli(["cancel", "j-nope"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe("farm cancel: no job 'j-nope'");
  });

  it("fails a broken derivation with its log tail and fails its dependent, exit non-zero", async () => {
    const { code, job } = await submit(`${DEMO}#brokenDependent`);
    expect(code).toBe(1);
    expect(job.state).toBe("failed");
    const broken = job.failures.find((f: { name: string }) => f.name.startsWith("broken-1"));
    expect(broken.reason).toMatch(/exit code|failed/);
    expect(broken.logTail.join("\n")).toContain("this build fails on purpose");
    const dependent = job.failures.find((f: { name: string }) => f !== broken);
    expect(dependent.reason).toBe(`dependency failed: ${broken.name}`);
  }, 120_000);
});

describe("bad input gets one clear line and changes nothing", () => {
  const jobsCount = async () => JSON.parse((await farm.cli(["status", "--json"])).stdout).length;
  const oneLine = (s: string) => s.trim().split("\n").filter(Boolean);

  it.each([
    ["an unknown attribute", `${DEMO}#nope`, /unknown attribute 'nope'/],
    ["an evaluation error", `${DEMO}#evalError`, /fails to evaluate on purpose/],
    ["a missing file", `${path.join(REPO, "test/fixtures/no-such.nix")}#x`, /no-such\.nix/],
  ])("%s", async (_what, ref, message) => {
    const before = await jobsCount();
    const r = await farm.cli(["submit", ref]);
    expect(r.code).not.toBe(0);
    const lines = oneLine(r.stderr).filter((l) => !l.startsWith("evaluating"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(message);
    expect(await jobsCount()).toBe(before);
  }, 60_000);

  it("an unreachable coordinator", async () => {
    const r = await farm.cli(["status"], { env: { FARM_COORDINATOR: "127.0.0.1:9", FARM_RPC_TIMEOUT: "3s" } });
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/cannot reach the coordinator at 127\.0\.0\.1:9/);
  });

  it("a worker with a wrong token exits with a clear line and never joins", async () => {
    const p = farm.startWorker({ name: "intruder", env: { FARM_TOKEN: "wrong-token-0123456789" } });
    const code = await Promise.race([p.exited, new Promise<number>((r) => setTimeout(() => r(-1), 30_000))]);
    expect(code).not.toBe(0);
    expect(code).not.toBe(-1);
    expect(p.log()).toMatch(/token/i);
    const workers = JSON.parse((await farm.cli(["workers", "--json"])).stdout) as { workerId: string }[];
    expect(workers.map((w) => w.workerId)).not.toContain("intruder");
    await farm.killWorker("intruder");
  }, 60_000);

  it("an upload whose NAR does not match its claimed hash", async () => {
    const hash = "0".repeat(32);
    const storePath = `/tmp/nix/store/${hash.replace(/0/g, "1")}-forged`;
    const nar = Buffer.concat([str("nix-archive-1"), str("("), str("type"), str("regular"), str("contents"), str("hi\n"), str(")")]);
    const res = await fetch(`${farm.cacheUrl}/upload/${hash.replace(/0/g, "1")}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${farm.token}`, "x-nix-store-path": storePath, "x-nix-references": "", "x-nix-nar-hash": `sha256:${"0".repeat(52)}` },
      body: nar,
    });
    expect(res.status).toBe(400);
    expect((await res.text()).trim().split("\n")).toHaveLength(1);
    expect((await fetch(`${farm.cacheUrl}/${hash.replace(/0/g, "1")}.narinfo`)).status).toBe(404);
  });

  it("`farm install` of a path signed by an untrusted key", async () => {
    const box = userSandbox("untrusted");
    const other = "someone-else-1:" + Buffer.alloc(32, 7).toString("base64");
    const r = await runIsolated("install-untrusted", process.execPath, [box.cli, "install", `${DEMO}#demo`], {
      nixDir: box.nixDir,
      uid: NOBODY,
      hideNix: true,
      expose: box.expose,
      env: { PATH: "/usr/bin:/bin", HOME: box.home, FARM_COORDINATOR: farm.coordinatorAddress, FARM_TOKEN: farm.token, FARM_TRUSTED_KEYS: other },
    });
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/signature|trusted/);
    expect(existsSync(path.join(box.nixDir, "store")) ? readdirSync(path.join(box.nixDir, "store")).filter((f) => !f.startsWith(".")) : []).toEqual([]);
  }, 60_000);
});

function str(s: string): Buffer {
  const b = Buffer.from(s);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(b.length));
  return Buffer.concat([len, b, Buffer.alloc((8 - (b.length % 8)) % 8)]);
}
