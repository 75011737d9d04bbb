// nats.js (@nats-io/nats-core 3.4) ends every request by calling
// RequestOne.cancel(), which rejects the request's promise with a new
// RequestError("cancelled"), stack and all, even when the reply has already
// resolved it: the rejection is a no-op, the stack capture is not. A JetStream
// write is a request, and the coordinator makes a few per derivation, so that
// one Error was its largest single JavaScript cost on the full nixpkgs graph
// (4.8 % of its CPU). Without it, a compare-and-set put through NatsStore costs
// 0.69–0.85× the user CPU (`npm run bench:nats-writes`).
//
// This skips that Error and nothing else: a request that has its reply still
// cancels its timer and leaves the mux as before; a request cancelled while
// pending (a timeout, a failed publish) is handled by the library's own code.
// It relies on two internal methods (`resolver`, `cancel`), checked before
// patching; if they change, nothing is patched and requests cost what they did.
import { RequestOne } from "@nats-io/nats-core/internal";

const SETTLED = Symbol("tmpnix.requestSettled");

/** The internals of RequestOne the patch touches. */
interface PatchableRequest {
  resolver(err: Error | null, msg: unknown): void;
  cancel(err?: Error): void;
  timer?: { cancel(): void };
  mux: { cancel(r: unknown): void };
  [SETTLED]?: true;
}

let patched = false;

/**
 * Makes a settled request's final cancel skip building its unused Error (process-wide, idempotent).
 * Returns false, patching nothing, if the library's request class is not the one this was written against.
 */
export function skipSettledRequestErrors(): boolean {
  if (patched) return true;
  const proto = RequestOne.prototype as unknown as PatchableRequest;
  if (typeof proto.resolver !== "function" || typeof proto.cancel !== "function" || proto.resolver.length !== 2) return false;
  const { resolver, cancel } = proto;
  // Every reply, error reply and connection close settles a request through resolver().
  proto.resolver = function (this: PatchableRequest, err, msg) {
    this[SETTLED] = true;
    resolver.call(this, err, msg);
  };
  proto.cancel = function (this: PatchableRequest, err) {
    if (err !== undefined || this[SETTLED] !== true) return cancel.call(this, err);
    this.timer?.cancel();
    this.mux.cancel(this);
  };
  patched = true;
  return true;
}
