// Real Nix 2.8, a real cache server, two stores at the SAME store path: a
// "submitter" store (another mount namespace) instantiates derivations and
// uploads their .drv closures and input outputs to the cache; the worker's own
// store starts empty and must get everything through the cache.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HashCounter, topoSortByReferences } from "../proto/nix/mod.js";
import { startTestCache, type TestCache } from "../test/fixtures/cache-server.js";
import { destroyNixEnv, makeAltRoot, makeNixEnv, nixLines, runNix, type TestNixEnv as TestNix } from "../proto/nix/testing/nix-env.js";
import type { AssignmentSpec, BuildReport } from "../proto/types.js";
import type { ExecutorContext } from "./executor.js";
import { ownCgroupDir } from "./host-probe.js";
import { NixEnv } from "./nix-env.js";
import { NixExecutor } from "./nix-executor.js";

const MEMHOG = fileURLToPath(new URL("../test/fixtures/memhog/default.nix", import.meta.url));
const HELD_MIB = 200;

const EXPR = `
let mk = name: script: builtins.derivation {
  inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; PATH = "/usr/bin:/bin";
};
  memhog = import ${MEMHOG};
in rec {
  dep = mk "wk-dep" "echo dep-content > $out";
  top = mk "wk-top" ''
    echo "cores=$NIX_BUILD_CORES"
    for i in 1 2 3; do echo line-$i; done
    mkdir $out; cat \${dep} > $out/copied; ln -s \${dep} $out/dep
  '';
  # Over INLINE_NAR_MAX_BYTES: uploaded to the cache rather than sent in the report.
  wide = mk "wk-wide" "echo \${dep} > $out; head -c 100000 /dev/zero >> $out";
  bad = mk "wk-bad" "echo about to fail; exit 2";
  hog = mk "wk-hog" "head -c 300000000 /dev/zero | tail | sleep 20; touch $out";
  sleeper = mk "wk-sleeper" "echo pid=$$; sleep 60; touch $out";
  orphan = mk "wk-orphan" "touch $out";
  needs = mk "wk-needs" "cat \${orphan} > $out";
  lonely = mk "wk-lonely" "touch $out";
  flood = mk "wk-flood" "yes flooding-the-log | head -n 200000; touch $out";
  after = mk "wk-after" "echo still-usable > $out";
  nondet = mk "wk-nondet" "cat /proc/sys/kernel/random/uuid > $out";
  onNondet = mk "wk-on-nondet" "cat \${nondet} > $out";
  quick = mk "wk-quick" "touch $out";
  # Each names the Nix that started its builder (Nix forks builders itself).
  parent1 = mk "wk-parent-1" "echo parent=$PPID; touch $out";
  parent2 = mk "wk-parent-2" "echo parent=$PPID; touch $out";
  parent3 = mk "wk-parent-3" "echo parent=$PPID; touch $out";
  # Touches ${HELD_MIB} MiB and holds it 3 s: many /proc samples see it.
  held = memhog.hog { pname = "wk-held"; baseMiB = ${HELD_MIB}; perCoreMiB = 0; holdMs = 3000; };
  # The same in a session that builds again afterwards (held for 1 s).
  heldInSession = memhog.hog { pname = "wk-held-in-session"; baseMiB = ${HELD_MIB}; perCoreMiB = 0; holdMs = 1000; };
  # Touches 400 MiB and holds it 10 s: over a 150 MiB reservation long before it ends.
  greedy = memhog.hog { pname = "wk-greedy"; baseMiB = 400; perCoreMiB = 0; holdMs = 10000; };
}`;

let nix: TestNix;
let submitter: string;
let cache: TestCache;
const drvs: Record<string, string> = {};
const outs: Record<string, string> = {};

/** Uploads `paths` and their closures from the submitter's store, dependencies first. */
async function uploadFromSubmitter(paths: string[]): Promise<void> {
  const closure = await nixLines(nix, "nix-store", ["-qR", ...paths], { altRoot: submitter });
  const items = await Promise.all(
    closure.map(async (p) => ({ storePath: p, references: await nixLines(nix, "nix-store", ["-q", "--references", p], { altRoot: submitter }) })),
  );
  const client = cache.client();
  for (const item of topoSortByReferences(items)) {
    const [deriver] = await nixLines(nix, "nix-store", ["-q", "--deriver", item.storePath], { altRoot: submitter });
    const { stdout: nar } = await runNix(nix, "nix-store", ["--dump", item.storePath], { altRoot: submitter });
    await client.upload({ ...item, deriver: deriver.endsWith(".drv") ? deriver : undefined, narStream: (async function* () { yield nar; })() });
  }
}

beforeAll(async () => {
  nix = await makeNixEnv();
  submitter = await makeAltRoot(nix, "submitter");
  cache = await startTestCache(nix.storeDir);
  const expr = path.join(nix.dir, "w.nix");
  await writeFile(expr, EXPR);
  for (const attr of ["dep", "top", "wide", "bad", "hog", "sleeper", "orphan", "needs", "lonely", "flood", "after", "quick", "held", "greedy", "nondet", "onNondet", "parent1", "parent2", "parent3", "heldInSession"]) {
    [drvs[attr]] = await nixLines(nix, "nix-instantiate", [expr, "-A", attr], { altRoot: submitter });
    [outs[attr]] = await nixLines(nix, "nix-store", ["-q", "--outputs", drvs[attr]], { altRoot: submitter });
  }
  await nixLines(nix, "nix-store", ["-r", drvs.dep, drvs.nondet], { altRoot: submitter });
  await uploadFromSubmitter([drvs.top, drvs.wide, drvs.bad, drvs.hog, drvs.sleeper, drvs.after, drvs.needs, drvs.flood, outs.dep, drvs.quick, drvs.held, drvs.greedy, drvs.onNondet, drvs.parent1, drvs.parent2, drvs.parent3, drvs.heldInSession]);
}, 120_000);

afterAll(async () => {
  await cache?.close();
  if (nix) await destroyNixEnv(nix);
});

function executor(opts: { minFreeDiskBytes?: number; memoryMonitor?: "auto" | "proc"; memorySampleMs?: number } = {}) {
  const env = new NixEnv({ storeDir: nix.storeDir, stateDir: path.join(nix.nixRoot, "var/nix"), logDir: path.join(nix.nixRoot, "var/log/nix") });
  const ex = new NixExecutor({ nix: env, makeCache: () => cache.client(), minFreeDiskBytes: opts.minFreeDiskBytes ?? 0, logger: pino({ level: "silent" }), memoryMonitor: opts.memoryMonitor, memorySampleMs: opts.memorySampleMs });
  return { env, ex };
}

function assignment(attr: string, over: Partial<AssignmentSpec> = {}): AssignmentSpec {
  return { lease: { drvPath: drvs[attr], epoch: 7 }, name: `wk-${attr}`, outputs: { out: outs[attr] }, inputPaths: [], cores: 1, memoryLimitBytes: 0, timeoutMs: 0, ...over };
}

async function run(attr: string, over: Partial<AssignmentSpec> = {}, opts: Parameters<typeof executor>[0] = {}, onLine?: (l: string, abort: AbortController) => void) {
  const lines: string[] = [];
  const usage: number[] = [];
  const built: number[] = [];
  const abort = new AbortController();
  const ctx: ExecutorContext = {
    cacheUrl: cache.url,
    cachePublicKey: cache.keys.publicKey,
    signal: abort.signal,
    onLog: (batch) => {
      lines.push(...batch);
      batch.forEach((l) => onLine?.(l, abort));
    },
    onUsage: (b) => usage.push(b),
    onBuilt: (narBytes) => built.push(narBytes),
  };
  const { env, ex } = executor(opts);
  const report: BuildReport = await ex.run(assignment(attr, over), ctx);
  return { report, lines, usage, env, built };
}

/** Is `p` valid in the worker's own (host-namespace) store? */
async function validInWorker(p: string): Promise<boolean> {
  const r = await runNix(nix, "nix-store", ["--check-validity", p]).then(() => true, () => false);
  return r;
}

describe("NixExecutor with real Nix", () => {
  it("fetches the drv closure and inputs through the cache, builds, streams logs and sends a small output in its report", async () => {
    expect(await validInWorker(outs.dep)).toBe(false);
    const { report, lines, built } = await run("top", { inputPaths: [outs.dep], cores: 3 });
    expect(report.error).toBe("");
    expect(report.outcome).toBe("succeeded");
    expect(report.lease).toEqual({ drvPath: drvs.top, epoch: 7 });
    expect(lines).toContain("cores=3"); // NIX_BUILD_CORES came from the assignment
    expect(lines.filter((l) => /^line-\d$/.test(l))).toEqual(["line-1", "line-2", "line-3"]);
    // The input was substituted from the farm cache, not built here.
    expect(lines.some((l) => l.includes(`copying path '${outs.dep}' from '${cache.url}'`))).toBe(true);
    expect(lines.some((l) => l.includes(`building '${drvs.dep}'`))).toBe(false);
    expect(await validInWorker(outs.dep)).toBe(true);
    // The output is small: its NAR (what `nix-store --dump` gives) and references travel in the report, not to the cache.
    expect(report.outputs).toHaveLength(1);
    const [out] = report.outputs;
    const dumped = Buffer.from((await runNix(nix, "nix-store", ["--dump", outs.top])).stdout);
    expect(Buffer.from(out.inline!.nar).equals(dumped)).toBe(true);
    expect(out.narSize).toBe(dumped.length);
    const counter = new HashCounter();
    counter.update(dumped);
    expect(out.narHash).toBe(counter.result().hash);
    expect(out.inline!.references).toEqual([path.basename(outs.dep)]);
    expect(await cache.client().narInfo(outs.top)).toBeNull();
    expect(built).toEqual([out.narSize]); // said once the builder was done, before the NAR was read
    expect(report.peakMemoryBytes).toBeGreaterThan(0);
    expect(await cache.client().getLog(drvs.top)).toBeNull(); // logs travel only over the coordinator stream, which stores them
  }, 60_000);

  it("uploads an output too big for its report to the cache, with its references and deriver", async () => {
    const { report } = await run("wide", { inputPaths: [outs.dep] });
    expect(report.error).toBe("");
    expect(report.outputs).toHaveLength(1);
    expect(report.outputs[0].inline).toBeUndefined();
    const info = await cache.client().narInfo(outs.wide);
    expect(info).not.toBeNull();
    expect(info!.narHash).toBe(report.outputs[0].narHash);
    expect(info!.narSize).toBe(report.outputs[0].narSize);
    expect(info!.narSize).toBeGreaterThan(100_000);
    expect(info!.references).toEqual([path.basename(outs.dep)]);
    expect(info!.deriver).toBe(path.basename(drvs.wide));
  }, 60_000);

  it("drops an output of its own that the farm published differently before using it as an input, and builds on the published one", async () => {
    // The farm published another build of it (the submitter's) ...
    await uploadFromSubmitter([outs.nondet]);
    const { ex } = executor();
    const lines: string[] = [];
    const ctx: ExecutorContext = { cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey, signal: new AbortController().signal, onLog: (b) => lines.push(...b) };
    // ... than the one this worker builds (whose upload the cache does not take over the published one).
    await ex.run(assignment("nondet"), ctx);
    const ours = readFileSync(outs.nondet, "utf8");
    lines.length = 0;
    const report = await ex.run(assignment("onNondet", { inputPaths: [outs.nondet] }), ctx);
    expect(report.outcome, report.error).toBe("succeeded");
    expect(lines.some((l) => l.includes(`copying path '${outs.nondet}' from '${cache.url}'`))).toBe(true);
    const theirs = readFileSync(outs.nondet, "utf8");
    expect(theirs).not.toBe(ours);
    expect(readFileSync(outs.onNondet, "utf8")).toBe(theirs);
  }, 60_000);

  it("caps a log flood and says how many lines it dropped", async () => {
    const { report, lines } = await run("flood");
    expect(report.outcome).toBe("succeeded");
    expect(lines.filter((l) => l === "flooding-the-log").length).toBeLessThan(5000);
    expect(lines.some((l) => /^\[farm-worker: dropped \d+ log lines/.test(l))).toBe(true);
  }, 60_000);

  it("reports a failing builder as failed with Nix's exit-code line", async () => {
    const { report, lines, built } = await run("bad");
    expect(report.outcome).toBe("failed");
    expect(report.error).toBe(`builder for '${drvs.bad}' failed with exit code 2`);
    expect(lines).toContain("about to fail");
    expect(report.outputs).toEqual([]);
    expect(built).toEqual([]); // a failed build keeps its slot until its result
  }, 60_000);

  it("stops a build that goes over its memory limit (cgroup) and says out-of-memory", async () => {
    const limit = 100 * 1024 ** 2;
    const { report } = await run("hog", { memoryLimitBytes: limit });
    expect(report.outcome).toBe("out-of-memory");
    expect(report.peakMemoryBytes).toBeGreaterThanOrEqual(limit);
    expect(report.error).toMatch(/out of memory/);
  }, 60_000);

  it("stops a build that goes over its memory limit (/proc sampling fallback)", async () => {
    const limit = 100 * 1024 ** 2;
    const { report, usage } = await run("hog", { memoryLimitBytes: limit }, { memoryMonitor: "proc" });
    expect(report.outcome).toBe("out-of-memory");
    expect(report.peakMemoryBytes).toBeGreaterThanOrEqual(limit);
    expect(Math.max(...usage)).toBeGreaterThanOrEqual(limit);
  }, 60_000);

  it("measures a build holding 200 MiB within 15 % with the /proc monitor", async () => {
    const { report, lines } = await run("held", {}, { memoryMonitor: "proc" });
    expect(report.outcome).toBe("succeeded");
    expect(lines.some((l) => l.startsWith(`hog: touched ${HELD_MIB} MiB`))).toBe(true);
    expect(report.memoryNotMeasured).toBeUndefined();
    const held = HELD_MIB * 1024 ** 2;
    expect(Math.abs(report.peakMemoryBytes - held) / held, `peak ${report.peakMemoryBytes} bytes`).toBeLessThanOrEqual(0.15);
  }, 120_000);

  it("the /proc guard kills a build over its reservation as out-of-memory, and the worker lives on", async () => {
    const limit = 150 * 1024 ** 2;
    let hogPid = 0;
    const { report, lines } = await run("greedy", { memoryLimitBytes: limit }, { memoryMonitor: "proc" }, (l) => {
      if (l.startsWith("hog: touched")) hogPid = hogPidNow();
    });
    expect(report.outcome).toBe("out-of-memory");
    expect(report.error).toMatch(/out of memory at \d+ MiB \(limit 150 MiB\)/);
    expect(report.peakMemoryBytes).toBeGreaterThan(limit);
    // Measured by the /proc monitor, no output registered, and nothing of the build left running.
    expect(lines.some((l) => /nix-store ran \d+\.\ds, peak memory \d+ MiB \(proc monitor\)/.test(l))).toBe(true);
    expect(existsSync(outs.greedy)).toBe(false);
    if (hogPid) expect(isAlive(hogPid)).toBe(false);
    expect(hogPidNow()).toBe(0);
    // The worker (this process, which ran the executor) was not in the killed tree.
    expect(isAlive(process.pid)).toBe(true);
  }, 120_000);

  it("says 'not measured' (never 0) for a build that ends before the /proc monitor samples it", async () => {
    const { report, lines } = await run("quick", {}, { memoryMonitor: "proc", memorySampleMs: 60_000 });
    expect(report.outcome).toBe("succeeded");
    expect(report.memoryNotMeasured).toBe(true);
    expect(report.peakMemoryBytes).toBe(0);
    expect(lines.some((l) => /peak memory not measured \(proc monitor\)/.test(l))).toBe(true);
  }, 60_000);

  it.skipIf(ownCgroupDir("memory") === undefined)("measures even a very short build with a cgroup", async () => {
    const { report } = await run("quick", {}, { memorySampleMs: 60_000 });
    expect(report.outcome).toBe("succeeded");
    expect(report.memoryNotMeasured).toBeUndefined();
    expect(report.peakMemoryBytes).toBeGreaterThan(0);
  }, 60_000);

  it("kills the whole process tree on abort and cleans up", async () => {
    let builderPid = 0;
    const { report, env } = await run("sleeper", {}, {}, (l, abort) => {
      const m = /^pid=(\d+)$/.exec(l);
      if (m) {
        builderPid = Number(m[1]);
        abort.abort("test abort");
      }
    });
    expect(report.outcome).toBe("aborted");
    expect(builderPid).toBeGreaterThan(0);
    expect(isAlive(builderPid)).toBe(false);
    expect(buildLeftovers(env)).toEqual([]);
    expect(existsSync(outs.sleeper)).toBe(false);
  }, 60_000);

  it("enforces the assignment's time limit", async () => {
    const { report } = await run("sleeper", { timeoutMs: 1500 });
    expect(report.outcome).toBe("timed-out");
    expect(report.durationMs).toBeLessThan(60_000); // stopped, not run to the sleeper's own end
  }, 60_000);

  it("says inputs-unavailable when the cache lacks the derivation", async () => {
    const { report } = await run("lonely");
    expect(report.outcome).toBe("inputs-unavailable");
    expect(report.error).toContain("not in the cache");
  }, 60_000);

  it("says inputs-unavailable when an input path can't be substituted", async () => {
    const missing = `${nix.storeDir}/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-missing`;
    const { report } = await run("needs", { inputPaths: [missing] });
    expect(report.outcome).toBe("inputs-unavailable");
    expect(report.error).toContain(missing);
  }, 60_000);

  it("refuses to build an input derivation locally", async () => {
    const { report, lines } = await run("needs");
    expect(report.outcome).toBe("inputs-unavailable");
    expect(report.error).toMatch(/1 input derivation\(s\) are neither local nor in the cache \(.*-wk-orphan\.drv\)/);
    expect(lines.some((l) => l.startsWith("building"))).toBe(false);
  }, 60_000);

  it("says disk-full when the store's filesystem is below the floor", async () => {
    const { report } = await run("top", {}, { minFreeDiskBytes: Number.MAX_SAFE_INTEGER });
    expect(report.outcome).toBe("disk-full");
  }, 60_000);

  it("builds in one long-lived Nix per cores value, and a build's memory is its own", async () => {
    const { ex } = executor();
    const lines: string[] = [];
    const ctx: ExecutorContext = { cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey, signal: new AbortController().signal, onLog: (b) => lines.push(...b) };
    const parentOf = async (attr: string, cores: number) => {
      lines.length = 0;
      const report = await ex.run(assignment(attr, { cores }), ctx);
      expect(report.outcome, report.error).toBe("succeeded");
      return { parent: Number(lines.find((l) => l.startsWith("parent="))?.slice("parent=".length)), report };
    };
    const first = await parentOf("parent1", 1);
    const second = await parentOf("parent2", 1);
    const third = await parentOf("parent3", 2);
    expect(first.parent).toBeGreaterThan(1);
    expect(readFileSync(`/proc/${first.parent}/comm`, "utf8").trim()).toBe("nix-store");
    expect(second.parent).toBe(first.parent); // the same Nix built both
    expect(third.parent).not.toBe(first.parent); // other cores: another Nix
    // Measured from the builder's start: the 200 MiB of an earlier build in the same session are not counted again.
    const held = await ex.run(assignment("heldInSession", { cores: 1 }), ctx);
    expect(held.outcome, held.error).toBe("succeeded");
    expect(held.peakMemoryBytes).toBeGreaterThan(150 * 1024 ** 2);
    const after = await parentOf("quick", 1);
    expect(after.report.peakMemoryBytes).toBeGreaterThan(0);
    expect(after.report.peakMemoryBytes).toBeLessThan(50 * 1024 ** 2);
  }, 120_000);

  it("is still usable after all those failures and leaves no build cgroups behind", async () => {
    const { report, env } = await run("after");
    expect(report.outcome).toBe("succeeded");
    expect(buildLeftovers(env)).toEqual([]);
    const own = ownCgroupDir("memory");
    if (own) expect(readdirSync(own.dir).filter((n) => n.startsWith(`tmpnix-build-${process.pid}-`))).toEqual([]);
  }, 60_000);
});

/** What builds left in the build sessions' TMPDIRs (Nix removes a build's dir when it ends; a killed session's goes with it). */
function buildLeftovers(env: NixEnv): string[] {
  return readdirSync(env.buildTmpRoot).flatMap((s) => readdirSync(path.join(env.buildTmpRoot, s)).map((e) => `${s}/${e}`));
}

/** The pid of a running `./hog` program (this test's greedy build), or 0. */
function hogPidNow(): number {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8").startsWith("./hog\u0000400\u0000") && isAlive(Number(name))) return Number(name);
    } catch {
      // gone
    }
  }
  return 0;
}

/** Running (not gone, not a zombie waiting to be reaped). */
function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}
