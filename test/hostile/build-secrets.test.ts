// A build on a one-uid worker hunts for the worker's token (real NATS, gRPC,
// Nix; the worker runs as uid 65534 like a bare container, so its builds run
// as that uid too and may read every /proc/PID/environ and cmdline of it). The
// worker overwrote its token in its own /proc blocks and starts Nix with a
// scrubbed environment: the build finds processes to read, but no token, and
// its output (which anyone can download from the cache) holds none.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { REPO, type FarmCluster } from "../harness/cluster.js";
import { CacheClient } from "../../proto/nix/mod.js";
import { newToken, startHealthyJob, startTokenFarm } from "./support.js";
import { waitFor } from "../harness/ports.js";

const T = { alice: newToken("alice"), w1: newToken("w1"), r1: newToken("r1") };
const NOBODY = 65534;

let farm: FarmCluster;
let dir: string;
let stop: () => Promise<void>;
let healthy: ReturnType<typeof startHealthyJob>;

beforeAll(async () => {
  ({ farm, dir, stop } = await startTokenFarm("build-secrets", [["cli", "alice", T.alice], ["worker", "w1", T.w1], ["worker", "r1", T.r1]]));
  writeFileSync(
    path.join(dir, "snoop.nix"),
    `let
  mk = import ${REPO}/test/fixtures/sh-derivation.nix;
  # Reads every /proc/PID/environ and cmdline it can; writes its uid, how many it read, and what looked like a token.
  snoop = name: mk { inherit name; requiredSystemFeatures = [ "snoop" ]; script = ''
    n=0
    for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
      if tr '\\0' '\\n' < "$f" > "$TMPDIR/seen" 2>/dev/null; then n=$((n+1)); cat "$TMPDIR/seen" >> "$TMPDIR/all"; fi
    done
    echo "uid=$(id -u) readable=$n" > "$out"
    # Patterns put together at run time: written whole they would match this builder's own command line.
    p1="FARM_""TOKEN"; p2="to""k-"; p3="${T.w1.slice(0, 2)}""-"
    grep -a -e "$p1" -e "$p2" -e "$p3" "$TMPDIR/all" >> "$out" || true
  ''; };
in {
  snoop = snoop "snoop-1.0";
  snoopAsBuildUser = snoop "snoop-build-user-1.0";
}\n`,
  );
  farm.startWorker({ name: "w1", uid: NOBODY, env: { FARM_TOKEN: T.w1, HOME: "/tmp/nix", FARM_FEATURES: "snoop" } }); // its own /tmp/nix, as a container user owns its home
  await farm.waitForWorkers(1);
  // Beside it, a healthy job on a worker that never takes a snoop (it lacks the feature).
  healthy = startHealthyJob(farm, farm.token);
}, 120_000);

afterAll(async () => {
  await stop?.();
});

/** The published output of `attr` (submitted by alice), as anyone could download it. */
async function publishedOutput(attr: string): Promise<string> {
  const r = await farm.cli(["submit", `${path.join(dir, "snoop.nix")}#${attr}`, "--follow", "--json"], { env: { FARM_TOKEN: T.alice } });
  expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
  const out = JSON.parse(r.stdout).outputs[0].outputs.out as string;
  const client = new CacheClient({ baseUrl: farm.cacheUrl, trustedPublicKeys: [farm.publicKey()], storeDir: "/tmp/nix/store" });
  const chunks: Buffer[] = [];
  for await (const c of client.narStream((await client.narInfo(out))!)) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks).toString("latin1");
}

describe("builds see no secret", () => {
  it("a build that reads every /proc it can finds the worker's processes but not its token", async () => {
    const published = await publishedOutput("snoop");
    const readable = Number(/readable=(\d+)/.exec(published)?.[1] ?? 0);
    // The hunt was real: it read the environ and cmdline of its own uid's processes (the worker, Nix, itself).
    expect(readable).toBeGreaterThanOrEqual(4);
    expect(published).not.toContain(T.w1);
    expect(published).not.toContain(farm.token);
  }, 120_000);

  it("on a root worker with build users, a build runs as a build user and can read no process of the worker's", async () => {
    await farm.killWorker("w1");
    // Build users exist only in this worker's namespace: its own /etc/group and /etc/passwd, bound over the host's.
    const group = path.join(dir, "group");
    const passwd = path.join(dir, "passwd");
    writeFileSync(group, readFileSync("/etc/group", "utf8") + "nixbld:x:30000:nixbld1,nixbld2\n");
    writeFileSync(passwd, readFileSync("/etc/passwd", "utf8") + "nixbld1:x:30001:30000::/var/empty:/bin/false\nnixbld2:x:30002:30000::/var/empty:/bin/false\n");
    farm.startWorker({ name: "r1", env: { FARM_TOKEN: T.r1, FARM_BUILD_USERS_GROUP: "nixbld", FARM_FEATURES: "snoop" }, overlay: [{ source: group, at: "/etc/group" }, { source: passwd, at: "/etc/passwd" }] });
    await waitFor("r1 joined", async () => JSON.parse((await farm.cli(["workers", "--json"])).stdout).some((w: { workerId: string; state: string }) => w.workerId === "r1" && w.state === "active"), 60_000, 300);
    const published = await publishedOutput("snoopAsBuildUser");
    const m = /uid=(\d+) readable=(\d+)/.exec(published);
    expect(m, published).not.toBeNull();
    expect(["30001", "30002"]).toContain(m![1]);
    expect(published).not.toContain(T.r1);
    expect(published).not.toContain(farm.token);
    expect(published).not.toMatch(/FARM_TOKEN/);
  }, 120_000);

  it("meanwhile the healthy job beside it built and completed", async () => {
    await healthy.succeeded();
  }, 120_000);
});
