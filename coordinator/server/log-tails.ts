// The last lines of failed builds' logs, shown by `farm status` beside the
// failure: a bounded, most-recent-first memory (older tails are dropped).

/** Lines kept per failed build. */
export const LOG_TAIL_LINES = 25;
/** Failed builds whose tails are kept. */
export const MAX_REMEMBERED_TAILS = 2000;

/** The log tails of the most recently failed builds, by drv path. */
export class LogTails {
  private readonly tails = new Map<string, string[]>();

  constructor(private readonly maxTails = MAX_REMEMBERED_TAILS) {}

  /** Keeps the last LOG_TAIL_LINES of `lines` as `drvPath`'s tail (replacing an older one). */
  remember(drvPath: string, lines: readonly string[]): void {
    this.tails.delete(drvPath);
    this.tails.set(drvPath, lines.slice(-LOG_TAIL_LINES));
    if (this.tails.size > this.maxTails) this.tails.delete(this.tails.keys().next().value!);
  }

  /** The remembered tail of `drvPath` ([] when none). */
  of(drvPath: string): string[] {
    return this.tails.get(drvPath) ?? [];
  }
}
