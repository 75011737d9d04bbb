// Test helpers: build NARs from in-memory trees WITHOUT validation (entries keep
// the given order and names), so tests can craft both valid and hostile archives.

import { encodeString, encodeU64, padLength } from "../serialise.js";

/** An in-memory file tree; directory entries are serialised in the order given. */
export type NarTree =
  | { file: string | Buffer; executable?: boolean }
  | { symlink: string | Buffer }
  | { dir: [string | Buffer, NarTree][] };

function s(x: string | Buffer): Buffer {
  return encodeString(x);
}

/** Serialises a node (no magic). */
export function narNode(t: NarTree): Buffer {
  if ("file" in t) {
    const data = Buffer.from(t.file);
    return Buffer.concat([
      s("("), s("type"), s("regular"),
      ...(t.executable ? [s("executable"), s("")] : []),
      s("contents"), encodeU64(data.length), data, Buffer.alloc(padLength(data.length)), s(")"),
    ]);
  }
  if ("symlink" in t) return Buffer.concat([s("("), s("type"), s("symlink"), s("target"), s(t.symlink), s(")")]);
  return Buffer.concat([
    s("("), s("type"), s("directory"),
    ...t.dir.flatMap(([name, child]) => [s("entry"), s("("), s("name"), s(name), s("node"), narNode(child), s(")")]),
    s(")"),
  ]);
}

/** Serialises a whole NAR. */
export function narFromTree(t: NarTree): Buffer {
  return Buffer.concat([s("nix-archive-1"), narNode(t)]);
}

/** Yields `buf` in chunks of `size` bytes (exercises chunk-boundary handling). */
export async function* chunked(buf: Buffer, size = 7): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

/** Collects an async byte source into one Buffer. */
export async function collect(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of source) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

/** A small tree covering every node kind. */
export const SAMPLE_TREE: NarTree = {
  dir: [
    ["bin", { dir: [["hello", { file: "#!/bin/sh\necho hello\n", executable: true }]] }],
    ["empty", { file: "" }],
    ["emptydir", { dir: [] }],
    ["link", { symlink: "bin/hello" }],
    ["share", { dir: [["data.txt", { file: "0123456789abcdef-odd-length" }], ["naïve", { file: "utf8 name" }]] }],
  ],
};
