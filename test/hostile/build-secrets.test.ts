// A build on a one-uid worker hunts for the worker's token (real NATS, gRPC,
// Nix; the worker runs as uid 65534 like a bare container, so its builds run
// as that uid too and may read every /proc/PID/environ and cmdline of it). The
// worker overwrote its token in its own /proc blocks and starts Nix with a
// scrubbed environment: the build finds processes to read, but no token, and
// its output (which anyone can download from the cache) holds none.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { FarmCluster, REPO } from "../harness/cluster.js";
import { CacheClient, hashPart } from "../../proto/nix/mod.js";
import { newToken, writeTokens } from "./support.js";

const T = { alice: newToken("alice"), w1: newToken("w1") };
const NOBODY = 65534;

let farm: FarmCluster;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "farm-build-secrets-"));
  const tokensFile = path.join(dir, "tokens");
  writeTokens(tokensFile, [["cli", "alice", T.alice], ["worker", "w1", T.w1]]);
  writeFileSync(
    path.join(dir, "snoop.nix"),
    `let mk = import ${REPO}/test/fixtures/sh-derivation.nix; in {
  snoop = mk { name = "snoop-1.0"; script = ''
    n=0
    for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
      if tr '\\\\0' '\\\\n' < "$f" > "$TMPDIR/seen" 2>/dev/null; then n=$((n+1)); cat "$TMPDIR/seen" >> "$TMPDIR/all"; fi
    done
    echo "readable=$n" > "$out"
    grep -a -e FARM_TOKEN -e '${T.w1.slice(0, 3)}' "$TMPDIR/all" >> "$out" || true
  ''; };
}\n`,
  );
  farm = await FarmCluster.start({ workers: [], coordinatorEnv: { FARM_TOKENS_FILE: tokensFile } });
  farm.startWorker({ name: "w1", uid: NOBODY, env: { FARM_TOKEN: T.w1, HOME: "/tmp/nix" } }); // its own /tmp/nix, as a container user owns its home
  await farm.waitForWorkers(1);
}, 120_000);

afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("builds see no secret", () => {
  it("a build that reads every /proc it can finds the worker's processes but not its token", async () => {
    const r = await farm.cli(["submit", `${path.join(dir, "snoop.nix")}#snoop`, "--follow", "--json"], { env: { FARM_TOKEN: T.alice } });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout).outputs[0].outputs.out as string;
    const client = new CacheClient({ baseUrl: farm.cacheUrl, trustedPublicKeys: [farm.publicKey()], storeDir: "/tmp/nix/store" });
    const info = (await client.narInfo(out))!;
    const chunks: Buffer[] = [];
    for await (const c of client.narStream(info)) chunks.push(Buffer.from(c));
    const published = Buffer.concat(chunks).toString("latin1");
    const readable = Number(/readable=(\d+)/.exec(published)?.[1] ?? 0);
    // The hunt was real: it read the environ and cmdline of its own uid's processes (the worker, Nix, itself).
    expect(readable).toBeGreaterThanOrEqual(4);
    expect(published).not.toContain(T.w1);
    expect(published).not.toContain(farm.token);
    expect(hashPart(out)).toHaveLength(32);
  }, 120_000);
});
