// Drives a LogThrottle from a timer and keeps a bounded copy of the log for the
// cache (`nix log` via the farm) and for error messages.
import { DEFAULT_LOG_LIMITS, LogThrottle, type LogLimits } from "./nix-log.js";

/** Bytes of log kept for upload; older lines are forgotten first. */
export const KEPT_LOG_BYTES = 4 * 1024 * 1024;

/** One build's log: throttled batches to `sink`, plus a bounded copy. */
export class LogPump {
  private readonly throttle: LogThrottle;
  private readonly timer: NodeJS.Timeout;
  private readonly kept: string[] = [];
  private keptBytes = 0;
  private forgotten = 0;
  private closed = false;

  constructor(sink: (lines: string[]) => void, limits: LogLimits = DEFAULT_LOG_LIMITS) {
    this.throttle = new LogThrottle(sink, limits, Date.now());
    this.timer = setInterval(() => this.throttle.flush(Date.now()), limits.batchMs);
    this.timer.unref();
  }

  /** Adds one line of build output. */
  line(line: string): void {
    if (this.closed) return;
    this.throttle.push(line, Date.now());
    this.keep(line);
  }

  /** Adds a line from the worker itself (progress, errors), marked as such. */
  note(text: string): void {
    this.line(`[farm-worker] ${text}`);
  }

  /** Flushes what is pending and stops the timer. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.throttle.flush(Date.now(), true);
  }

  /** The kept log as text (with a note if its start was dropped). */
  text(): string {
    const head = this.forgotten ? `[farm-worker: first ${this.forgotten} lines not kept]\n` : "";
    return head + this.kept.join("\n") + (this.kept.length ? "\n" : "");
  }

  private keep(line: string): void {
    const cut = line.length > 8192 ? line.slice(0, 8192) : line;
    this.kept.push(cut);
    this.keptBytes += cut.length + 1;
    while (this.keptBytes > KEPT_LOG_BYTES && this.kept.length > 1) {
      this.keptBytes -= this.kept.shift()!.length + 1;
      this.forgotten++;
    }
  }
}
