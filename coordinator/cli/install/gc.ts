// `farm gc`: deletes the store paths farm installed that no kept generation
// needs. What a path needs comes from the references recorded when it was
// installed (proto/nix/install/install-trust.ts keeps each verified narinfo);
// only paths farm installed are candidates, so anything else in the store dir
// (a stock Nix's own paths) is left alone, and so is anything they reference.
import { lstat, readdir, readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import { installRecordDir } from "../../../proto/nix/install/mod.js";
import { parseNarInfo, referencePaths } from "../../../proto/nix/mod.js";
import { removeTree } from "../../../proto/nix/install/store-install.js";

/** Paths reachable from `roots` through `refsOf` (a path with unknown references counts with none). */
export function liveClosure(roots: Iterable<string>, refsOf: (p: string) => readonly string[] | undefined): Set<string> {
  const live = new Set<string>();
  const todo = [...roots];
  while (todo.length) {
    const p = todo.pop()!;
    if (live.has(p)) continue;
    live.add(p);
    for (const r of refsOf(p) ?? []) if (!live.has(r)) todo.push(r);
  }
  return live;
}

/** The installed paths not in `live`, sorted. */
export function garbageOf(installed: Iterable<string>, live: ReadonlySet<string>): string[] {
  return [...installed].filter((p) => !live.has(p)).sort();
}

/** Every path farm recorded as installed in `storeDir`, with its references and NarSize. */
export async function installedPaths(storeDir: string): Promise<Map<string, { references: string[]; narSize: number; record: string }>> {
  const dir = installRecordDir(storeDir);
  const out = new Map<string, { references: string[]; narSize: number; record: string }>();
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.endsWith(".narinfo")) continue;
    const record = join(dir, name);
    const info = parseNarInfo(await readFile(record, "utf8"), storeDir);
    out.set(info.storePath, { references: referencePaths(info), narSize: info.narSize, record });
  }
  return out;
}

/** Bytes a tree takes on disk (apparent sizes of its files and links). */
export async function treeBytes(path: string): Promise<number> {
  const st = await lstat(path).catch(() => null);
  if (!st) return 0;
  if (!st.isDirectory()) return st.size;
  let n = 0;
  for (const name of await readdir(path)) n += await treeBytes(join(path, name));
  return n;
}

/** What a collection found or did. */
export interface GcResult {
  deleted: string[];
  bytesFreed: number;
  /** Half-installed temp dirs a crash left in the store dir. */
  tempDirs: string[];
}

/**
 * Deletes (or with dryRun only lists) installed paths outside the closure of
 * `roots` and of `extraRoots` (paths something else, such as a stock Nix,
 * still uses). Call under the profile lock.
 */
export async function collectGarbage(opts: { storeDir: string; roots: string[]; extraRoots?: string[]; dryRun: boolean; beforeDelete?: (paths: string[]) => Promise<void> }): Promise<GcResult> {
  const installed = await installedPaths(opts.storeDir);
  const live = liveClosure([...opts.roots, ...(opts.extraRoots ?? [])], (p) => installed.get(p)?.references);
  const result: GcResult = { deleted: [], bytesFreed: 0, tempDirs: [] };
  const garbage = garbageOf(installed.keys(), live);
  // E.g. unregister them from a stock Nix's database first: if that can't be done, nothing is deleted.
  if (!opts.dryRun && garbage.length) await opts.beforeDelete?.(garbage);
  for (const p of garbage) {
    result.bytesFreed += await treeBytes(p);
    result.deleted.push(p);
    if (opts.dryRun) continue;
    // The store path first: a record without its path is ignored by installs; a path without a record would be untrusted.
    await removeTree(p);
    await unlink(installed.get(p)!.record).catch(() => undefined);
  }
  for (const name of await readdir(opts.storeDir).catch(() => [] as string[])) {
    if (!name.startsWith(".tmp-")) continue;
    const p = join(opts.storeDir, name);
    result.tempDirs.push(p);
    result.bytesFreed += await treeBytes(p);
    if (!opts.dryRun) await removeTree(p);
  }
  return result;
}

