// Authentication before a single byte of a message is read. grpc-js reads a
// call's messages only once its metadata has been passed on, so refusing an
// unknown token here means an unauthenticated caller costs the coordinator a
// header block, not the up-to-max-message-size body it sends (a forged-token
// 200 MB submit used to be read whole before the handler looked at the token).
// The services still authenticate every call and message themselves: this is
// a gate in front of them, not a replacement.
import { ServerInterceptingCall, ServerListenerBuilder, status, type ServerInterceptor } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Role, TokenRegistry } from "./auth.js";

/** Which roles may call the methods of each service ("/package.Service/Method" → "package.Service"). */
export type ServiceRoles = Record<string, Role[]>;

/** A server interceptor that ends calls with UNAUTHENTICATED unless their bearer token may use the service. */
export function authInterceptor(tokens: TokenRegistry, roles: ServiceRoles, logger?: Logger): ServerInterceptor {
  return (method, call) =>
    new ServerInterceptingCall(call, {
      start(next) {
        const listener = new ServerListenerBuilder()
          .withOnReceiveMetadata((metadata, pass) => {
            const service = method.path.split("/")[1] ?? "";
            try {
              tokens.authenticate(metadata.get("authorization")[0]?.toString(), roles[service] ?? []);
            } catch (err) {
              logger?.debug({ method: method.path, peer: call.getPeer(), err: (err as Error).message }, "call refused before reading it");
              call.sendStatus({ code: status.UNAUTHENTICATED, details: (err as Error).message });
              return;
            }
            pass(metadata);
          })
          .build();
        next(listener);
      },
    });
}
