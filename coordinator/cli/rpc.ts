// The CLI's gRPC client: bearer token on every call, a deadline, and errors
// turned into one line a user can act on.
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { FarmServiceClient, SubmitRequest, type SubmitResponse } from "../../proto/gen/farm.js";
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

/** Nodes per SubmitStream message: a few hundred KB, decoded by the coordinator in milliseconds. */
export const SUBMIT_PIECE_NODES = 1000;

/**
 * Submits through SubmitStream: the request's fields and first nodes, then the
 * other nodes in pieces, so no single message holds the coordinator while it
 * decodes. Rejects with an RpcError.
 */
export function submitInPieces(client: FarmServiceClient, target: RpcTarget, req: SubmitRequest, pieceNodes = SUBMIT_PIECE_NODES): Promise<SubmitResponse> {
  return new Promise((resolve, reject) => {
    const stream = client.submitStream(authMetadata(target.token), { deadline: new Date(Date.now() + target.timeout) }, (err, res) => {
      if (err) reject(rpcError(err, target));
      else resolve(res);
    });
    stream.on("error", () => {}); // the callback gets the status
    const pieces = Math.max(1, Math.ceil(req.nodes.length / pieceNodes));
    let i = 0;
    const writeMore = () => {
      for (; i < pieces; i++) {
        const nodes = req.nodes.slice(i * pieceNodes, (i + 1) * pieceNodes);
        const piece = i === 0 ? { ...req, nodes } : SubmitRequest.fromPartial({ nodes });
        if (!stream.write(piece)) {
          i++;
          stream.once("drain", writeMore);
          return;
        }
      }
      stream.end();
    };
    writeMore();
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
