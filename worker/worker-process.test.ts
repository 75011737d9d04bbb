// The whole worker process with the real Nix executor, as a container would run
// it: its own /tmp/nix (mount namespace) and memory cgroup, the default store dir
// /tmp/nix/store, a real cache server and a real gRPC server. A "submitter" in
// another namespace instantiates the derivation and uploads its .drv closure.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, expect, it } from "vitest";
import { HashCounter, topoSortByReferences } from "../proto/nix/mod.js";
import { startTestCache, type TestCache } from "../test/fixtures/cache-server.js";
import { nixLines, runNix, type TestNixEnv as TestNix } from "../proto/nix/testing/nix-env.js";
import { ownCgroupDir } from "./host-probe.js";
import { signalAll } from "./proc-tree.js";
import { BuildStatus } from "../proto/gen/farm.js";
import { FakeCoordinator } from "./testing/fake-coordinator.js";
import { PROTOCOL_VERSION } from "../proto/convert/mod.js";
import { ISOLATE_SH } from "../test/harness/isolated.js";

const ROOT = path.resolve(import.meta.dirname, "..");
const MAIN = path.join(ROOT, "dist/worker/main.js");
const STORE = "/tmp/nix/store";

/** The worker process in its own mount namespace (/tmp/nix -> nixDir) and memory cgroup. */
class IsolatedWorker {
  readonly child: ChildProcess;
  readonly exited: Promise<number>;
  readonly cgroup: string;

  constructor(nixDir: string, readonly logFile: string, env: NodeJS.ProcessEnv, memoryLimitBytes: number) {
    mkdirSync(nixDir, { recursive: true });
    const own = ownCgroupDir("memory");
    if (!own || own.version !== 1) throw new Error("this test needs a writable cgroup v1 memory hierarchy");
    this.cgroup = path.join(own.dir, `worker-e2e-${process.pid}`);
    mkdirSync(this.cgroup);
    writeFileSync(path.join(this.cgroup, "memory.limit_in_bytes"), String(memoryLimitBytes));
    const out = openSync(logFile, "a");
    const args = [ISOLATE_SH, "--nix-dir", nixDir, "--cgroup", this.cgroup, "--", process.execPath, MAIN];
    this.child = spawn("/bin/sh", args, { env, stdio: ["ignore", out, out] });
    this.exited = new Promise((resolve) => this.child.on("exit", (code, sig) => resolve(code ?? (sig ? 128 : -1))));
  }

  log(): string {
    return readFileSync(this.logFile, "utf8");
  }

  /** Kills whatever is left in the cgroup and removes it. */
  async dispose(): Promise<void> {
    for (let i = 0; i < 50; i++) {
      const pids = readFileSync(path.join(this.cgroup, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
      if (!pids.length) break;
      signalAll(pids);
      await new Promise((r) => setTimeout(r, 100));
    }
    rmdirSync(this.cgroup);
  }
}

let tmp: string;
let submitterRoot: string;
let nix: TestNix;
let cache: TestCache;
let coord: FakeCoordinator;
let worker: IsolatedWorker | undefined;

beforeAll(async () => {
  await execa("npx", ["tsc", "-p", "tsconfig.json"], { cwd: ROOT, reject: false });
  tmp = mkdtempSync("/tmp/worker-e2e-");
  submitterRoot = path.join(tmp, "submitter");
  for (const d of ["store", "var/nix", "var/log/nix"]) mkdirSync(path.join(submitterRoot, d), { recursive: true });
  mkdirSync(path.join(tmp, "etc"));
  writeFileSync(path.join(tmp, "etc/nix.conf"), "sandbox = false\nbuild-users-group =\nsubstituters =\n");
  // Every Nix call below runs isolated with submitterRoot as /tmp/nix (inSubmitter): the host's stays untouched.
  nix = {
    dir: tmp,
    nixRoot: "/tmp/nix",
    storeDir: STORE,
    env: { NIX_STORE_DIR: STORE, NIX_STATE_DIR: "/tmp/nix/var/nix", NIX_LOG_DIR: "/tmp/nix/var/log/nix", NIX_CONF_DIR: path.join(tmp, "etc"), HOME: tmp, PATH: process.env.PATH ?? "/usr/bin:/bin" },
  };
  cache = await startTestCache(STORE);
  // One token for the coordinator and for cache uploads, as in the farm.
  coord = await new FakeCoordinator(cache.token).start();
}, 180_000);

afterAll(async () => {
  await worker?.dispose();
  coord?.stop();
  await cache?.close();
  if (tmp) {
    await execa("chmod", ["-R", "u+w", tmp], { reject: false });
    await execa("rm", ["-rf", tmp], { reject: false });
  }
});

it("joins, fetches inputs through the cache, builds with Nix, reports (its small output inline), and drains on SIGTERM", async () => {
  const expr = path.join(tmp, "e2e.nix");
  writeFileSync(
    expr,
    `let mk = name: script: builtins.derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; PATH = "/usr/bin:/bin"; };
     in rec { lib = mk "e2e-lib" "echo lib > $out"; app = mk "e2e-app" "echo building app with $NIX_BUILD_CORES cores; cat \${lib} > $out"; }`,
  );
  const inSubmitter = (cmd: string, args: string[]): [string, string[]] => ["/bin/sh", [ISOLATE_SH, "--nix-dir", submitterRoot, "--", cmd, ...args]];
  const [libDrv] = await nixLines(nix, ...inSubmitter("nix-instantiate", [expr, "-A", "lib"]));
  const [appDrv] = await nixLines(nix, ...inSubmitter("nix-instantiate", [expr, "-A", "app"]));
  const [libOut] = await nixLines(nix, ...inSubmitter("nix-store", ["-r", libDrv]));
  const [appOut] = await nixLines(nix, ...inSubmitter("nix-store", ["-q", "--outputs", appDrv]));
  const closure = await nixLines(nix, ...inSubmitter("nix-store", ["-qR", appDrv, libOut]));
  const items = await Promise.all(closure.map(async (p) => ({ storePath: p, references: await nixLines(nix, ...inSubmitter("nix-store", ["-q", "--references", p])) })));
  for (const item of topoSortByReferences(items)) {
    const { stdout } = await runNix(nix, ...inSubmitter("nix-store", ["--dump", item.storePath]));
    await cache.client().upload({ ...item, narStream: (async function* () { yield stdout; })() });
  }

  const workerRoot = path.join(tmp, "worker-nix");
  worker = new IsolatedWorker(workerRoot, path.join(tmp, "worker.log"), { PATH: process.env.PATH, COORDINATOR_URL: coord.address, FARM_TOKEN: cache.token, FARM_CORES: "2", FARM_LOG_LEVEL: "debug" }, 1024 ** 3);
  try {
    const s = await coord.stream(0, 20_000);
    const join = await s.next("join");
    expect(join.storeDir).toBe(STORE);
    // Its cgroup limit, less what the worker process itself needs (host-probe memoryForBuilds).
    expect(join.memoryBytes).toBeLessThan(1024 ** 3);
    expect(join.memoryBytes).toBeGreaterThan(1024 ** 3 - 256 * 1024 ** 2);
    s.send({ $case: "welcome", value: { protocolVersion: PROTOCOL_VERSION, sessionId: "e2e", cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey, heartbeatIntervalMs: 500, abort: [] } });
    const lease = { drvPath: appDrv, epoch: 1 };
    s.send({ $case: "assign", value: { lease, outputs: { out: appOut }, inputPaths: [libOut], cores: 2, memoryLimitBytes: 256 * 1024 ** 2, timeoutMs: 60_000, name: "e2e-app", estimatedDurationMs: 0, uploadCredential: "" } });
    const result = await s.next("result", 60_000);
    expect(result.error).toBe("");
    expect(result.status).toBe(BuildStatus.BUILD_STATUS_SUCCEEDED);
    expect(result.peakMemoryBytes).toBeGreaterThan(0);
    expect(s.all("log").flatMap((l) => l.lines)).toContain("building app with 2 cores");
    // Small, so its NAR came in the result: the bytes of the hash it reports, holding what the builder wrote.
    const [out] = result.outputs;
    const counter = new HashCounter();
    counter.update(out.nar);
    expect(counter.result()).toEqual({ hash: out.narHash, size: out.narSize });
    expect(out.nar.includes(Buffer.from("lib\n"))).toBe(true);
    expect(out.references).toEqual([]);

    worker.child.kill("SIGTERM");
    await s.next("drain");
    expect(await worker.exited).toBe(0);
    expect(worker.log()).toMatch(/"msg":"built e2e-app in [\d.]+s, peak \d+ MiB"/);
  } catch (err) {
    console.error(worker.log());
    throw err;
  }
}, 120_000);
