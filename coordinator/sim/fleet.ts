// Simulated fleets: groups of identical workers (cores, memory, build slots)
// on a platform that recycles containers. Written compactly for the CLI:
//   "8x1c:512M,6x1c:1G,4x1c:2G,2x1c:4G/j2;life=12h;kill=48h;boot=2m;uptime=random"
// (count x cores : memory [/j max builds]; options after ';').
import { InvalidInputError } from "../core/errors.js";

/** Identical workers. */
export interface WorkerGroup {
  count: number;
  cores: number;
  memoryBytes: number;
  /** Build slots each worker offers (maxBuilds; Hydra's maxJobs). */
  maxBuilds: number;
}

/** The cores most workers of the fleet have (the median worker's): what a typical build gets. */
export function typicalCores(fleet: Pick<FleetSpec, "groups">): number {
  const cores = fleet.groups.flatMap((g) => Array<number>(g.count).fill(g.cores)).sort((a, b) => a - b);
  return cores.length === 0 ? 1 : cores[Math.floor((cores.length - 1) / 2)];
}

/** A fleet and its platform's recycling behaviour. */
export interface FleetSpec {
  groups: WorkerGroup[];
  systems: string[];
  /** Hard container lifetime (the field notes: at least every 12 h). */
  maxLifetimeMs: number;
  /** Mean time to an unplanned kill per worker (exponential); 0 = never. */
  randomKillMeanMs: number;
  /** Time for a replacement container to boot and join. */
  bootDelayMs: number;
  /** Uptime of the first incarnations: uniform over the lifetime, or all fresh. */
  initialUptime: "random" | "zero";
  /** Workers with at least this much memory advertise `big-parallel` (Hydra splits RAM by hand this way). */
  bigParallelMinMemoryBytes: number;
}

const MB = 2 ** 20;
const GB = 2 ** 30;
const HOUR = 3_600_000;

/** Platform defaults; groups come from the spec. */
export const DEFAULT_FLEET_OPTIONS: Omit<FleetSpec, "groups"> = {
  systems: ["x86_64-linux", "i686-linux"],
  maxLifetimeMs: 12 * HOUR,
  randomKillMeanMs: 48 * HOUR,
  bootDelayMs: 2 * 60_000,
  initialUptime: "random",
  bigParallelMinMemoryBytes: 2 * GB,
};

/** `n` one-core workers: 40% 512 MB, 30% 1 GB, 20% 2 GB, 10% 4 GB (at least one 4 GB). */
export function defaultFleet(n: number): FleetSpec {
  const big = Math.max(1, Math.round(n * 0.1));
  const two = Math.round(n * 0.2);
  const one = Math.round(n * 0.3);
  const small = Math.max(0, n - big - two - one);
  const groups: WorkerGroup[] = [
    { count: small, cores: 1, memoryBytes: 512 * MB, maxBuilds: 1 },
    { count: one, cores: 1, memoryBytes: 1 * GB, maxBuilds: 1 },
    { count: two, cores: 1, memoryBytes: 2 * GB, maxBuilds: 1 },
    { count: big, cores: 1, memoryBytes: 4 * GB, maxBuilds: 1 },
  ].filter((g) => g.count > 0);
  return { ...DEFAULT_FLEET_OPTIONS, groups };
}

/** Parses "512M", "4G", "1.5G" into bytes. */
export function parseBytes(s: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMG])i?B?$/i.exec(s.trim());
  if (m === null) throw new InvalidInputError(`fleet: bad memory size ${JSON.stringify(s)} (e.g. 512M, 4G)`);
  const unit = { K: 2 ** 10, M: MB, G: GB }[m[2].toUpperCase() as "K" | "M" | "G"];
  return Math.round(Number(m[1]) * unit);
}

/** Parses "90s", "2m", "12h", "3d" into ms. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(s.trim());
  if (m === null) throw new InvalidInputError(`fleet: bad duration ${JSON.stringify(s)} (e.g. 90s, 2m, 12h)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: HOUR, d: 24 * HOUR }[m[2] as "ms" | "s" | "m" | "h" | "d"];
  return Math.round(Number(m[1]) * unit);
}

function parseGroup(s: string): WorkerGroup {
  const m = /^(\d+)x(\d+)c:([^/]+)(?:\/j(\d+))?$/.exec(s.trim());
  if (m === null) throw new InvalidInputError(`fleet: bad group ${JSON.stringify(s)} (want COUNTxCORESc:MEM[/jSLOTS], e.g. 8x1c:512M)`);
  const g = { count: Number(m[1]), cores: Number(m[2]), memoryBytes: parseBytes(m[3]), maxBuilds: m[4] === undefined ? 1 : Number(m[4]) };
  if (g.count < 1 || g.cores < 1 || g.maxBuilds < 1) throw new InvalidInputError(`fleet: group ${s} needs count, cores and slots >= 1`);
  return g;
}

/** Parses a fleet spec (see the file comment); a bare number means defaultFleet(n). */
export function parseFleet(spec: string): FleetSpec {
  const [groupsPart, ...opts] = spec.split(";");
  const fleet: FleetSpec = /^\s*\d+\s*$/.test(groupsPart)
    ? defaultFleet(Number(groupsPart))
    : { ...DEFAULT_FLEET_OPTIONS, groups: groupsPart.split(",").map(parseGroup) };
  for (const opt of opts) {
    const [k, v = ""] = opt.split("=").map((x) => x.trim());
    if (k === "life") fleet.maxLifetimeMs = parseDuration(v);
    else if (k === "kill") fleet.randomKillMeanMs = v === "0" || v === "never" ? 0 : parseDuration(v);
    else if (k === "boot") fleet.bootDelayMs = parseDuration(v);
    else if (k === "uptime" && (v === "random" || v === "zero")) fleet.initialUptime = v;
    else if (k === "bigmem") fleet.bigParallelMinMemoryBytes = parseBytes(v);
    else throw new InvalidInputError(`fleet: unknown option ${JSON.stringify(opt)} (life, kill, boot, uptime=random|zero, bigmem)`);
  }
  if (fleet.groups.length === 0) throw new InvalidInputError("fleet: no workers");
  return fleet;
}

/** One-line description, e.g. "20 workers (8x1c:512M, ...), life 12h, kill mean 48h". */
export function describeFleet(f: FleetSpec): string {
  const n = f.groups.reduce((a, g) => a + g.count, 0);
  const mem = (b: number): string => (b >= GB ? `${+(b / GB).toFixed(2)}G` : `${Math.round(b / MB)}M`);
  const groups = f.groups.map((g) => `${g.count}x${g.cores}c:${mem(g.memoryBytes)}${g.maxBuilds > 1 ? `/j${g.maxBuilds}` : ""}`);
  const h = (ms: number): string => `${+(ms / HOUR).toFixed(1)}h`;
  return `${n} workers (${groups.join(",")}), life ${h(f.maxLifetimeMs)}, random kill mean ${f.randomKillMeanMs > 0 ? h(f.randomKillMeanMs) : "never"}, boot ${f.bootDelayMs / 1000}s`;
}

/** Total cores of the fleet. */
export function fleetCores(f: FleetSpec): number {
  return f.groups.reduce((a, g) => a + g.count * g.cores, 0);
}
