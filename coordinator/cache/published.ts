// What the cache publishes: a path counts only with its full name, so a
// reference that borrows a published path's hash under another name is not.
import { parseNarInfo } from "../../proto/nix/mod.js";
import type { CacheStorage } from "./storage.js";

/** True when the cache publishes exactly the path `base` (its hash part and its name). */
export async function isPublished(storage: CacheStorage, base: string, storeDir: string): Promise<boolean> {
  const text = await storage.getText("narinfo", base.slice(0, 32));
  return text !== null && parseNarInfo(text, storeDir).storePath === `${storeDir}/${base}`;
}
