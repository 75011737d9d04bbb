// The package manager's verbs over a profile (profile-generations.ts), the
// cache's signed index and the closure installer: install, upgrade, remove,
// rollback and gc. Each resolves everything it needs before it changes
// anything, runs under the profile's lock, and ends in at most one new
// generation (or one switch), so a failure or crash changes nothing visible.
import type { Logger } from "pino";
import { InvalidInputError } from "../../core/errors.js";
import { installClosure, type InstallProgress, type InstallSource } from "../../../proto/nix/install/mod.js";
import { currentEntry, isStorePath, type PackageIndex } from "../../../proto/nix/mod.js";
import { collectGarbage, type GcResult } from "./gc.js";
import { outputsOf, packageFromEntry, packageFromStorePath, planUpgrade, withoutPackages, withPackages, type InstalledPackage, type UpgradePlan } from "./manifest.js";
import type { Profile } from "./profile-generations.js";

/** The index has no such name. */
export class NotInIndexError extends InvalidInputError {}

/** What the verbs need. */
export interface VerbDeps {
  profile: Profile;
  storeDir: string;
  logger: Logger;
  /** The cache (closure and NARs); absent for verbs that only touch the profile. */
  source?: InstallSource;
  /** The verified index (fetched only when a verb needs it). */
  index?: () => Promise<PackageIndex>;
  onProgress?: (p: InstallProgress) => void;
  /** Called after paths were put in the store (e.g. to register them with a stock Nix's database). */
  onInstalled?: (paths: string[]) => Promise<void>;
  /** Called before gc deletes paths (e.g. to unregister them from a stock Nix's database); throwing stops the gc. */
  beforeDelete?: (paths: string[]) => Promise<void>;
  /** Paths something besides the profile still uses (kept by gc with their closure). */
  extraRoots?: () => Promise<string[]>;
}

/** What a change of the profile did. */
export interface ProfileChange {
  generation: number;
  packages: InstalledPackage[];
  installed: string[];
  alreadyPresent: string[];
  linked: string[];
}

async function locked<T>(d: VerbDeps, fn: () => Promise<T>): Promise<T> {
  const release = await d.profile.lock();
  try {
    await d.profile.recover();
    return await fn();
  } finally {
    await release();
  }
}

function needSource(d: VerbDeps): InstallSource {
  if (!d.source) throw new InvalidInputError("no cache configured");
  return d.source;
}

async function needIndex(d: VerbDeps): Promise<PackageIndex> {
  if (!d.index) throw new InvalidInputError("no cache configured");
  return d.index();
}

/** Resolves names (through the index) and store paths to packages; one line for a name the index lacks. */
export async function resolveTargets(d: VerbDeps, targets: string[]): Promise<InstalledPackage[]> {
  const names = targets.filter((t) => !isStorePath(t, d.storeDir));
  const index = names.length ? await needIndex(d) : undefined;
  return targets.map((t) => {
    if (isStorePath(t, d.storeDir)) return packageFromStorePath(t, d.storeDir);
    const entry = currentEntry(index!, t);
    if (!entry) throw new NotInIndexError(`the farm's package index has no '${t}' (see 'farm search')`);
    return packageFromEntry(entry);
  });
}

/** Installs packages' closures, then a generation with them added. */
async function installAndCommit(d: VerbDeps, add: InstalledPackage[], keep: (current: Awaited<ReturnType<Profile["current"]>>) => InstalledPackage[]): Promise<ProfileChange> {
  const outs = [...new Set(add.flatMap((p) => Object.values(p.outputs)))];
  const closure = outs.length
    ? await installClosure({ client: needSource(d), storeDir: d.storeDir, paths: outs, logger: d.logger, onProgress: d.onProgress })
    : { installed: [], alreadyPresent: [] };
  await d.onInstalled?.(closure.installed); // also catches up on paths an earlier install could not register
  const packages = withPackages({ ...(await d.profile.current()), packages: keep(await d.profile.current()) }, add);
  const { generation, linked } = await d.profile.commit(packages);
  return { generation, packages, installed: closure.installed, alreadyPresent: closure.alreadyPresent, linked };
}

/** `farm install NAME|STORE-PATH...`. */
export async function installTargets(d: VerbDeps, targets: string[]): Promise<ProfileChange> {
  const add = await resolveTargets(d, targets);
  return locked(d, () => installAndCommit(d, add, (m) => m.packages));
}

/** `farm upgrade [NAME...]`: to the index's newest; no new generation when nothing changes. */
export async function upgrade(d: VerbDeps, names: string[]): Promise<{ plan: UpgradePlan; change?: ProfileChange }> {
  const index = await needIndex(d);
  return locked(d, async () => {
    const plan = planUpgrade(await d.profile.current(), index, names);
    if (plan.upgrades.length === 0) return { plan };
    return { plan, change: await installAndCommit(d, plan.upgrades.map((u) => u.to), (m) => m.packages) };
  });
}

/** `farm remove NAME...`: a new generation without them; refuses names not installed. */
export async function remove(d: VerbDeps, names: string[]): Promise<ProfileChange> {
  return locked(d, async () => {
    const { packages, missing } = withoutPackages(await d.profile.current(), names);
    if (missing.length) throw new InvalidInputError(`not installed: ${missing.join(", ")} (see 'farm list')`);
    const { generation, linked } = await d.profile.commit(packages);
    return { generation, packages, installed: [], alreadyPresent: [], linked };
  });
}

/** `farm rollback`: switch to the generation before the current one. */
export async function rollback(d: VerbDeps): Promise<{ from: number; to: number; packages: InstalledPackage[] }> {
  return locked(d, async () => {
    const from = await d.profile.currentNumber();
    const to = await d.profile.previous();
    await d.profile.switchTo(to);
    return { from, to, packages: (await d.profile.read(to)).packages };
  });
}

/** `farm gc [--dry-run]`: drop the generations but the current one (unless keepGenerations), then every installed path none needs. */
export async function gc(d: VerbDeps, opts: { dryRun: boolean; keepGenerations: boolean }): Promise<GcResult & { generationsDeleted: number[] }> {
  return locked(d, async () => {
    const current = await d.profile.currentNumber();
    const gens = await d.profile.generations();
    const kept = opts.keepGenerations ? gens : gens.filter((g) => g === current);
    const roots: string[] = [];
    for (const g of kept) roots.push(...outputsOf(await d.profile.read(g)));
    const generationsDeleted = opts.keepGenerations ? [] : gens.filter((g) => g !== current);
    if (!opts.dryRun && !opts.keepGenerations) await d.profile.deleteOthers();
    const extraRoots = (await d.extraRoots?.()) ?? [];
    const result = await collectGarbage({ storeDir: d.storeDir, roots, extraRoots, dryRun: opts.dryRun, beforeDelete: d.beforeDelete });
    return { ...result, generationsDeleted };
  });
}
