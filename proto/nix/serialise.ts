// Nix's serialisation primitives (u64 little-endian; strings as length + bytes +
// zero padding to 8) and a pull reader over an async byte source.

import { InvalidInputError } from "../errors.js";

/** Anything that yields byte chunks: a Readable, a fetch body, an async generator, an array of Buffers. */
export type ByteSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

const ZERO_PAD = Buffer.alloc(8);

/** The iterator of a byte source, async or not. */
export function iteratorOf(source: ByteSource): AsyncIterator<Uint8Array> | Iterator<Uint8Array> {
  return Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
}

/** `bytes` as a Buffer over the same memory (no copy). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Reads all of `source` into one buffer; with `limit`, throws what `limit.tooLarge` makes once more than `limit.max` bytes came. */
export async function readAllBytes(source: ByteSource, limit?: { max: number; tooLarge: () => Error }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of source) {
    size += c.length;
    if (limit && size > limit.max) throw limit.tooLarge();
    chunks.push(asBuffer(c));
  }
  return Buffer.concat(chunks);
}

/** Encodes a non-negative safe integer as a u64 LE. */
export function encodeU64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** Number of zero bytes that pad `len` bytes to a multiple of 8. */
export function padLength(len: number): number {
  return (8 - (len % 8)) % 8;
}

/** Encodes a Nix string: u64 length, bytes, zero padding to 8. */
export function encodeString(s: string | Uint8Array): Buffer {
  const bytes = typeof s === "string" ? Buffer.from(s, "utf8") : Buffer.from(s);
  return Buffer.concat([encodeU64(bytes.length), bytes, ZERO_PAD.subarray(0, padLength(bytes.length))]);
}

/** Pulls exact byte counts from a chunked source, keeping leftovers; reports every consumed byte to `tap`. */
export class ByteReader {
  private readonly it: AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
  private buf: Buffer = Buffer.alloc(0);
  private ended = false;
  /** Total bytes consumed so far. */
  consumed = 0;
  /** Receives every consumed slice, in order (used to pass a NAR through while parsing it). */
  tap: ((chunk: Buffer) => void) | null = null;

  constructor(source: ByteSource, private readonly what = "input") {
    this.it = iteratorOf(source);
  }

  /** Ensures at least one buffered byte; false at end of input. */
  private async fill(): Promise<boolean> {
    while (this.buf.length === 0) {
      if (this.ended) return false;
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      this.buf = asBuffer(r.value);
    }
    return true;
  }

  private take(n: number): Buffer {
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    this.consumed += out.length;
    this.tap?.(out);
    return out;
  }

  /** Reads exactly `n` bytes (meant for small n); throws InvalidInputError on early end. */
  async readExact(n: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      if (!(await this.fill())) throw new InvalidInputError(`truncated ${this.what}`);
      const part = this.take(Math.min(need, this.buf.length));
      parts.push(part);
      need -= part.length;
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  /** Streams exactly `n` bytes as they arrive, without buffering them all. */
  async *readChunks(n: number): AsyncGenerator<Buffer> {
    let need = n;
    while (need > 0) {
      if (!(await this.fill())) throw new InvalidInputError(`truncated ${this.what}`);
      const part = this.take(Math.min(need, this.buf.length));
      need -= part.length;
      yield part;
    }
  }

  /** True if the source has no more bytes. */
  async atEnd(): Promise<boolean> {
    return !(await this.fill());
  }

  /** Stops the underlying source (e.g. destroys a Readable) when we give up early. */
  async close(): Promise<void> {
    this.ended = true;
    await this.it.return?.();
  }

  /** Reads a u64 LE; rejects values above Number.MAX_SAFE_INTEGER. */
  async readU64(): Promise<number> {
    return decodeU64(await this.readExact(8), this.what);
  }

  /** Reads and checks the zero padding after `len` bytes of string or file data. */
  async readPadding(len: number): Promise<void> {
    const pad = padLength(len);
    if (pad > 0) checkPadding(await this.readExact(pad), this.what);
  }

  /** Reads a Nix string of at most `maxLen` bytes. */
  async readString(maxLen: number): Promise<Buffer> {
    const len = checkStringLength(await this.readU64(), maxLen, this.what);
    const bytes = Buffer.from(await this.readExact(len));
    await this.readPadding(len);
    return bytes;
  }
}

/**
 * ByteReader's reads over bytes held whole, synchronously: for small inputs
 * already in memory, where a promise per read costs more than the read. The
 * same checks and errors; what it returns are views of `bytes`, not copies.
 */
export class BufferReader {
  /** Total bytes consumed so far. */
  consumed = 0;

  constructor(private readonly bytes: Buffer, private readonly what = "input") {}

  /** Reads exactly `n` bytes; throws InvalidInputError on early end. */
  readExact(n: number): Buffer {
    if (n > this.bytes.length - this.consumed) throw new InvalidInputError(`truncated ${this.what}`);
    const out = this.bytes.subarray(this.consumed, this.consumed + n);
    this.consumed += n;
    return out;
  }

  readU64(): number {
    return decodeU64(this.readExact(8), this.what);
  }

  readPadding(len: number): void {
    const pad = padLength(len);
    if (pad > 0) checkPadding(this.readExact(pad), this.what);
  }

  readString(maxLen: number): Buffer {
    const len = checkStringLength(this.readU64(), maxLen, this.what);
    const bytes = this.readExact(len);
    this.readPadding(len);
    return bytes;
  }

  /** True once every byte is consumed. */
  atEnd(): boolean {
    return this.consumed === this.bytes.length;
  }
}

/** A u64 LE as a number; rejects values above Number.MAX_SAFE_INTEGER. */
function decodeU64(b: Buffer, what: string): number {
  const high = b.readUInt32LE(4);
  if (high > 0x1fffff) throw new InvalidInputError(`${what}: integer ${b.readBigUInt64LE()} is too large`);
  return high * 2 ** 32 + b.readUInt32LE(0);
}

function checkPadding(bytes: Buffer, what: string): void {
  if (bytes.some((b) => b !== 0)) throw new InvalidInputError(`${what}: non-zero padding`);
}

function checkStringLength(len: number, maxLen: number, what: string): number {
  if (len > maxLen) throw new InvalidInputError(`${what}: string of ${len} bytes exceeds limit ${maxLen}`);
  return len;
}
