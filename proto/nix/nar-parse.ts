// Strict, incremental NAR parser. A NAR is untrusted input that may be GBs, so
// it is parsed as a stream of events with bounded memory, and anything Nix
// would not have produced (bad names, unsorted entries, junk) is rejected.

import { InvalidInputError } from "../errors.js";
import { TooLargeError } from "./errors.js";
import { ByteReader, type ByteSource } from "./serialise.js";

/** The magic string every NAR starts with. */
export const NAR_MAGIC = "nix-archive-1";
/** Longest directory entry name (Linux NAME_MAX). */
export const MAX_NAME_BYTES = 255;
/** Longest symlink target (Linux PATH_MAX - 1). */
export const MAX_TARGET_BYTES = 4095;
const MAX_TOKEN_BYTES = 64;

/** Path of a node inside a NAR as raw name components; [] is the root. */
export type NarPath = readonly Buffer[];

/** One step of a NAR walk; `data` events carry a file's contents after its `file` event. */
export type NarEvent =
  | { type: "directory"; path: NarPath }
  | { type: "file"; path: NarPath; executable: boolean; size: number }
  | { type: "data"; chunk: Buffer }
  | { type: "symlink"; path: NarPath; target: Buffer };

/** Optional bounds on what a parse will accept. */
export interface NarLimits {
  /** Reject NARs larger than this many bytes (TooLargeError), as soon as it is known. */
  maxNarBytes?: number;
  /** Deepest directory nesting allowed. */
  maxDepth?: number;
}

/** Throws unless `name` is a safe, non-special directory entry name. */
export function validateEntryName(name: Buffer): void {
  if (name.length === 0) throw new InvalidInputError("invalid NAR: empty entry name");
  const s = name.toString("latin1");
  if (s === "." || s === "..") throw new InvalidInputError(`invalid NAR: entry name '${s}'`);
  if (name.includes(0x2f)) throw new InvalidInputError("invalid NAR: entry name contains '/'");
  if (name.includes(0)) throw new InvalidInputError("invalid NAR: entry name contains NUL");
}

async function readToken(r: ByteReader): Promise<string> {
  return (await r.readString(MAX_TOKEN_BYTES)).toString("latin1");
}

async function expectToken(r: ByteReader, want: string): Promise<void> {
  const got = await readToken(r);
  if (got !== want) throw new InvalidInputError(`invalid NAR: expected '${want}', got '${got.slice(0, 40)}'`);
}

function checkSize(r: ByteReader, extra: number, limits: NarLimits): void {
  if (limits.maxNarBytes !== undefined && r.consumed + extra > limits.maxNarBytes) {
    throw new TooLargeError(`NAR exceeds the limit of ${limits.maxNarBytes} bytes`);
  }
}

interface DirFrame {
  path: NarPath;
  last: Buffer | null;
}

/** Parses exactly one NAR from `r`, leaving any following bytes unread. */
export async function* readNarEvents(r: ByteReader, limits: NarLimits = {}): AsyncGenerator<NarEvent> {
  const maxDepth = limits.maxDepth ?? 1024;
  await expectToken(r, NAR_MAGIC);
  const stack: DirFrame[] = [];
  let path: NarPath = [];
  for (;;) {
    await expectToken(r, "(");
    await expectToken(r, "type");
    const type = await readToken(r);
    if (type === "regular") {
      let tag = await readToken(r);
      const executable = tag === "executable";
      if (executable) {
        await expectToken(r, "");
        tag = await readToken(r);
      }
      if (tag !== "contents") throw new InvalidInputError(`invalid NAR: expected 'contents', got '${tag.slice(0, 40)}'`);
      const size = await r.readU64();
      checkSize(r, size, limits);
      yield { type: "file", path, executable, size };
      for await (const chunk of r.readChunks(size)) yield { type: "data", chunk };
      await r.readPadding(size);
      await expectToken(r, ")");
    } else if (type === "symlink") {
      await expectToken(r, "target");
      const target = await r.readString(MAX_TARGET_BYTES);
      if (target.length === 0 || target.includes(0)) throw new InvalidInputError("invalid NAR: bad symlink target");
      yield { type: "symlink", path, target };
      await expectToken(r, ")");
    } else if (type === "directory") {
      if (stack.length >= maxDepth) throw new InvalidInputError(`invalid NAR: nesting deeper than ${maxDepth}`);
      yield { type: "directory", path };
      stack.push({ path, last: null });
    } else {
      throw new InvalidInputError(`invalid NAR: unknown node type '${type.slice(0, 40)}'`);
    }
    // A finished leaf closes the entry that holds it; then look for the next entry.
    if (type !== "directory" && stack.length > 0) await expectToken(r, ")");
    let next: NarPath | null = null;
    while (stack.length > 0) {
      checkSize(r, 0, limits);
      const top = stack[stack.length - 1];
      const tok = await readToken(r);
      if (tok === ")") {
        stack.pop();
        if (stack.length > 0) await expectToken(r, ")");
        continue;
      }
      if (tok !== "entry") throw new InvalidInputError(`invalid NAR: expected 'entry', got '${tok.slice(0, 40)}'`);
      await expectToken(r, "(");
      await expectToken(r, "name");
      const name = await r.readString(MAX_NAME_BYTES);
      validateEntryName(name);
      if (top.last && Buffer.compare(top.last, name) >= 0) {
        throw new InvalidInputError("invalid NAR: directory entries are not in strictly ascending order");
      }
      top.last = name;
      await expectToken(r, "node");
      next = [...top.path, name];
      break;
    }
    checkSize(r, 0, limits);
    if (next === null) return;
    path = next;
  }
}

/** Parses a source that must hold exactly one NAR (trailing bytes are an error). */
export async function* parseNar(source: ByteSource, limits: NarLimits = {}): AsyncGenerator<NarEvent> {
  const r = new ByteReader(source, "NAR");
  try {
    yield* readNarEvents(r, limits);
    if (!(await r.atEnd())) throw new InvalidInputError("invalid NAR: trailing data after the archive");
  } finally {
    await r.close();
  }
}

/** Yields the raw bytes of one NAR read from `r` while validating them; stops at its end. */
export async function* narBytesFrom(r: ByteReader, limits: NarLimits = {}): AsyncGenerator<Buffer> {
  const pending: Buffer[] = [];
  const previousTap = r.tap;
  r.tap = (chunk) => pending.push(chunk);
  try {
    for await (const _event of readNarEvents(r, limits)) {
      while (pending.length > 0) yield pending.shift()!;
    }
    while (pending.length > 0) yield pending.shift()!;
  } finally {
    r.tap = previousTap;
  }
}

/** Passes through a source holding exactly one NAR, failing on anything invalid. */
export async function* validatedNar(source: ByteSource, limits: NarLimits = {}): AsyncGenerator<Buffer> {
  const r = new ByteReader(source, "NAR");
  try {
    yield* narBytesFrom(r, limits);
    if (!(await r.atEnd())) throw new InvalidInputError("invalid NAR: trailing data after the archive");
  } finally {
    await r.close();
  }
}
