// Build output handling: split process output into lines, cap their length and
// rate so a log flood can't swamp the worker or the coordinator, batch them for
// the wire, and pull Nix's one-line error out of its stderr.

/** Limits applied to a build's log. */
export interface LogLimits {
  /** Longer lines are cut, with a note saying how much. */
  maxLineChars: number;
  /** Sustained lines per second; a burst of this many again is allowed. */
  linesPerSecond: number;
  /** Lines per batch handed to the sink. */
  batchLines: number;
  /** Max wait before a partial batch is handed over. */
  batchMs: number;
}

/** Defaults: generous for real builds, small enough that a `yes` loop is harmless. */
export const DEFAULT_LOG_LIMITS: LogLimits = { maxLineChars: 4096, linesPerSecond: 500, batchLines: 200, batchMs: 200 };

/** Splits byte chunks into text lines, holding back an unfinished last line. */
export class LineSplitter {
  private partial = "";
  private readonly decoder = new TextDecoder();

  /** Feeds a chunk; returns the complete lines it finished. */
  push(chunk: Uint8Array | string): string[] {
    const text = this.partial + (typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true }));
    const lines = text.split("\n");
    this.partial = lines.pop() ?? "";
    // Cap what we hold for a line that never ends (binary garbage, progress bars).
    if (this.partial.length > 64 * 1024) {
      lines.push(this.partial);
      this.partial = "";
    }
    return lines.map((l) => l.replace(/\r$/, ""));
  }

  /** The unfinished last line, if any (call at end of stream). */
  end(): string[] {
    const rest = this.partial;
    this.partial = "";
    return rest ? [rest] : [];
  }
}

/**
 * Rate-limits and batches log lines. Time is passed in (`now`) so the policy is
 * testable; the caller drives `flush` from a timer and at the end.
 */
export class LogThrottle {
  private tokens: number;
  private lastRefill: number;
  private dropped = 0;
  private batch: string[] = [];
  private batchStarted = 0;

  constructor(private readonly sink: (lines: string[]) => void, private readonly limits: LogLimits = DEFAULT_LOG_LIMITS, now = 0) {
    this.tokens = limits.linesPerSecond * 2;
    this.lastRefill = now;
  }

  /** Offers one line at time `now`; it is kept, cut, or counted as dropped. */
  push(line: string, now: number): void {
    this.refill(now);
    if (this.tokens < 1) {
      this.dropped++;
      return;
    }
    this.tokens--;
    if (this.dropped > 0) this.emitDropMarker(now);
    this.add(capLine(line, this.limits.maxLineChars), now);
  }

  /** Hands over a pending batch if it is full or old enough (or `force`). */
  flush(now: number, force = false): void {
    this.refill(now);
    if (this.dropped > 0 && (force || this.tokens >= 1)) this.emitDropMarker(now);
    if (this.batch.length === 0) return;
    if (force || this.batch.length >= this.limits.batchLines || now - this.batchStarted >= this.limits.batchMs) {
      const out = this.batch;
      this.batch = [];
      this.sink(out);
    }
  }

  /** Lines dropped so far and not yet reported by a marker. */
  get pendingDropped(): number {
    return this.dropped;
  }

  private emitDropMarker(now: number): void {
    const n = this.dropped;
    this.dropped = 0;
    this.add(`[farm-worker: dropped ${n} log line${n === 1 ? "" : "s"} (over ${this.limits.linesPerSecond} lines/s)]`, now);
  }

  private add(line: string, now: number): void {
    if (this.batch.length === 0) this.batchStarted = now;
    this.batch.push(line);
    if (this.batch.length >= this.limits.batchLines) this.flush(now);
  }

  private refill(now: number): void {
    const burst = this.limits.linesPerSecond * 2;
    this.tokens = Math.min(burst, this.tokens + ((now - this.lastRefill) * this.limits.linesPerSecond) / 1000);
    this.lastRefill = now;
  }
}

/** Cuts a line to `max` characters, saying how much was cut. */
export function capLine(line: string, max: number): string {
  return line.length <= max ? line : `${line.slice(0, max)} [farm-worker: cut ${line.length - max} chars]`;
}

/** Keeps the last `max` lines seen (for error messages and the stored log tail). */
export class LineTail {
  private readonly lines: string[] = [];
  constructor(private readonly max: number) {}

  /** Remembers a line, forgetting the oldest beyond `max`. */
  push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.max) this.lines.shift();
  }

  /** The remembered lines, oldest first. */
  get all(): string[] {
    return [...this.lines];
  }
}

/** Nix chatter that says nothing about the build (the worker keeps no GC roots on purpose). */
export function isNixNoise(line: string): boolean {
  return line.startsWith("warning: you did not specify '--add-root'");
}

/** Removes ANSI colour codes (Nix colours errors even in pipes on some setups). */
export function stripAnsi(text: string): string {
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
}

/**
 * Nix's error as one line, e.g. "builder for '/tmp/nix/store/…-x.drv' failed with
 * exit code 2", from the output of a nix-store call; undefined if it printed none.
 */
export function parseNixError(lines: string[]): string | undefined {
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /^error:\s*(.*)$/.exec(stripAnsi(lines[i]).trim());
    if (!m) continue;
    let msg = m[1].replace(/;$/, "").trim();
    // Multi-line errors ("error:\n  … what went wrong"): take the next non-empty line.
    if (!msg) msg = lines.slice(i + 1).map((l) => stripAnsi(l).trim()).find(Boolean) ?? "error";
    return msg;
  }
  return undefined;
}

/** Derivations a `nix-store -r --dry-run` would build and paths it would fetch. */
export interface DryRunPlan {
  build: string[];
  fetch: string[];
}

/** Parses the "these N derivations will be built:" / "will be fetched" lists of a dry run. */
export function parseDryRun(lines: string[]): DryRunPlan {
  const plan: DryRunPlan = { build: [], fetch: [] };
  let into: string[] | undefined;
  for (const raw of lines) {
    const line = stripAnsi(raw);
    if (/will be built:$/.test(line)) into = plan.build;
    else if (/will be fetched.*:$/.test(line)) into = plan.fetch;
    else if (into && /^\s+\//.test(line)) into.push(line.trim());
    else into = undefined;
  }
  return plan;
}
