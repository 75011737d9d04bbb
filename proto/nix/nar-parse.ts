// Strict, incremental NAR parser. A NAR is untrusted input that may be GBs, so
// it is parsed as a stream of events with bounded memory, and anything Nix
// would not have produced (bad names, unsorted entries, junk) is rejected.

import { InvalidInputError } from "../errors.js";
import { TooLargeError } from "./errors.js";
import { BufferReader, ByteReader, type ByteSource } from "./serialise.js";

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

/**
 * What the grammar asks its reader for: a Nix string of at most `max` bytes, a
 * u64, or a file: its event, then its contents as `data` events, then its
 * padding (the reader checks the size limit before the event).
 */
type NarRead = { read: "string"; max: number } | { read: "u64" } | { read: "contents"; file: FileEvent };

type FileEvent = Extract<NarEvent, { type: "file" }>;

const TOKEN: NarRead = { read: "string", max: MAX_TOKEN_BYTES };
const NAME: NarRead = { read: "string", max: MAX_NAME_BYTES };
const TARGET: NarRead = { read: "string", max: MAX_TARGET_BYTES };
const U64: NarRead = { read: "u64" };

function token(bytes: unknown): string {
  return (bytes as Buffer).toString("latin1");
}

function expectToken(bytes: unknown, want: string): void {
  const got = token(bytes);
  if (got !== want) throw new InvalidInputError(`invalid NAR: expected '${want}', got '${got.slice(0, 40)}'`);
}

interface DirFrame {
  path: NarPath;
  last: Buffer | null;
}

/**
 * The NAR grammar, without I/O: yields what it needs read (a NarRead, answered
 * through `next`) and the events it finds. One grammar for a stream and for a
 * buffer held whole, so both accept exactly the same NARs.
 */
function* narGrammar(maxDepth: number): Generator<NarRead | NarEvent, void, unknown> {
  expectToken(yield TOKEN, NAR_MAGIC);
  const stack: DirFrame[] = [];
  let path: NarPath = [];
  for (;;) {
    expectToken(yield TOKEN, "(");
    expectToken(yield TOKEN, "type");
    const type = token(yield TOKEN);
    if (type === "regular") {
      let tag = token(yield TOKEN);
      const executable = tag === "executable";
      if (executable) {
        expectToken(yield TOKEN, "");
        tag = token(yield TOKEN);
      }
      if (tag !== "contents") throw new InvalidInputError(`invalid NAR: expected 'contents', got '${tag.slice(0, 40)}'`);
      const size = (yield U64) as number;
      yield { read: "contents", file: { type: "file", path, executable, size } };
      expectToken(yield TOKEN, ")");
    } else if (type === "symlink") {
      expectToken(yield TOKEN, "target");
      const target = (yield TARGET) as Buffer;
      if (target.length === 0 || target.includes(0)) throw new InvalidInputError("invalid NAR: bad symlink target");
      yield { type: "symlink", path, target };
      expectToken(yield TOKEN, ")");
    } else if (type === "directory") {
      if (stack.length >= maxDepth) throw new InvalidInputError(`invalid NAR: nesting deeper than ${maxDepth}`);
      yield { type: "directory", path };
      stack.push({ path, last: null });
    } else {
      throw new InvalidInputError(`invalid NAR: unknown node type '${type.slice(0, 40)}'`);
    }
    // A finished leaf closes the entry that holds it; then look for the next entry.
    if (type !== "directory" && stack.length > 0) expectToken(yield TOKEN, ")");
    let next: NarPath | null = null;
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      const tok = token(yield TOKEN);
      if (tok === ")") {
        stack.pop();
        if (stack.length > 0) expectToken(yield TOKEN, ")");
        continue;
      }
      if (tok !== "entry") throw new InvalidInputError(`invalid NAR: expected 'entry', got '${tok.slice(0, 40)}'`);
      expectToken(yield TOKEN, "(");
      expectToken(yield TOKEN, "name");
      const name = (yield NAME) as Buffer;
      validateEntryName(name);
      if (top.last && Buffer.compare(top.last, name) >= 0) {
        throw new InvalidInputError("invalid NAR: directory entries are not in strictly ascending order");
      }
      top.last = name;
      expectToken(yield TOKEN, "node");
      next = [...top.path, name];
      break;
    }
    if (next === null) return;
    path = next;
  }
}

function isRead(step: NarRead | NarEvent): step is NarRead {
  return "read" in step;
}

function checkSize(consumed: number, limits: NarLimits): void {
  if (limits.maxNarBytes !== undefined && consumed > limits.maxNarBytes) {
    throw new TooLargeError(`NAR exceeds the limit of ${limits.maxNarBytes} bytes`);
  }
}

/** Parses exactly one NAR from `r`, leaving any following bytes unread. */
export async function* readNarEvents(r: ByteReader, limits: NarLimits = {}): AsyncGenerator<NarEvent> {
  const grammar = narGrammar(limits.maxDepth ?? 1024);
  let answer: unknown;
  for (;;) {
    const step = grammar.next(answer);
    if (step.done) return;
    answer = undefined;
    const s = step.value;
    if (!isRead(s)) {
      yield s;
      continue;
    }
    if (s.read === "string") answer = await r.readString(s.max);
    else if (s.read === "u64") answer = await r.readU64();
    else {
      // Refused before a byte of an oversized file is read.
      checkSize(r.consumed + s.file.size, limits);
      yield s.file;
      for await (const chunk of r.readChunks(s.file.size)) yield { type: "data", chunk };
      await r.readPadding(s.file.size);
    }
    checkSize(r.consumed, limits);
  }
}

/**
 * The events of a NAR held whole in `nar` (which must be exactly one NAR), read
 * synchronously: for small NARs already in memory, where a stream's promises
 * per token cost more than the parse. A file's contents come as one `data` event.
 */
export function* narEventsOf(nar: Buffer, limits: NarLimits = {}): Generator<NarEvent> {
  checkSize(nar.length, limits);
  const grammar = narGrammar(limits.maxDepth ?? 1024);
  const r = new BufferReader(nar, "NAR");
  let answer: unknown;
  for (;;) {
    const step = grammar.next(answer);
    if (step.done) break;
    answer = undefined;
    const s = step.value;
    if (!isRead(s)) yield s;
    else if (s.read === "string") answer = r.readString(s.max);
    else if (s.read === "u64") answer = r.readU64();
    else {
      checkSize(r.consumed + s.file.size, limits);
      const chunk = r.readExact(s.file.size);
      yield s.file;
      if (chunk.length > 0) yield { type: "data", chunk };
      r.readPadding(chunk.length);
    }
  }
  if (!r.atEnd()) throw new InvalidInputError("invalid NAR: trailing data after the archive");
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
