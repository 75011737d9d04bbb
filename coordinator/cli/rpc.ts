// The CLI's gRPC client: bearer token on every call, a deadline, and errors
// turned into one line a user can act on.
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { FarmServiceClient } from "../../proto/gen/farm.js";
import { FarmError } from "../core/errors.js";
import { grpcChannelCredentials, grpcTarget } from "../../proto/tls.js";

/** A coordinator call failed; the message is one line for the user. */
export class RpcError extends FarmError {
  constructor(message: string, readonly code: status, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Connection details for the coordinator. */
export interface RpcTarget {
  coordinator: string;
  token: string;
  timeout: number;
  /** CA to trust for TLS ('' = system roots; TLS when set or for https:// addresses). */
  tlsCa?: string;
}

/** Opens a client; `close()` it when done. */
export function connectFarm(target: RpcTarget): FarmServiceClient {
  return new FarmServiceClient(grpcTarget(target.coordinator), grpcChannelCredentials(target.coordinator, target.tlsCa ?? ""), {
    "grpc.max_send_message_length": 512 * 1024 ** 2,
    "grpc.max_receive_message_length": 512 * 1024 ** 2,
  });
}

/** Metadata carrying the token. */
export function authMetadata(token: string): Metadata {
  const md = new Metadata();
  if (token) md.set("authorization", `Bearer ${token}`);
  return md;
}

type Unary<Req, Res> = (req: Req, md: Metadata, opts: { deadline: Date }, cb: (err: ServiceError | null, res: Res) => void) => unknown;

/** Calls a unary method with token and deadline; rejects with an RpcError. */
export function call<Req, Res>(client: FarmServiceClient, target: RpcTarget, method: Unary<Req, Res>, req: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, req, authMetadata(target.token), { deadline: new Date(Date.now() + target.timeout) }, (err, res) => {
      if (err) reject(rpcError(err, target));
      else resolve(res);
    });
  });
}

/** One-line explanation of a gRPC failure. */
export function rpcError(err: ServiceError, target: RpcTarget): RpcError {
  switch (err.code) {
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
      return new RpcError(`cannot reach the coordinator at ${target.coordinator} (${err.details || status[err.code]})`, err.code, { cause: err });
    case status.UNAUTHENTICATED:
    case status.PERMISSION_DENIED:
      return new RpcError(`the coordinator refused the token: ${err.details}`, err.code, { cause: err });
    default:
      return new RpcError(err.details || err.message, err.code, { cause: err });
  }
}
