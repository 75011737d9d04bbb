// Against the real NATS server at 127.0.0.1:4222: requests behave as before
// the patch (replies, error replies, timeouts, no responders), and a request
// that got its reply no longer builds an Error on its way out.
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { errors, TimeoutError } from "@nats-io/nats-core";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { skipSettledRequestErrors } from "./nats-request-patch.js";

const SERVER = "127.0.0.1:4222";
const subject = (what: string) => `tmpnix.test.request-patch.${process.pid}.${what}`;

// The errors module request.js builds its RequestErrors from (the same module instance: same resolved file).
const require = createRequire(import.meta.url);
const natsErrors = require(join(dirname(require.resolve("@nats-io/nats-core/internal")), "errors.js")) as { RequestError: new (...args: unknown[]) => Error };

/** Runs `fn` counting the RequestErrors nats.js constructs meanwhile. */
async function countingRequestErrors(fn: () => Promise<void>): Promise<number> {
  const Original = natsErrors.RequestError;
  let built = 0;
  natsErrors.RequestError = class extends Original {
    constructor(...args: unknown[]) {
      super(...args);
      built++;
    }
  };
  try {
    await fn();
  } finally {
    natsErrors.RequestError = Original;
  }
  return built;
}

let nc: NatsConnection;
beforeAll(async () => {
  expect(skipSettledRequestErrors()).toBe(true);
  nc = await connect({ servers: SERVER, noAsyncTraces: true });
  nc.subscribe(subject("echo"), { callback: (_err, m) => void m.respond(m.data) });
  nc.subscribe(subject("silent"), { callback: () => undefined });
  await nc.flush();
});
afterAll(async () => {
  await nc?.close();
});

describe("skipSettledRequestErrors", () => {
  it("is idempotent", () => {
    expect(skipSettledRequestErrors()).toBe(true);
  });

  it("answers requests as before, and builds no Error for one that got its reply", async () => {
    const built = await countingRequestErrors(async () => {
      const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => nc.request(subject("echo"), `m${i}`, { timeout: 5000 })));
      expect(replies.map((r) => r.string())).toEqual(Array.from({ length: 20 }, (_, i) => `m${i}`));
    });
    expect(built).toBe(0);
  });

  it("still rejects a request nobody answers with the library's errors", async () => {
    // An error reply: the library wraps it in a RequestError with the cause, as it always did.
    const noResponders = await nc.request(subject("nobody"), "x", { timeout: 5000 }).catch((err: unknown) => err);
    expect(noResponders).toBeInstanceOf(errors.RequestError);
    expect((noResponders as Error).cause).toBeInstanceOf(errors.NoRespondersError);
    await expect(nc.request(subject("silent"), "x", { timeout: 200 })).rejects.toBeInstanceOf(TimeoutError);
    // The timed-out request was cancelled while pending: the library's own path, which builds its Error.
    expect(await countingRequestErrors(() => expect(nc.request(subject("silent"), "x", { timeout: 100 })).rejects.toBeInstanceOf(TimeoutError))).toBe(1);
  });

  it("leaves no request in the mux once settled", async () => {
    await nc.request(subject("echo"), "x", { timeout: 5000 });
    await expect(nc.request(subject("silent"), "x", { timeout: 100 })).rejects.toBeInstanceOf(TimeoutError);
    const mux = (nc as unknown as { protocol: { muxSubscriptions: { reqs: Map<string, unknown> } } }).protocol.muxSubscriptions;
    expect(mux.reqs.size).toBe(0);
  });
});
