// `npm run bench:live-nix`: what a build costs on a real-Nix worker. Builds
// 100 trivial derivations (10 chains of 10, /bin/sh builders, a fresh nonce
// each round) three times per round, in alternating order: with a local
// `nix-store -r --max-jobs 2` in a namespace of its own (the baseline), and
// through a farm of its own (coordinator + cache, NATS at NATS_URL) on 2
// namespaced workers as configured by default, and on 2 configured the other way
// (--upload-beside-from-bytes): tiny outputs keep their build slot while they
// upload by default, so the other pair uploads every build's outputs beside the
// next build; with --output-mib N each output holds N MiB of random bytes, which
// upload beside the next build by default, so the other pair never does. A
// system feature of each pair routes its round's derivations to it. Prints
// wall times, their ratio, the per-build overhead (assignment to accepted
// result, minus the builder's own run, from the coordinator's log and the
// builders' timestamps), the CPU time the whole machine spent per build (from
// /proc/stat: on a busy 2-core machine the overhead is mostly CPU, and CPU time
// drifts less than wall time when the machine's speed does) and the nix-store
// processes per build (counted by a PATH wrapper in front of the workers'
// nix-store). Needs root and `npm run build`.
//   npm run bench:live-nix [-- --rounds N] [-- --output-mib N]     (BENCH_KEEP=1 keeps the farm's files and logs)
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { FarmCluster } from "../harness/cluster.js";
import { runIsolated } from "../harness/isolated.js";
import { parseDerivation } from "../../proto/nix/mod.js";

const CHAINS = 10;
const LENGTH = 10;
const BUILDS = CHAINS * LENGTH;
const TARGET_RATIO = 8;
const TARGET_OVERHEAD_MS = 60;

/** The two ways a worker pair runs: as configured by default, and the other way for these outputs (`bigOutputs`). */
function modesFor(bigOutputs: boolean) {
  const other = bigOutputs
    ? { label: "no upload beside the next build (--upload-beside-from-bytes=1T)", env: { FARM_UPLOAD_BESIDE_FROM: "1T" } }
    : { label: "every upload beside the next build (--upload-beside-from-bytes=0)", env: { FARM_UPLOAD_BESIDE_FROM: "0" } };
  const defaultLabel = `as configured by default (these ${bigOutputs ? "outputs upload beside the next build" : "tiny outputs keep their slot while they upload"})`;
  return [
    { key: "default", label: defaultLabel, feature: "bench-default", workers: ["w1", "w2"], env: {} },
    { key: "other", label: other.label, feature: "bench-other", workers: ["w3", "w4"], env: other.env },
  ] as const;
}
const ARGS = parseArgs(process.argv.slice(2));
const MODES = modesFor(ARGS.outputMib > 0);
type ModeKey = (typeof MODES)[number]["key"];
const WORKERS = MODES.flatMap((m) => m.workers);
/** Bytes of random data in each output (--output-mib); 0 = the timestamps alone. */
const OUTPUT_BYTES = ARGS.outputMib << 20;

/** One farm run of a round's DAG. */
interface FarmRun {
  farmS: number;
  /** CPU time the whole machine spent per build (all processes, from /proc/stat). */
  farmCpuMs: number;
  overheadMs: number[];
  nixStorePerBuild: number;
  byCommand: Map<string, number>;
}

interface Round {
  localS: number;
  localCpuMs: number;
  farm: Record<ModeKey, FarmRun>;
}

/** `--rounds N` (1-20, default 3) and `--output-mib N` (0-64, default 0). */
function parseArgs(argv: string[]): { rounds: number; outputMib: number } {
  const value = (flag: string, dflt: number) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? Number(argv[i + 1]) : dflt;
  };
  const rounds = value("--rounds", 3);
  const outputMib = value("--output-mib", 0);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20 || !Number.isInteger(outputMib) || outputMib < 0 || outputMib > 64) {
    console.error("usage: npm run bench:live-nix -- [--rounds N (1-20, default 3)] [--output-mib N (0-64, default 0)]");
    process.exit(2);
  }
  return { rounds, outputMib };
}

/** The DAG: a list of 10 chains; each builder records its own start and end (ns) on its output's first line. */
function dagExpression(nonce: string, feature: string): string {
  // With OUTPUT_BYTES, the random bytes are made inside the timed part and copied after the timestamps.
  const script = OUTPUT_BYTES === 0
    ? `t0=$(/bin/date +%s%N); echo \${prev} $t0 $(/bin/date +%s%N) > $out`
    : `t0=$(/bin/date +%s%N); /usr/bin/head -c ${OUTPUT_BYTES} /dev/urandom > $TMPDIR/bulk; t1=$(/bin/date +%s%N); { echo \${prev} $t0 $t1; /bin/cat $TMPDIR/bulk; } > $out`;
  return `let
  step = c: prev: i: builtins.derivation {
    name = "trivial-\${toString c}-\${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "${script}" ];
    requiredSystemFeatures = [ "${feature}" ];
    nonce = "${nonce}";
  };
  chain = c: builtins.foldl' (step c) "" (builtins.genList (i: i) ${LENGTH});
in builtins.genList chain ${CHAINS}
`;
}

/** A nix-store in front of the real one that appends its first two arguments to `countFile`. */
function nixStoreWrapper(dir: string, countFile: string): string {
  const real = execFileSync("sh", ["-c", "command -v nix-store"], { encoding: "utf8" }).trim();
  mkdirSync(dir, { recursive: true });
  // Counted, then replaced by the real one: no process of its own stays, and the count costs no more.
  writeFileSync(path.join(dir, "nix-store"), `#!/bin/sh\necho "$1 $2" >> ${countFile}\nexec ${real} "$@"\n`, { mode: 0o755 });
  writeFileSync(countFile, "");
  chmodSync(countFile, 0o666);
  return dir;
}

/** CPU seconds the machine has spent busy so far (every process and the kernel; idle and I/O wait not counted). */
function machineBusySeconds(): number {
  const [, user, nice, system, , , irq, softirq, steal] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).map(Number);
  return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
}

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

/** Runs `work` and returns its result with the machine's busy CPU seconds during it. */
async function withMachineCpu<T>(work: () => Promise<T>): Promise<{ result: T; cpuS: number }> {
  const before = machineBusySeconds();
  const result = await work();
  return { result, cpuS: machineBusySeconds() - before };
}

/** Wall seconds of `nix-store -r` of the DAG in a private /tmp/nix (evaluation not counted). */
async function localRun(root: string, file: string): Promise<number> {
  const nixDir = mkdtempSync(path.join(root, "local-"));
  const conf = path.join(nixDir, "conf");
  mkdirSync(conf);
  writeFileSync(path.join(conf, "nix.conf"), `build-users-group =\nsandbox = false\nsubstituters =\nmax-jobs = 2\nsystem-features = ${MODES.map((m) => m.feature).join(" ")}\n`);
  const script = `set -e
drvs=$(nix-instantiate ${file} 2>/dev/null)
t0=$(date +%s%N); nix-store -r $drvs --max-jobs 2 >/dev/null 2>&1; t1=$(date +%s%N)
echo $t0 $t1`;
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: nixDir,
    NIX_STORE_DIR: "/tmp/nix/store",
    NIX_STATE_DIR: "/tmp/nix/var/nix",
    NIX_LOG_DIR: "/tmp/nix/var/log/nix",
    NIX_CONF_DIR: conf,
    NIX_USER_CONF_FILES: path.join(conf, "nix.conf"),
  };
  try {
    const r = await runIsolated("local", "/bin/sh", ["-c", script], { nixDir: path.join(nixDir, "nix"), hideNix: true, env });
    if (r.code !== 0) throw new Error(`local build failed (${r.code}): ${r.stderr.trim()}`);
    const [t0, t1] = r.stdout.trim().split(" ").map(Number);
    return (t1 - t0) / 1e9;
  } finally {
    rmSync(nixDir, { recursive: true, force: true });
  }
}

interface LogRecord {
  msg: string;
  time: number;
  drv?: string;
  epoch?: number;
  worker?: string;
}

/** Per build: accepted minus assigned, minus the builder's own run (read from its output in the worker's store). */
function overheads(farm: FarmCluster, logFrom: number): number[] {
  const lines = farm.coordinatorLog().slice(logFrom).split("\n").filter((l) => l.startsWith("{"));
  const assigned = new Map<string, LogRecord>();
  const out: number[] = [];
  for (const line of lines) {
    const rec = JSON.parse(line) as LogRecord;
    const key = `${rec.drv}#${rec.epoch}`;
    if (rec.msg === "assigned") assigned.set(key, rec);
    if (rec.msg !== "result accepted") continue;
    const a = assigned.get(key);
    if (!a || !rec.drv) continue;
    const drvText = readFileSync(path.join(farm.root, "submitter/nix/store", path.basename(rec.drv)), "utf8");
    const outPath = parseDerivation(drvText, rec.drv).outputs.find((o) => o.name === "out")!.path;
    const built = path.join(farm.root, "workers", rec.worker ?? a.worker ?? "", "nix/store", path.basename(outPath));
    const fields = readFileSync(built, "latin1").split("\n")[0].trim().split(" ");
    const builderMs = (Number(fields.at(-1)) - Number(fields.at(-2))) / 1e6;
    out.push(rec.time - a.time - builderMs);
  }
  return out;
}

function countCommands(files: string[]): string[] {
  return files.flatMap((f) => readFileSync(f, "utf8").split("\n").filter(Boolean));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

async function main(): Promise<void> {
  const { rounds } = ARGS;
  if (process.getuid?.() !== 0) throw new Error("needs root (namespaced workers, as in the test harness)");
  const root = mkdtempSync(path.join(os.tmpdir(), "tmpnix-bench-live-nix-"));
  chmodSync(root, 0o755);
  const countFiles = new Map(WORKERS.map((w) => [w, path.join(root, `nix-store-calls-${w}`)]));
  const workers = MODES.flatMap((mode) =>
    mode.workers.map((name) => ({
      name,
      env: { PATH: `${nixStoreWrapper(path.join(root, `bin-${name}`), countFiles.get(name)!)}:${process.env.PATH}`, FARM_FEATURES: mode.feature, ...mode.env },
    })),
  );
  let farm: FarmCluster | undefined;
  const keep = Boolean(process.env.BENCH_KEEP);
  const stop = async () => {
    await farm?.stop(keep);
    if (keep) console.log(`kept ${root} and ${farm?.root}`);
    else rmSync(root, { recursive: true, force: true });
  };
  process.once("SIGINT", () => void stop().finally(() => process.exit(130)));
  try {
    console.log(`starting a farm: coordinator + cache, ${WORKERS.length} real-Nix workers in namespaces (2 per mode) ...`);
    farm = await FarmCluster.start({ workers });
    const results: Round[] = [];
    for (let r = 1; r <= rounds; r++) {
      const files = Object.fromEntries(
        MODES.map((mode) => {
          const file = path.join(root, `dag-${r}-${mode.key}.nix`);
          writeFileSync(file, dagExpression(`${process.pid}-${Date.now()}-${r}-${mode.key}`, mode.feature));
          return [mode.key, file];
        }),
      ) as Record<ModeKey, string>;
      // Alternate the order so none always meets a warmer machine.
      const order: ("local" | ModeKey)[] = r % 2 === 1 ? ["local", "default", "other"] : ["other", "default", "local"];
      let local = { result: 0, cpuS: 0 };
      const runs: Partial<Record<ModeKey, FarmRun>> = {};
      for (const step of order) {
        if (step === "local") local = await withMachineCpu(() => localRun(root, files.default));
        else runs[step] = await farmRun(farm, files[step], [...countFiles.values()]);
      }
      const round: Round = { localS: local.result, localCpuMs: (local.cpuS * 1000) / BUILDS, farm: runs as Record<ModeKey, FarmRun> };
      results.push(round);
      const said = MODES.map((m) => {
        const f = round.farm[m.key];
        return `${m.key} ${f.farmS.toFixed(2)} s (${(f.farmS / round.localS).toFixed(1)}×, overhead median ${median(f.overheadMs).toFixed(0)} ms, machine CPU ${f.farmCpuMs.toFixed(0)} ms/build)`;
      });
      console.log(`round ${r}: local ${round.localS.toFixed(2)} s (machine CPU ${round.localCpuMs.toFixed(0)} ms/build); farm ${said.join("; ")}`);
    }
    report(results);
  } finally {
    await stop();
  }
}

/** One `farm submit --follow` of `file`, with what it cost. */
async function farmRun(farm: FarmCluster, file: string, countFiles: string[]): Promise<FarmRun> {
  const callsBefore = countCommands(countFiles).length;
  const logFrom = farm.coordinatorLog().length;
  const t0 = process.hrtime.bigint();
  const { result: sub, cpuS } = await withMachineCpu(() => farm.cli(["submit", `${file}#`, "--follow", "--json"], { timeoutMs: 1_800_000 }));
  const farmS = Number(process.hrtime.bigint() - t0) / 1e9;
  if (sub.code !== 0) throw new Error(`farm submit failed (${sub.code}): ${sub.stderr.trim().split("\n").slice(-5).join(" | ")}`);
  const job = JSON.parse(sub.stdout) as { state: string; counts: { total: number } };
  if (job.state !== "succeeded" || job.counts.total !== BUILDS) throw new Error(`job ended ${job.state} with ${job.counts.total} nodes`);
  const calls = countCommands(countFiles).slice(callsBefore);
  const byCommand = new Map<string, number>();
  for (const c of calls) {
    const [a, b] = c.split(" ");
    const key = a === "-q" || a === "-r" ? `${a}${b === "--dry-run" || a === "-q" ? ` ${b}` : ""}` : a;
    byCommand.set(key, (byCommand.get(key) ?? 0) + 1);
  }
  return { farmS, farmCpuMs: (cpuS * 1000) / BUILDS, overheadMs: overheads(farm, logFrom), nixStorePerBuild: calls.length / BUILDS, byCommand };
}

function report(results: Round[]): void {
  const localS = median(results.map((r) => r.localS));
  const outputs = OUTPUT_BYTES === 0 ? "" : `, ${OUTPUT_BYTES >> 20} MiB of random bytes in each output`;
  console.log(`\n${BUILDS} trivial derivations (${CHAINS} chains of ${LENGTH}${outputs}), 2 workers per mode, medians of ${results.length} rounds\n`);
  console.log("| measure | value | target |");
  console.log("|---|---|---|");
  console.log(`| local \`nix-store -r\` (max-jobs 2) | ${localS.toFixed(2)} s | |`);
  console.log(`| machine CPU per build, local (evaluation included) | ${median(results.map((r) => r.localCpuMs)).toFixed(0)} ms | |`);
  for (const mode of MODES) {
    const runs = results.map((r) => r.farm[mode.key]);
    const all = runs.flatMap((f) => f.overheadMs);
    const ratio = median(results.map((r) => r.farm[mode.key].farmS / r.localS));
    const overhead = median(all);
    const targets = mode.key === "default"; // the default configuration is the one held to the targets
    const verdict = (ok: boolean) => (targets ? (ok ? "met" : "NOT met") : "");
    console.log(`| **${mode.label}**: farm (\`farm submit --follow\`, evaluation and upload included) | ${median(runs.map((f) => f.farmS)).toFixed(2)} s | |`);
    console.log(`| ${mode.key}: farm / local | ${ratio.toFixed(1)}× | ${targets ? `≤ ${TARGET_RATIO}× ` : ""}${verdict(ratio <= TARGET_RATIO)} |`);
    console.log(`| ${mode.key}: per-build overhead, median (p90) | ${overhead.toFixed(0)} ms (${quantile(all, 0.9).toFixed(0)} ms) | ${targets ? `≤ ${TARGET_OVERHEAD_MS} ms ` : ""}${verdict(overhead <= TARGET_OVERHEAD_MS)} |`);
    console.log(`| ${mode.key}: machine CPU per build (evaluation, upload, coordinator, workers, Nix) | ${median(runs.map((f) => f.farmCpuMs)).toFixed(0)} ms | |`);
    console.log(`| ${mode.key}: nix-store processes per build | ${median(runs.map((f) => f.nixStorePerBuild)).toFixed(2)} | |`);
  }
  const byCommand = new Map<string, number>();
  for (const r of results) for (const f of Object.values(r.farm)) for (const [k, v] of f.byCommand) byCommand.set(k, (byCommand.get(k) ?? 0) + v);
  const perBuild = [...byCommand].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${(v / (BUILDS * results.length * MODES.length)).toFixed(2)} ${k}`);
  console.log(`\nnix-store per build by command: ${perBuild.join(", ")}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});

