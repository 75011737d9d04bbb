// Build logs as they stream in from workers: bounded per build (a log flood
// cannot exhaust the coordinator), then stored in the cache under log/ where
// `nix log` and `farm logs` find them.
import type { Lease } from "../core/types.js";

// Per worker too: two copies of a build with a backup copy share a lease.
const key = (l: Lease, workerId: string) => `${l.drvPath}#${l.epoch}#${workerId}`;

/** Keeps the log of each running build, up to a byte limit. */
export class BuildLogs {
  private readonly logs = new Map<string, { lines: string[]; bytes: number; dropped: number }>();

  constructor(private readonly maxBytesPerBuild = 4 * 1024 ** 2) {}

  /** Appends lines; past the limit they are counted, not kept. */
  append(lease: Lease, workerId: string, lines: string[]): void {
    const k = key(lease, workerId);
    let log = this.logs.get(k);
    if (!log) this.logs.set(k, (log = { lines: [], bytes: 0, dropped: 0 }));
    for (const line of lines) {
      if (log.bytes + line.length > this.maxBytesPerBuild) log.dropped++;
      else {
        log.lines.push(line);
        log.bytes += line.length + 1;
      }
    }
  }

  /** Removes and returns the whole log of a build. */
  take(lease: Lease, workerId: string): string[] {
    const log = this.logs.get(key(lease, workerId));
    this.logs.delete(key(lease, workerId));
    if (!log) return [];
    if (log.dropped) log.lines.push(`[farm: ${log.dropped} more log lines dropped: the log exceeded ${this.maxBytesPerBuild} bytes]`);
    return log.lines;
  }

  /** Forgets the logs of every build on `workerId` (it is lost: they will never report). */
  dropWorker(workerId: string): void {
    for (const k of this.logs.keys()) if (k.endsWith(`#${workerId}`)) this.logs.delete(k);
  }
}
