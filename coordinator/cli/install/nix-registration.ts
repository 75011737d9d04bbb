// Keeping a stock Nix's database in step with what farm installed: after an
// install every recorded path the database lacks is registered; before gc
// deletes paths they are unregistered; and what Nix holds beyond farm's own
// paths is kept by gc (Nix may have built on top of them).
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { installRecordDir, NixDbBusyError, nixStateDirOf, registerValidPaths, unregisterPaths, validPaths, type ValidPath } from "../../../proto/nix/install/mod.js";
import { parseNarInfo, referencePaths } from "../../../proto/nix/mod.js";

/** Every path farm recorded as installed that is in the store, as Nix registers it. */
async function recordedValidPaths(storeDir: string): Promise<ValidPath[]> {
  const dir = installRecordDir(storeDir);
  const out: ValidPath[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!name.endsWith(".narinfo")) continue;
    const info = parseNarInfo(await readFile(join(dir, name), "utf8"), storeDir);
    if (!(await stat(info.storePath).catch(() => null))) continue;
    out.push({
      storePath: info.storePath,
      narHash: info.narHash,
      narSize: info.narSize,
      references: referencePaths(info),
      deriver: info.deriver ? join(storeDir, info.deriver) : undefined,
      sigs: info.sigs,
      ca: info.ca,
    });
  }
  return out;
}

/** Registers farm's installed paths with Nix; a busy database only warns (the next install catches up). */
export async function registerWithNix(storeDir: string, logger: Logger, warn: (line: string) => void): Promise<string[]> {
  try {
    const added = await registerValidPaths(nixStateDirOf(storeDir), await recordedValidPaths(storeDir));
    logger.info({ registered: added.length }, "registered installed paths with the Nix database");
    return added;
  } catch (err) {
    if (!(err instanceof NixDbBusyError)) throw err;
    warn(`not registered with Nix yet: ${err.message}`);
    return [];
  }
}

/** Unregisters paths gc is about to delete (throws NixDbBusyError while Nix has the database open). */
export async function unregisterFromNix(storeDir: string, paths: string[]): Promise<void> {
  await unregisterPaths(nixStateDirOf(storeDir), paths);
}

/** Paths Nix holds valid that farm did not install: gc keeps them and their closure. */
export async function nixOwnPaths(storeDir: string, recorded: ReadonlySet<string>): Promise<string[]> {
  return (await validPaths(nixStateDirOf(storeDir))).filter((p) => !recorded.has(p));
}
