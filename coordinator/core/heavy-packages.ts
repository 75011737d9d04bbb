// Known heavy packages: what a first build needs before the farm has any
// history of its own. Every number below comes from OUTSIDE this farm
// (published build reports, upstream issues, or a rough guess where said), so
// history replaces it as soon as one build finishes. Operators override or
// extend entries with a JSON file read by the shell (see loadHeavyTable).
import { InvalidInputError } from "./errors.js";

/** One operator-editable entry; the same shape is used in the JSON override file. */
export interface HeavyPackage {
  /** A pname, or a prefix ending in `*` (`chromium*` matches chromium-unwrapped). */
  pname: string;
  /** Wall time of the whole build on one core. */
  oneCoreMinutes: number;
  /** Share of that time that spreads over cores (0..1, Amdahl). */
  parallelFraction: number;
  /** Peak memory at c cores = baseMiB + perCoreMiB * c. */
  baseMiB: number;
  perCoreMiB: number;
  /** Build directory plus outputs. */
  diskGiB: number;
  /** Where the numbers come from. */
  note: string;
}

/** The built-in table (outside sources, not measured here). */
export const DEFAULT_HEAVY_PACKAGES: readonly HeavyPackage[] = [
  // Outside source: gcc 10.3 took ~660 min on one small container, ~1 GB peak at 2 cores.
  { pname: "gcc", oneCoreMinutes: 660, parallelFraction: 0.85, baseMiB: 600, perCoreMiB: 200, diskGiB: 6, note: "outside source: gcc 10.3 ~660 min on one small container, ~1 GB at 2 cores" },
  // Outside source: binutils ~64 min on the same kind of container.
  { pname: "binutils", oneCoreMinutes: 64, parallelFraction: 0.8, baseMiB: 200, perCoreMiB: 150, diskGiB: 1.5, note: "outside source: binutils ~64 min on one small container" },
  // Outside source: llvm ~9.6 h; its C++ units and static links are memory hungry.
  { pname: "llvm", oneCoreMinutes: 576, parallelFraction: 0.9, baseMiB: 1000, perCoreMiB: 800, diskGiB: 6, note: "outside source: llvm ~9.6 h on one small container" },
  // Assumption: clang is built from the same tree as llvm and behaves alike.
  { pname: "clang*", oneCoreMinutes: 576, parallelFraction: 0.9, baseMiB: 1000, perCoreMiB: 800, diskGiB: 6, note: "assumption: like llvm (outside source for llvm: ~9.6 h)" },
  // Outside source: nodejs 4-7 h; its bundled v8 needs much memory per unit and to link mksnapshot.
  { pname: "nodejs", oneCoreMinutes: 330, parallelFraction: 0.9, baseMiB: 1200, perCoreMiB: 700, diskGiB: 5, note: "outside source: nodejs 4-7 h; bundles v8" },
  // Outside source: v8 cannot link mksnapshot in small RAM (nodejs/node#43444, #53216).
  { pname: "v8", oneCoreMinutes: 240, parallelFraction: 0.9, baseMiB: 3072, perCoreMiB: 700, diskGiB: 6, note: "outside source: mksnapshot link fails in small RAM; duration is a rough guess" },
  // Outside source: ~1.5 GB per compile unit; the EC2 client unit alone needs > 4 GB (aws/aws-sdk-cpp#1890).
  { pname: "aws-sdk-cpp", oneCoreMinutes: 180, parallelFraction: 0.9, baseMiB: 2560, perCoreMiB: 1536, diskGiB: 8, note: "outside source: ~1.5 GB per compile unit, EC2 unit > 4 GB (aws/aws-sdk-cpp#1890); duration a rough guess" },
  // Outside source: big (bootstraps itself, bundles llvm); numbers are rough guesses.
  { pname: "rustc", oneCoreMinutes: 360, parallelFraction: 0.8, baseMiB: 2048, perCoreMiB: 512, diskGiB: 15, note: "outside source: known big; numbers are rough guesses" },
  // Outside source: big (multi-stage bootstrap); numbers are rough guesses.
  { pname: "ghc", oneCoreMinutes: 300, parallelFraction: 0.7, baseMiB: 1536, perCoreMiB: 512, diskGiB: 8, note: "outside source: known big; numbers are rough guesses" },
  // Outside source: among the largest builds there are; linking needs many GB.
  { pname: "chromium*", oneCoreMinutes: 2400, parallelFraction: 0.95, baseMiB: 6144, perCoreMiB: 1024, diskGiB: 40, note: "outside source: known huge; numbers are rough guesses" },
  // Outside source: big (rust + C++, libxul link); numbers are rough guesses.
  { pname: "firefox*", oneCoreMinutes: 900, parallelFraction: 0.9, baseMiB: 4096, perCoreMiB: 1024, diskGiB: 20, note: "outside source: known big; numbers are rough guesses" },
  // Outside source: big; numbers are rough guesses.
  { pname: "libreoffice*", oneCoreMinutes: 900, parallelFraction: 0.9, baseMiB: 2048, perCoreMiB: 768, diskGiB: 25, note: "outside source: known big; numbers are rough guesses" },
  // Outside source: a chromium inside Qt; numbers are rough guesses.
  { pname: "qtwebengine", oneCoreMinutes: 1800, parallelFraction: 0.95, baseMiB: 5120, perCoreMiB: 1024, diskGiB: 30, note: "outside source: chromium-based, known huge; numbers are rough guesses" },
  // Outside source: distro kernels build thousands of modules; numbers are rough guesses.
  { pname: "linux", oneCoreMinutes: 480, parallelFraction: 0.95, baseMiB: 512, perCoreMiB: 256, diskGiB: 12, note: "outside source: distro kernel config is big; numbers are rough guesses" },
];

const FIELDS: readonly (keyof HeavyPackage)[] = ["pname", "oneCoreMinutes", "parallelFraction", "baseMiB", "perCoreMiB", "diskGiB", "note"];

function checkEntry(raw: unknown, where: string): HeavyPackage {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new InvalidInputError(`${where}: expected an object`);
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!FIELDS.includes(k as keyof HeavyPackage)) throw new InvalidInputError(`${where}: unknown field '${k}'`);
  }
  if (typeof o.pname !== "string" || !/^[^*\s]+\*?$/.test(o.pname)) {
    throw new InvalidInputError(`${where}: pname must be a non-empty name, optionally ending in '*'`);
  }
  const num = (k: keyof HeavyPackage, max: number): number => {
    const v = o[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > max) {
      throw new InvalidInputError(`${where} (${String(o.pname)}): ${k} must be a number in [0, ${max}]`);
    }
    return v;
  };
  return {
    pname: o.pname,
    oneCoreMinutes: num("oneCoreMinutes", 60 * 24 * 30),
    parallelFraction: num("parallelFraction", 1),
    baseMiB: num("baseMiB", 2 ** 24),
    perCoreMiB: num("perCoreMiB", 2 ** 24),
    diskGiB: num("diskGiB", 2 ** 20),
    note: o.note === undefined ? "operator override" : typeof o.note === "string" ? o.note : String(o.note),
  };
}

/**
 * Validates an operator's override file (JSON text or parsed value): either a
 * list of entries, or `{ "replace": bool, "packages": [...] }`. Entries
 * replace built-in ones of the same pname; with `replace: true` the built-in
 * table is dropped. Throws InvalidInputError naming the bad entry.
 */
export function loadHeavyTable(json: string | unknown, base: readonly HeavyPackage[] = DEFAULT_HEAVY_PACKAGES): HeavyPackage[] {
  let value: unknown = json;
  if (typeof json === "string") {
    try {
      value = JSON.parse(json);
    } catch (err) {
      throw new InvalidInputError(`heavy-packages table: not JSON: ${(err as Error).message}`, { cause: err });
    }
  }
  let list: unknown = value;
  let replace = false;
  if (typeof value === "object" && value !== null && !Array.isArray(value)) {
    const o = value as Record<string, unknown>;
    const extra = Object.keys(o).filter((k) => k !== "replace" && k !== "packages");
    if (extra.length > 0) throw new InvalidInputError(`heavy-packages table: unknown field '${extra[0]}'`);
    if (o.replace !== undefined && typeof o.replace !== "boolean") throw new InvalidInputError("heavy-packages table: replace must be a boolean");
    replace = o.replace === true;
    list = o.packages;
  }
  if (!Array.isArray(list)) throw new InvalidInputError("heavy-packages table: expected a list of packages");
  const entries = list.map((e, i) => checkEntry(e, `heavy-packages table entry ${i}`));
  const merged = new Map<string, HeavyPackage>();
  if (!replace) for (const e of base) merged.set(e.pname, e);
  for (const e of entries) merged.set(e.pname, e);
  return [...merged.values()];
}

/** Looks entries up by pname: exact names first, then the longest matching prefix. */
export class HeavyTable {
  private readonly exact = new Map<string, HeavyPackage>();
  private readonly prefixes: { prefix: string; entry: HeavyPackage }[] = [];

  constructor(entries: readonly HeavyPackage[] = DEFAULT_HEAVY_PACKAGES) {
    for (const e of entries) {
      if (e.pname.endsWith("*")) this.prefixes.push({ prefix: e.pname.slice(0, -1), entry: e });
      else this.exact.set(e.pname, e);
    }
    this.prefixes.sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** The entry for `pname`, if any. */
  lookup(pname: string): HeavyPackage | undefined {
    const hit = this.exact.get(pname);
    if (hit !== undefined) return hit;
    for (const p of this.prefixes) if (pname.startsWith(p.prefix)) return p.entry;
    return undefined;
  }
}
