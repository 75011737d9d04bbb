// Unpacks a NAR stream into a path that must not exist yet. Every node is
// created exclusively (O_EXCL, O_NOFOLLOW, mkdir without -p), so nothing that
// already exists, including a planted symlink, is ever followed or overwritten.

import { constants } from "node:fs";
import { mkdir, open, rm, symlink, type FileHandle } from "node:fs/promises";
import { parseNar, type NarLimits, type NarPath } from "./nar-parse.js";
import type { ByteSource } from "./serialise.js";

const SLASH = Buffer.from("/");
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

function joinNarPath(root: Buffer, path: NarPath): Buffer {
  const parts: Buffer[] = [root];
  for (const name of path) parts.push(SLASH, name);
  return Buffer.concat(parts);
}

/**
 * Unpacks the NAR in `source` at `dest` (which must not exist). On failure, removes
 * whatever it created and rethrows, so a failed restore leaves nothing behind.
 */
export async function restoreNar(source: ByteSource, dest: string, limits: NarLimits = {}): Promise<void> {
  const root = Buffer.from(dest);
  let createdRoot = false;
  let file: FileHandle | null = null;
  const closeFile = async () => {
    const f = file;
    file = null;
    await f?.close();
  };
  try {
    for await (const ev of parseNar(source, limits)) {
      if (ev.type === "data") {
        let off = 0;
        while (off < ev.chunk.length) off += (await file!.write(ev.chunk, off)).bytesWritten;
        continue;
      }
      await closeFile();
      const target = joinNarPath(root, ev.path);
      if (ev.type === "directory") {
        await mkdir(target, { mode: 0o755 });
      } else if (ev.type === "file") {
        file = await open(target, CREATE_FLAGS, ev.executable ? 0o755 : 0o644);
      } else {
        await symlink(ev.target, target);
      }
      if (ev.path.length === 0) createdRoot = true;
    }
    await closeFile();
  } catch (err) {
    await closeFile().catch(() => {});
    if (createdRoot) await rm(dest, { recursive: true, force: true });
    throw err;
  }
}
