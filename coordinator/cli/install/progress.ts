// How `farm install` shows a download: plain lines (one per path) for now.
import type { InstallProgress } from "../../../proto/nix/install/mod.js";
import { formatBytes } from "../format.js";

/** A progress callback writing lines through `err`. */
export function progressReporter(err: (line: string) => void): (p: InstallProgress) => void {
  return (p) => {
    if (p.phase === "resolved" && p.total) err(`${p.total} paths to fetch (${formatBytes(p.bytesTotal)} unpacked)`);
    if (p.phase === "installed") err(`[${p.done}/${p.total}] ${p.storePath}`);
  };
}
