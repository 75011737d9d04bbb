// The farm cache lives in the coordinator's process: while a coordinator host
// restarts, fetching inputs and uploading outputs fail. A build should ride
// that out instead of failing (a failure costs a retry and a rebuild), so a
// step that failed as inputs-unavailable or upload-failed waits until the
// cache answers again and runs once more, a few times at most.
import type { Logger } from "pino";
import { BuildStepError } from "./executor.js";

/** How a cache step is retried. */
export interface CacheRetryOptions {
  /** Resolves true when the cache answers. */
  probe: () => Promise<boolean>;
  signal: AbortSignal;
  logger: Logger;
  /** What the step does, for the log. */
  what: string;
  /** Runs of the step in all. Default 4. */
  attempts?: number;
  /** How long to wait for the cache to answer before giving up. Default 60 s. */
  maxWaitMs?: number;
  /** Between probes. Default 500 ms. */
  probeEveryMs?: number;
}

const RETRIED = new Set(["inputs-unavailable", "upload-failed"]);

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

/** Waits until `probe` says the cache answers; false when `maxWaitMs` passed or `signal` aborted first. */
export async function waitForCache(probe: () => Promise<boolean>, signal: AbortSignal, maxWaitMs: number, everyMs = 500): Promise<boolean> {
  const until = Date.now() + maxWaitMs;
  for (;;) {
    if (signal.aborted) return false;
    if (await probe().catch(() => false)) return true;
    if (Date.now() >= until) return false;
    await sleep(everyMs, signal);
  }
}

/** Runs `step`; a transient cache failure is retried once the cache answers. Other errors pass through. */
export async function withCacheRetry<T>(step: () => Promise<T>, opts: CacheRetryOptions): Promise<T> {
  const attempts = opts.attempts ?? 4;
  for (let attempt = 1; ; attempt++) {
    try {
      return await step();
    } catch (err) {
      if (opts.signal.aborted || attempt >= attempts || !(err instanceof BuildStepError) || !RETRIED.has(err.outcome)) throw err;
      opts.logger.warn({ attempt, error: err.message }, `${opts.what} failed (${err.outcome}); retrying once the cache answers`);
      if (!(await waitForCache(opts.probe, opts.signal, opts.maxWaitMs ?? 60_000, opts.probeEveryMs))) throw err;
      await sleep(Math.min(4000, 250 * 2 ** (attempt - 1)), opts.signal);
    }
  }
}
