// Opening the durable state when the coordinator starts. A coordinator host
// that comes back while NATS is still restarting must wait for it, not exit:
// connecting and loading are retried (with a log line each time) until they work.
import type { Logger } from "pino";
import type { Snapshot } from "../core/snapshot.js";
import { NatsStore } from "../store/nats-store.js";

/** Connects to NATS and loads the farm state, retrying forever (or until `signal` aborts). */
export async function openNatsStore(url: string, prefix: string, logger: Logger, signal?: AbortSignal): Promise<{ store: NatsStore; snapshot: Snapshot }> {
  for (let attempt = 1; ; attempt++) {
    let store: NatsStore | undefined;
    try {
      store = await NatsStore.connect(url, { prefix });
      return { store, snapshot: await store.load() };
    } catch (err) {
      await store?.close().catch(() => undefined);
      if (signal?.aborted) throw err;
      const waitMs = Math.min(5000, 250 * 2 ** Math.min(attempt - 1, 5));
      logger.warn({ url, attempt, waitMs, err: (err as Error).message }, "cannot open the farm state in NATS yet; retrying");
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }
}
