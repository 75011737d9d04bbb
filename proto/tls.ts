// TLS plumbing shared by the coordinator, the worker and the CLI: server
// credentials from PEM files, client credentials that trust a private CA, and
// making the cache client's https trust that same CA.
// Why under proto/: how the two ends of the gRPC channel and the cache's HTTP
// secure themselves is part of the contract, and both sides load it the same way.
import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { credentials, ServerCredentials, type ChannelCredentials } from "@grpc/grpc-js";
import { FarmError } from "./errors.js";
import { trustCaForHttps } from "./nix/http.js";

/** A certificate chain and its key, PEM. */
export interface ServerTls {
  cert: Buffer;
  key: Buffer;
}

/** Reads the coordinator's certificate and key; null (plaintext) when neither is configured. */
export function readServerTls(certFile: string, keyFile: string): ServerTls | null {
  if (!certFile && !keyFile) return null;
  try {
    return { cert: readFileSync(certFile), key: readFileSync(keyFile) };
  } catch (err) {
    throw new FarmError(`cannot read the TLS certificate or key: ${(err as Error).message}`, { cause: err });
  }
}

/** gRPC server credentials: TLS with `tls`, plaintext without. Clients are not asked for certificates (tokens authenticate them). */
export function grpcServerCredentials(tls: ServerTls | null): ServerCredentials {
  return tls ? ServerCredentials.createSsl(null, [{ cert_chain: tls.cert, private_key: tls.key }], false) : ServerCredentials.createInsecure();
}

/** host:port for grpc-js, from host:port or http(s)://host:port. */
export function grpcTarget(url: string): string {
  return url.replace(/^https?:\/\//, "").replace(/\/+$/, "");
}

/** Whether to speak TLS to a coordinator address: https://, or plain host:port when a CA file is given. */
export function wantsTls(url: string, caFile: string): boolean {
  return url.startsWith("https://") || (Boolean(caFile) && !url.startsWith("http://"));
}

/** Channel credentials for a coordinator address; `caFile` ('' = system roots) is trusted for TLS. */
export function grpcChannelCredentials(url: string, caFile: string): ChannelCredentials {
  if (!wantsTls(url, caFile)) return credentials.createInsecure();
  silenceIpServernameWarning();
  return credentials.createSsl(caFile ? readCa(caFile) : undefined);
}

/**
 * grpc-js always sends the host as TLS server name, so Node prints a
 * deprecation warning (DEP0123) into the CLI's output for `https://10.0.0.5:7420`.
 * The certificate is still checked against the IP; only that warning is dropped.
 */
function silenceIpServernameWarning(): void {
  const original = process.emitWarning as (...args: unknown[]) => void;
  if ((original as { farmFiltered?: boolean }).farmFiltered) return;
  const filtered = (warning: unknown, ...rest: unknown[]) => {
    const code = typeof rest[0] === "object" && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code !== "DEP0123") original.call(process, warning, ...rest);
  };
  filtered.farmFiltered = true;
  process.emitWarning = filtered as typeof process.emitWarning;
}

function readCa(caFile: string): Buffer {
  try {
    return readFileSync(caFile);
  } catch (err) {
    throw new FarmError(`cannot read the TLS CA file: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Makes the cache client (every https request it sends) trust the CA in
 * `caFile` besides the system roots (and NODE_EXTRA_CA_CERTS), so it can reach
 * an https:// cache with a private certificate.
 */
export function trustCaForCache(caFile: string): void {
  const ca = [...rootCertificates, readCa(caFile).toString("utf8")];
  const extra = process.env.NODE_EXTRA_CA_CERTS;
  if (extra) ca.push(readCa(extra).toString("utf8"));
  trustCaForHttps(ca);
}
