// TLS end to end, with a CA made here by openssl: the coordinator serves gRPC
// and the cache over TLS; a worker joins with COORDINATOR_URL=https://... and
// FARM_TLS_CA and builds the demo DAG (fetching and uploading through the
// https cache); the CLI talks TLS with --tls-ca; stock Nix 2.8 substitutes from
// the https cache. Plaintext or untrusting clients are refused. The cache's
// signing key never reaches a worker (env, files, logs).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { FarmCluster, REPO } from "../harness/cluster.js";
import { runIsolated } from "../harness/isolated.js";
import { farmClient, makeTestCa, newToken, writeTokens, type TestCa } from "./support.js";

const DEMO = path.join(REPO, "test/fixtures/demo/default.nix");
const EXPECTED = "hello from tmpnix farm (libgreet 1.0, 2 programs)";
const workerToken = newToken("tls-worker");
const worker2Token = newToken("tls-worker2");
const cliToken = newToken("tls-cli");

let farm: FarmCluster;
let dir: string;
let ca: TestCa;
let demoOut = "";

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "farm-tls-"));
  ca = makeTestCa(dir);
  const tokensFile = path.join(dir, "tokens");
  writeTokens(tokensFile, [["worker", "tls-w1", workerToken], ["worker", "tls-w2", worker2Token], ["cli", "alice", cliToken]]);
  // Every `farm` the harness runs inherits this: a CA file makes the CLI speak TLS.
  process.env.FARM_TLS_CA = ca.caFile;
  farm = await FarmCluster.start({
    workers: [],
    coordinatorEnv: { FARM_TLS_CERT: ca.certFile, FARM_TLS_KEY: ca.keyFile, FARM_TOKENS_FILE: tokensFile },
  });
  farm.startWorker({ name: "tls-w1", env: { COORDINATOR_URL: `https://${farm.coordinatorAddress}`, FARM_TOKEN: workerToken } });
  await farm.waitForWorkers(1);
}, 120_000);

afterAll(async () => {
  delete process.env.FARM_TLS_CA;
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const httpsCache = () => `https://127.0.0.1:${farm.cachePort}`;

describe("TLS for gRPC and the cache", () => {
  it("a worker joined over TLS builds the demo DAG through the https cache; the CLI speaks TLS", async () => {
    const info = await farm.cli(["submit", `${DEMO}#demo`, "--follow", "--json"], { env: { FARM_TOKEN: cliToken } });
    expect(info.code, info.stderr).toBe(0);
    const job = JSON.parse(info.stdout);
    expect(job.state).toBe("succeeded");
    demoOut = job.outputs[0].outputs.out;
    const log = farm.coordinatorLog();
    expect(log).toMatch(/"tls":true/);
    expect(log).toContain(`"cache":"${httpsCache()}"`);
    expect(farm.workerLog("tls-w1")).toContain(`"cacheUrl":"${httpsCache()}"`);
    // The worker really fetched inputs over https: its Nix substituted from the cache.
    const built = log.split("\n").filter((l) => l.includes('"build reported"') && l.includes('"outcome":"succeeded"'));
    expect(built.length).toBeGreaterThanOrEqual(12);
    const status = await farm.cli(["status", "--coordinator", `https://${farm.coordinatorAddress}`, "--tls-ca", ca.caFile]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain(job.jobId);
  }, 300_000);

  it("a fresh worker's Nix substitutes its inputs from the https cache (NIX_SSL_CERT_FILE from FARM_TLS_CA)", async () => {
    expect(demoOut).not.toBe("");
    await farm.killWorker("tls-w1");
    farm.startWorker({ name: "tls-w2", env: { COORDINATOR_URL: `https://${farm.coordinatorAddress}`, FARM_TOKEN: worker2Token } }, true);
    await farm.waitForWorkers(1);
    const file = path.join(dir, "uses-demo.nix");
    writeFileSync(
      file,
      `builtins.derivation { name = "tls-uses-demo"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";\n` +
        `  args = [ "-ec" "\${import ${DEMO}}/bin/tmpnix-demo > $out" ]; }\n`,
    );
    const r = await farm.cli(["submit", file, "--follow", "--json"], { env: { FARM_TOKEN: cliToken } });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout).outputs[0].outputs.out as string;
    expect(readFileSync(path.join(farm.root, "workers", "tls-w2", "nix", out.slice("/tmp/nix/".length)), "utf8").trim()).toBe(EXPECTED);
    const fetched = farm.workerLog("tls-w2").split("\n").filter((l) => l.includes("fetched inputs of tls-uses-demo")).map((l) => JSON.parse(l));
    expect(fetched).toHaveLength(1);
    expect(fetched[0].inputPaths).toBeGreaterThan(5); // the demo's closure came through Nix's https substituter
  }, 180_000);

  it("refuses plaintext and untrusting clients", async () => {
    const plain = await farm.cli(["status"], { env: { FARM_TLS_CA: "", FARM_RPC_TIMEOUT: "5s" } });
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/cannot reach the coordinator/);
    const systemRoots = await farm.cli(["status"], { env: { FARM_TLS_CA: "", FARM_COORDINATOR: `https://${farm.coordinatorAddress}`, FARM_RPC_TIMEOUT: "5s" } });
    expect(systemRoots.code).toBe(1);
    expect(systemRoots.stderr.trim().split("\n")).toHaveLength(1);
    // The cache speaks only TLS, and Node's own trust store does not know our CA.
    await expect(fetch(`http://127.0.0.1:${farm.cachePort}/nix-cache-info`)).rejects.toThrow();
    await expect(fetch(`${httpsCache()}/nix-cache-info`)).rejects.toThrow();
  }, 60_000);

  it("a forged token is refused over TLS too", async () => {
    const forged = newToken("forged");
    const c = farmClient(farm.coordinatorAddress, forged, ca.caFile);
    await expect(c.call(c.client.listJobs, {})).rejects.toMatchObject({ code: 16 });
    c.close();
    const r = await farm.cli(["submit", `${DEMO}#demo`], { env: { FARM_TOKEN: forged } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refused the token/);
  }, 60_000);

  it("stock nix-store substitutes from the https cache (Nix 2.8: NIX_SSL_CERT_FILE; it has no ssl-cert-file option)", async () => {
    expect(demoOut).not.toBe("");
    const run = async (name: string, extraConf: string, env: Record<string, string>) => {
      const box = mkdtempSync(path.join(dir, `${name}-`));
      const conf = path.join(box, "conf");
      mkdirSync(conf);
      writeFileSync(
        path.join(conf, "nix.conf"),
        `build-users-group =\nsandbox = false\nsubstituters = ${httpsCache()}\ntrusted-public-keys = ${farm.publicKey()}\nrequire-sigs = true\nconnect-timeout = 5\n${extraConf}`,
      );
      const nixEnv = { PATH: "/usr/bin:/bin", HOME: box, NIX_CONF_DIR: conf, NIX_STORE_DIR: "/tmp/nix/store", NIX_STATE_DIR: "/tmp/nix/var/nix", NIX_LOG_DIR: "/tmp/nix/var/log/nix", ...env };
      return runIsolated(name, "/bin/sh", ["-c", `nix-store -r ${demoOut} >/dev/null && ${demoOut}/bin/tmpnix-demo`], { nixDir: path.join(box, "nix"), hideNix: true, env: nixEnv });
    };
    const ok = await run("nix-tls", "", { NIX_SSL_CERT_FILE: ca.caFile });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toBe(EXPECTED);
    // Without our CA (system bundle only) the same command fails: TLS is really checked.
    const untrusted = await run("nix-notls", "", { NIX_SSL_CERT_FILE: "/etc/ssl/certs/ca-certificates.crt" });
    expect(untrusted.code).not.toBe(0);
    // The option newer Nix has is unknown to 2.8, so it cannot replace the variable.
    const option = await run("nix-opt", `ssl-cert-file = ${ca.caFile}\n`, { NIX_SSL_CERT_FILE: "/etc/ssl/certs/ca-certificates.crt" });
    expect(option.code).not.toBe(0);
    expect(option.stderr).toMatch(/unknown setting 'ssl-cert-file'/);
  }, 120_000);
});

describe("the signing key lives only with the cache", () => {
  it("no worker environment, config, file under its /tmp/nix, or log holds the secret key", () => {
    const secret = readFileSync(path.join(farm.dataDir, "signing-key.sec"), "utf8").trim();
    const secretB64 = secret.slice(secret.indexOf(":") + 1);
    const publicB64 = farm.publicKey().slice(farm.publicKey().indexOf(":") + 1);
    expect(secretB64.length).toBeGreaterThan(40);
    const worker = farm.workers.get("tls-w2")!;
    const pids = readFileSync(path.join(worker.cgroupDir, "cgroup.procs"), "utf8").split("\n").filter(Boolean);
    expect(pids.length).toBeGreaterThan(0);
    let withToken = 0;
    for (const pid of pids) {
      const environ = readFileSync(`/proc/${pid}/environ`);
      // The worker (we are looking at the right processes), or its Nix, which is given no token at all.
      if (environ.includes("FARM_TOKEN=")) withToken++;
      else expect(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0], `pid ${pid}`).toMatch(/nix-store$/);
      expect(environ.includes(secretB64), `environment of pid ${pid}`).toBe(false);
    }
    expect(withToken).toBeGreaterThan(0);
    const nixDir = path.join(farm.root, "workers", "tls-w1", "nix");
    let files = 0;
    let sawPublicKey = false;
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile() && statSync(p).size < 64 * 1024 ** 2) {
          const bytes = readFileSync(p);
          files++;
          if (bytes.includes(publicB64)) sawPublicKey = true;
          expect(bytes.includes(secretB64), p).toBe(false);
        }
      }
    };
    walk(nixDir);
    walk(path.join(farm.root, "workers", "tls-w2", "nix"));
    // The worker's nix.conf carries the public key: the walk did see its config.
    expect(sawPublicKey).toBe(true);
    expect(files).toBeGreaterThan(20);
    for (const w of ["tls-w1", "tls-w2"]) expect(readFileSync(path.join(farm.root, "workers", w, "worker.log"), "utf8")).not.toContain(secretB64);
    expect(existsSync(path.join(farm.dataDir, "signing-key.sec"))).toBe(true);
  });
});
