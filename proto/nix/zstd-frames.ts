// Walks the frame and block headers of a zstd stream as it arrives, without
// decoding it, to bound what a decoder must allocate: fzstd allocates each
// frame's whole window up front (up to 2 GiB), so an upload declaring a huge
// window would cost the server that much memory before a byte is decoded.

import { InvalidInputError } from "../errors.js";

const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;

type Need =
  | { kind: "magic" }
  | { kind: "frame-flags" }
  | { kind: "frame-rest"; flags: number }
  | { kind: "skippable-size" }
  | { kind: "block-header"; checksum: boolean }
  | { kind: "checksum" };

/** Checks, chunk by chunk, that no zstd frame needs a window over `maxWindowBytes`. */
export class ZstdFrameGuard {
  private need: Need = { kind: "magic" };
  /** Header bytes gathered so far for `need`. */
  private header: number[] = [];
  /** Payload bytes still to skip before the next header. */
  private skip = 0;
  /** What comes after the skipped payload. */
  private afterSkip: Need = { kind: "magic" };

  constructor(private readonly maxWindowBytes: number) {}

  /** Feeds the next bytes; throws InvalidInputError on a malformed or too demanding stream. */
  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        i += n;
        if (this.skip === 0) this.need = this.afterSkip;
        continue;
      }
      this.header.push(chunk[i++]);
      if (this.header.length === this.headerLength()) this.onHeader(this.header.splice(0));
    }
  }

  /** Throws unless the stream ended on a frame boundary (a truncated upload fails here too). */
  finish(): void {
    if (this.need.kind !== "magic" || this.header.length > 0 || this.skip > 0) throw new InvalidInputError("truncated zstd data");
  }

  private headerLength(): number {
    switch (this.need.kind) {
      case "magic":
      case "skippable-size":
      case "checksum":
        return 4;
      case "frame-flags":
        return 1;
      case "block-header":
        return 3;
      case "frame-rest": {
        const f = this.need.flags;
        const singleSegment = (f >> 5) & 1;
        const dictBytes = [0, 1, 2, 4][f & 3];
        const fcsBytes = [singleSegment, 2, 4, 8][f >> 6];
        return (singleSegment ? 0 : 1) + dictBytes + fcsBytes;
      }
    }
  }

  private skipThen(n: number, next: Need): void {
    this.skip = n;
    this.afterSkip = next;
    this.need = n === 0 ? next : this.need;
  }

  private onHeader(h: number[]): void {
    const need = this.need;
    switch (need.kind) {
      case "magic": {
        const magic = (h[0] | (h[1] << 8) | (h[2] << 16) | (h[3] << 24)) >>> 0;
        if (magic === ZSTD_MAGIC) this.need = { kind: "frame-flags" };
        else if (((magic & SKIPPABLE_MASK) >>> 0) === SKIPPABLE_MAGIC) this.need = { kind: "skippable-size" };
        else throw new InvalidInputError("not zstd data");
        return;
      }
      case "skippable-size":
        return this.skipThen((h[0] | (h[1] << 8) | (h[2] << 16) | (h[3] << 24)) >>> 0, { kind: "magic" });
      case "frame-flags":
        if (h[0] & 8) throw new InvalidInputError("corrupt zstd frame header");
        this.need = { kind: "frame-rest", flags: h[0] }; // always at least one more byte
        return;
      case "frame-rest": {
        const window = windowOf(need.flags, h);
        if (window > this.maxWindowBytes) throw new InvalidInputError(`zstd frame needs a ${window}-byte window; at most ${this.maxWindowBytes} accepted`);
        this.need = { kind: "block-header", checksum: ((need.flags >> 2) & 1) === 1 };
        return;
      }
      case "block-header": {
        const bh = h[0] | (h[1] << 8) | (h[2] << 16);
        const last = bh & 1;
        const type = (bh >> 1) & 3;
        if (type === 3) throw new InvalidInputError("corrupt zstd block header");
        const payload = type === 1 ? 1 : bh >>> 3; // an RLE block stores one byte
        const next: Need = !last ? need : need.checksum ? { kind: "checksum" } : { kind: "magic" };
        return this.skipThen(payload, next);
      }
      case "checksum":
        this.need = { kind: "magic" };
        return;
    }
  }
}

/** The window a frame declares: its descriptor, or its content size for a single-segment frame. */
function windowOf(flags: number, h: number[]): number {
  const singleSegment = (flags >> 5) & 1;
  const dictBytes = [0, 1, 2, 4][flags & 3];
  if (!singleSegment) {
    const exponent = h[0] >> 3;
    const base = 2 ** (10 + exponent);
    return base + (base / 8) * (h[0] & 7);
  }
  const fcsAt = dictBytes;
  const fcsBytes = [1, 2, 4, 8][flags >> 6];
  let size = 0;
  for (let k = fcsBytes - 1; k >= 0; k--) size = size * 256 + h[fcsAt + k];
  return fcsBytes === 2 ? size + 256 : size;
}
