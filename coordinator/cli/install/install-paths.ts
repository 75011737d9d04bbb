// `farm install`: install store paths and their closure (proto/nix/install),
// then link their bin/ entries into the user's profile.

import { randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, readlink, realpath, rename, symlink } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { installClosure, type ClosureInstallOptions, type ClosureInstallResult, type InstallProgress } from "../../../proto/nix/install/mod.js";

/** Options of installPaths. */
export interface InstallOptions extends ClosureInstallOptions {
  profileDir: string;
}

/** What an install did. */
export interface InstallResult extends ClosureInstallResult {
  /** Profile links created or updated. */
  linked: string[];
  /** Profile entries left alone because something we do not own is there. */
  skippedLinks: string[];
}

/** Points `link` at `target` atomically unless something we do not own is there. */
async function linkInto(link: string, target: string, storeDir: string): Promise<"linked" | "same" | "foreign"> {
  const current = await lstat(link).catch(() => null);
  if (current) {
    if (!current.isSymbolicLink()) return "foreign";
    const old = await readlink(link);
    if (old === target) return "same";
    if (!old.startsWith(storeDir + "/")) return "foreign";
  }
  const tmp = `${link}.tmp-${randomBytes(4).toString("hex")}`;
  await symlink(target, tmp);
  await rename(tmp, link);
  return "linked";
}

/** `path/bin` as a real directory inside `path`, or undefined (absent, or a link leading out of the path). */
async function binDirOf(path: string, logger: Logger): Promise<string | undefined> {
  const src = join(path, "bin");
  const resolved = await realpath(src).catch(() => undefined);
  if (!resolved) return undefined;
  if (!resolved.startsWith(path + "/")) {
    logger.warn({ storePath: path, bin: resolved }, "not linking programs: bin/ leads out of its store path");
    return undefined;
  }
  return (await lstat(resolved)).isDirectory() ? src : undefined;
}

/** Links the bin/ entries of `paths` into `binDir`, first path first; never replaces what farm does not own. */
export async function linkPrograms(paths: string[], binDir: string, storeDir: string, logger: Logger): Promise<{ linked: string[]; skippedLinks: string[] }> {
  const result = { linked: [] as string[], skippedLinks: [] as string[] };
  for (const path of paths) {
    const src = await binDirOf(path, logger);
    if (!src) continue;
    await mkdir(binDir, { recursive: true });
    for (const entry of (await readdir(src)).sort()) {
      const link = join(binDir, entry);
      const outcome = await linkInto(link, join(src, entry), storeDir);
      if (outcome === "linked") result.linked.push(link);
      if (outcome === "foreign") {
        result.skippedLinks.push(link);
        logger.warn({ link }, "not replacing a profile entry that farm does not own");
      }
    }
  }
  return result;
}

async function linkBins(paths: string[], opts: InstallOptions, result: InstallResult): Promise<void> {
  const r = await linkPrograms(paths, join(opts.profileDir, "bin"), opts.storeDir, opts.logger);
  result.linked.push(...r.linked);
  result.skippedLinks.push(...r.skippedLinks);
}

/** Installs `paths` and their closure from the cache into `storeDir`, then links their bin/ entries into `profileDir/bin`. */
export async function installPaths(opts: InstallOptions): Promise<InstallResult> {
  let last: InstallProgress = { phase: "resolved", done: 0, total: 0, bytesDone: 0, bytesTotal: 0 };
  const closure = await installClosure({ ...opts, onProgress: (p) => opts.onProgress?.((last = p)) });
  const result: InstallResult = { ...closure, linked: [], skippedLinks: [] };
  await linkBins([...new Set(opts.paths)], opts, result);
  opts.onProgress?.({ ...last, phase: "linked", storePath: undefined });
  return result;
}
