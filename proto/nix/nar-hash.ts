// Hashing helpers that count and sha256 bytes as they flow past, in Nix's
// `sha256:<nix32>` notation (the form NarHash and FileHash use).

import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { nix32Encode } from "./nix32.js";
import type { ByteSource } from "./serialise.js";

/** SHA-256 and length of some bytes. */
export interface HashResult {
  /** `sha256:<52 nix32 chars>` */
  hash: string;
  size: number;
}

/** Formats a raw SHA-256 digest as `sha256:<nix32>`. */
export function formatSha256(digest: Uint8Array): string {
  return `sha256:${nix32Encode(digest)}`;
}

/** Running SHA-256 + byte count. */
export class HashCounter {
  private readonly h: Hash = createHash("sha256");
  /** Bytes seen so far. */
  size = 0;

  /** Adds bytes. */
  update(chunk: Uint8Array): void {
    this.h.update(chunk);
    this.size += chunk.length;
  }

  /** Finishes; call once. */
  result(): HashResult {
    return { hash: formatSha256(this.h.digest()), size: this.size };
  }
}

/** Pass-through stream that hashes what it forwards; `result` is set on end. */
export class NarHasher extends Transform {
  private readonly counter = new HashCounter();
  /** Available after the stream ends. */
  result: HashResult | null = null;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.counter.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.result = this.counter.result();
    cb();
  }
}

/** Yields `source` unchanged and calls `onEnd` with its hash after the last byte. */
export async function* hashThrough(source: ByteSource, onEnd: (r: HashResult) => void): AsyncGenerator<Buffer> {
  const counter = new HashCounter();
  for await (const chunk of source) {
    counter.update(chunk);
    yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
  }
  onEnd(counter.result());
}

/** Hashes a whole source. */
export async function hashSource(source: ByteSource): Promise<HashResult> {
  const counter = new HashCounter();
  for await (const chunk of source) counter.update(chunk);
  return counter.result();
}
