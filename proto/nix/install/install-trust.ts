// What `farm install` may trust in the store dir it installs into. A path that
// is already there is used without fetching it, so the store dir must be one
// nobody else can plant paths in: it and its parent (the Nix root, /tmp/nix by
// default) belong to this user (or root) and no one else can write them. A
// present path is then trusted only if this user's own install recorded it
// after verifying it, or if its bytes hash to the farm's signed NarHash.

import { chmod, lstat, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { InvalidInputError } from "../../errors.js";
import { dumpPath, HashCounter, type NarInfo } from "../mod.js";

/** The store dir (or its parent) is not this user's alone. */
export class UnsafeStoreDirError extends InvalidInputError {}

/** A path in the store differs from the farm's signed copy. */
export class PlantedPathError extends InvalidInputError {}

const currentUid = () => process.getuid?.() ?? 0;

/**
 * Makes sure `storeDir` and its parent are this user's own: creates what is
 * missing (0755), refuses with one line what another user owns or can write.
 */
export async function claimStoreDir(storeDir: string, uid = currentUid()): Promise<void> {
  const root = dirname(storeDir);
  for (const dir of [root, storeDir]) {
    const st = await lstat(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return null;
      throw err;
    });
    if (!st) {
      await mkdir(dir, { recursive: true, mode: 0o755 });
      await chmod(dir, 0o755); // whatever the umask
      continue;
    }
    if (!st.isDirectory()) throw new UnsafeStoreDirError(`refusing ${dir}: it is not a directory; use another --store-dir`);
    if (st.uid !== uid && st.uid !== 0) {
      throw new UnsafeStoreDirError(
        `refusing ${dir}: it belongs to uid ${st.uid}, not to you (uid ${uid}), who could plant programs in it; ` +
          `have it removed, or install into a store dir of your own (--store-dir)`,
      );
    }
    if (st.mode & 0o022) {
      const mode = (st.mode & 0o7777).toString(8).padStart(4, "0");
      const fix = st.uid === uid ? `run 'chmod go-w ${dir}'` : "have its owner run 'chmod go-w' on it";
      throw new UnsafeStoreDirError(`refusing ${dir}: other users can write it (mode ${mode}) and so plant programs in it; ${fix}, or use another --store-dir`);
    }
  }
}

/** Where this user's installs record the signed narinfo of each path they verified. */
export function installRecordDir(storeDir: string): string {
  return join(dirname(storeDir), "var", "tmpnix", "installed");
}

const recordFile = (storeDir: string, storePath: string) => join(installRecordDir(storeDir), `${basename(storePath)}.narinfo`);

/** Records that `info.storePath` was installed after verification against `info`. */
export async function recordInstalled(storeDir: string, info: NarInfo, narInfoText: string): Promise<void> {
  const file = recordFile(storeDir, info.storePath);
  await mkdir(dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, narInfoText);
  await rename(tmp, file);
}

/** True when this user's own install recorded `storePath` as verified. */
export async function wasRecorded(storeDir: string, storePath: string): Promise<boolean> {
  const text = await readFile(recordFile(storeDir, storePath), "utf8").catch(() => "");
  return text.split("\n").includes(`StorePath: ${storePath}`);
}

/** Hashes a present path as a NAR and checks it against the signed NarHash and NarSize. */
export async function verifyPresentPath(info: NarInfo): Promise<void> {
  const counter = new HashCounter();
  for await (const chunk of dumpPath(info.storePath)) counter.update(chunk);
  const { hash, size } = counter.result();
  if (hash !== info.narHash || size !== info.narSize) {
    throw new PlantedPathError(
      `${info.storePath} is in the store but is not the farm's signed build (NarHash ${hash}, signed ${info.narHash}); ` +
        `farm install did not put it there: remove it ('chmod -R u+w' then 'rm -rf') and install again`,
    );
  }
}
