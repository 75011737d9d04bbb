// What one profile generation holds (pure): the installed packages, each with
// its name, version, where it came from and its output paths. Generations are
// whole manifests, never diffs, so any one of them can be switched to alone.
import { currentEntry, parseStorePath, versionOfStorePath, type PackageEntry, type PackageIndex } from "../../../proto/nix/mod.js";

/** Format tag of a generation's manifest.json. */
export const MANIFEST_FORMAT = "tmpnix-profile/1";

/** One installed package. */
export interface InstalledPackage {
  name: string;
  version?: string;
  /** Where it came from: the index entry's source, or the store path given. */
  source: string;
  /** Output name → store path. */
  outputs: Record<string, string>;
  /** When the farm built it (index entries only). */
  builtAt?: string;
  /** Installed by name from the index (upgradable), or as a store path. */
  fromIndex: boolean;
}

/** A generation's manifest. */
export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  generation: number;
  createdAt: string;
  packages: InstalledPackage[];
}

/** The first, empty manifest. */
export const emptyManifest = (): Manifest => ({ format: MANIFEST_FORMAT, generation: 0, createdAt: new Date(0).toISOString(), packages: [] });

/** A package from an index entry. */
export function packageFromEntry(e: PackageEntry): InstalledPackage {
  return { name: e.name, ...(e.version ? { version: e.version } : {}), source: e.source, outputs: { ...e.outputs }, builtAt: e.builtAt, fromIndex: true };
}

/** A package for a store path given directly: named like nix-env names it (`…-hello-2.12` → hello, 2.12). */
export function packageFromStorePath(storePath: string, storeDir: string): InstalledPackage {
  const { name } = parseStorePath(storePath, storeDir);
  const version = versionOfStorePath(storePath, storeDir);
  const base = version ? name.slice(0, name.length - version.length - 1) : name;
  return { name: base, ...(version ? { version } : {}), source: storePath, outputs: { out: storePath }, fromIndex: false };
}

/** `m`'s packages with `pkgs` added, replacing any of the same name, sorted by name. */
export function withPackages(m: Manifest, pkgs: InstalledPackage[]): InstalledPackage[] {
  const names = new Set(pkgs.map((p) => p.name));
  return [...m.packages.filter((p) => !names.has(p.name)), ...pkgs].sort((a, b) => a.name.localeCompare(b.name));
}

/** `m`'s packages without `names`; the names it did not have. */
export function withoutPackages(m: Manifest, names: string[]): { packages: InstalledPackage[]; missing: string[] } {
  const have = new Set(m.packages.map((p) => p.name));
  return { packages: m.packages.filter((p) => !names.includes(p.name)), missing: names.filter((n) => !have.has(n)) };
}

/** What `farm upgrade` would change. */
export interface UpgradePlan {
  upgrades: { from: InstalledPackage; to: InstalledPackage }[];
  current: string[];
  /** Asked for, but not installed or not in the index (or installed as a store path). */
  skipped: { name: string; why: string }[];
}

const sameOutputs = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);

/** Plans moving `names` (all index-installed packages when empty) to the index's newest entries. */
export function planUpgrade(m: Manifest, index: PackageIndex, names: string[]): UpgradePlan {
  const plan: UpgradePlan = { upgrades: [], current: [], skipped: [] };
  const wanted = names.length ? names : m.packages.filter((p) => p.fromIndex).map((p) => p.name);
  for (const name of wanted) {
    const have = m.packages.find((p) => p.name === name);
    const newest = currentEntry(index, name);
    if (!have) plan.skipped.push({ name, why: "not installed" });
    else if (!have.fromIndex) plan.skipped.push({ name, why: "installed as a store path, not by name" });
    else if (!newest) plan.skipped.push({ name, why: "no longer in the index" });
    else if (sameOutputs(have.outputs, newest.outputs)) plan.current.push(name);
    else plan.upgrades.push({ from: have, to: packageFromEntry(newest) });
  }
  return plan;
}

/** Every output path a manifest needs. */
export function outputsOf(m: Manifest): string[] {
  return [...new Set(m.packages.flatMap((p) => Object.values(p.outputs)))];
}
