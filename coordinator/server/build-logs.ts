// Build logs as they stream in from workers: bounded per build (a log flood
// cannot exhaust the coordinator), then stored in the cache under log/ where
// `nix log` and `farm logs` find them.
import type { DrvPath, Lease } from "../core/types.js";

const key = (l: Lease) => `${l.drvPath}#${l.epoch}`;

/** Keeps the log of each running build, up to a byte limit. */
export class BuildLogs {
  private readonly logs = new Map<string, { lines: string[]; bytes: number; dropped: number }>();

  constructor(private readonly maxBytesPerBuild = 4 * 1024 ** 2) {}

  /** Appends lines; past the limit they are counted, not kept. */
  append(lease: Lease, lines: string[]): void {
    let log = this.logs.get(key(lease));
    if (!log) this.logs.set(key(lease), (log = { lines: [], bytes: 0, dropped: 0 }));
    for (const line of lines) {
      if (log.bytes + line.length > this.maxBytesPerBuild) log.dropped++;
      else {
        log.lines.push(line);
        log.bytes += line.length + 1;
      }
    }
  }

  /** Removes and returns the whole log of a build. */
  take(lease: Lease): string[] {
    const log = this.logs.get(key(lease));
    this.logs.delete(key(lease));
    if (!log) return [];
    if (log.dropped) log.lines.push(`[farm: ${log.dropped} more log lines dropped: the log exceeded ${this.maxBytesPerBuild} bytes]`);
    return log.lines;
  }

  /** Forgets logs of builds of a derivation at older epochs. */
  dropOlder(drvPath: DrvPath, epoch: number): void {
    for (const k of this.logs.keys()) {
      const [p, e] = k.split("#");
      if (p === drvPath && Number(e) < epoch) this.logs.delete(k);
    }
  }
}
