// How `farm install` shows a download: on a terminal one line redrawn in
// place (paths, bytes, speed, ETA); otherwise plain lines, one per path.
import type { InstallProgress } from "../../../proto/nix/install/mod.js";
import { formatBytes, formatDuration } from "../format.js";

/** The progress line for `p` after `elapsedMs` (pure). */
export function progressBar(p: InstallProgress, elapsedMs: number, width = 24): string {
  const frac = p.bytesTotal ? Math.min(1, p.bytesDone / p.bytesTotal) : 0;
  const filled = Math.round(frac * width);
  const speed = elapsedMs > 0 ? (p.bytesDone * 1000) / elapsedMs : 0;
  const eta = speed > 0 ? ((p.bytesTotal - p.bytesDone) * 1000) / speed : undefined;
  return (
    `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${p.done}/${p.total} paths, ` +
    `${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)}, ${formatBytes(speed)}/s` +
    (eta !== undefined && p.bytesDone < p.bytesTotal ? `, ETA ${formatDuration(eta)}` : "")
  );
}

/** A progress callback: a redrawn bar on a TTY (at most every 100 ms), else a line per installed path. */
export function progressReporter(err: (line: string) => void, tty = Boolean(process.stderr.isTTY), write = (s: string) => process.stderr.write(s)): (p: InstallProgress) => void {
  const started = Date.now();
  let drawn = 0;
  return (p) => {
    if (p.phase === "resolved") {
      if (p.total) err(`${p.total} paths to fetch (${formatBytes(p.bytesTotal)} unpacked)`);
      return;
    }
    if (!tty) {
      if (p.phase === "installed") err(`[${p.done}/${p.total}] ${p.storePath}`);
      if (p.phase === "installed" && p.done === p.total) err(`fetched ${formatBytes(p.bytesDone)} in ${formatDuration(Date.now() - started)}`);
      return;
    }
    const now = Date.now();
    const last = p.phase === "installed" && p.done === p.total;
    if (!last && now - drawn < 100) return;
    drawn = now;
    write(`\r\x1b[K${progressBar(p, now - started)}${last ? "\n" : ""}`);
  };
}
