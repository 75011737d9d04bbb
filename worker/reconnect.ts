// Keeps a worker connected: runs sessions back to back, with jittered
// exponential backoff (p-retry) while the coordinator can't be reached, forever.
// A refused token ends the loop at once: retrying it would fail forever, silently.
import { setTimeout as sleep } from "node:timers/promises";
import pRetry, { AbortError } from "p-retry";
import type { Logger } from "pino";
import { AuthError, FarmError, TransientError } from "../proto/errors.js";
import type { SessionEnd } from "./session.js";

/** Backoff between failed connection attempts. */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  factor: number;
}

/** Defaults: 0.5 s, doubling, at most 30 s (plus up to 50% jitter). */
export const DEFAULT_BACKOFF: BackoffOptions = { minMs: 500, maxMs: 30_000, factor: 2 };

/** How the loop ended. */
export type LoopEnd = { kind: "drained" } | { kind: "auth"; message: string } | { kind: "stopped" };

/** A session ended without having been healthy: back off before the next one. */
class ConnectionLost extends TransientError {}
/** `stop` fired while waiting to reconnect. */
class Stopped extends FarmError {}

/**
 * Runs `connect` (one session) until a session drains, the token is refused, or
 * `stop` is aborted. After a session that was welcomed the backoff starts over.
 */
export async function connectLoop(connect: () => Promise<SessionEnd>, opts: { logger: Logger; stop: AbortSignal; backoff?: BackoffOptions; random?: () => number; healthySessionMs?: number }): Promise<LoopEnd> {
  const b = opts.backoff ?? DEFAULT_BACKOFF;
  const random = opts.random ?? Math.random;
  while (!opts.stop.aborted) {
    try {
      const end = await pRetry(
        async () => {
          const started = Date.now();
          const r = await connect();
          if (r.kind === "auth") throw new AbortError(new AuthError(r.message));
          if (r.kind === "drained") return r;
          // A session that was welcomed and lasted was healthy: reconnect promptly with a fresh
          // backoff. One cut right after Welcome counts as a failure, or we'd spin.
          if (r.welcomed && Date.now() - started >= (opts.healthySessionMs ?? 10_000)) return r;
          throw new ConnectionLost(r.message);
        },
        {
          // forever with retries 0: `retries: Infinity` would make the retry library build an endless timeout list.
          forever: true,
          retries: 0,
          factor: b.factor,
          minTimeout: 0,
          maxTimeout: 0,
          randomize: false,
          // No `signal`: `stop` must not cut a session short (a draining session has a notice to
          // deliver); it only ends the wait between attempts.
          // p-retry's own wait is 0; we wait here so the log can say exactly how long.
          onFailedAttempt: async (err) => {
            if (opts.stop.aborted) throw new Stopped("stopped");
            const base = Math.min(b.maxMs, b.minMs * b.factor ** (err.attemptNumber - 1));
            const delay = Math.round(base * (1 + random() / 2));
            opts.logger.warn({ attempt: err.attemptNumber, error: err.message }, `connection failed (${err.message}); reconnecting in ${(delay / 1000).toFixed(1)}s`);
            await sleep(delay, undefined, { signal: opts.stop }).catch(() => {});
            if (opts.stop.aborted) throw new Stopped("stopped");
          },
        },
      );
      if (end.kind === "drained") return { kind: "drained" };
      opts.logger.warn({ reason: end.message }, "connection to the coordinator ended; reconnecting");
      await sleep(Math.round(b.minMs * random()), undefined, { signal: opts.stop }).catch(() => {});
    } catch (err) {
      if (err instanceof AuthError) return { kind: "auth", message: err.message };
      if (err instanceof Stopped || opts.stop.aborted) break;
      throw err;
    }
  }
  return { kind: "stopped" };
}
