// Serialises a filesystem tree into NAR bytes, byte-identical to `nix-store --dump`.
// Paths are handled as Buffers so names that are not UTF-8 survive unchanged.

import { createReadStream } from "node:fs";
import { lstat, readdir, readlink } from "node:fs/promises";
import { InvalidInputError } from "../errors.js";
import { NAR_MAGIC } from "./nar-parse.js";
import { encodeString, encodeU64, padLength } from "./serialise.js";

const SLASH = Buffer.from("/");

function tokens(...parts: (string | Buffer)[]): Buffer {
  return Buffer.concat(parts.map((p) => encodeString(p)));
}

/** Streams the NAR serialisation of the file, symlink or directory at `path`. */
export async function* dumpPath(path: string | Buffer): AsyncGenerator<Buffer> {
  yield tokens(NAR_MAGIC);
  yield* dumpNode(Buffer.from(path));
}

async function* dumpNode(p: Buffer): AsyncGenerator<Buffer> {
  const st = await lstat(p);
  if (st.isFile()) {
    // Nix marks a file executable if its owner may execute it.
    const head = st.mode & 0o100 ? ["(", "type", "regular", "executable", "", "contents"] : ["(", "type", "regular", "contents"];
    yield Buffer.concat([tokens(...head), encodeU64(st.size)]);
    let n = 0;
    for await (const chunk of createReadStream(p, { highWaterMark: 256 * 1024 })) {
      n += (chunk as Buffer).length;
      if (n > st.size) break;
      yield chunk as Buffer;
    }
    if (n !== st.size) throw new InvalidInputError(`file '${p.toString()}' changed size while being archived`);
    yield Buffer.concat([Buffer.alloc(padLength(st.size)), tokens(")")]);
  } else if (st.isSymbolicLink()) {
    const target = await readlink(p, { encoding: "buffer" });
    yield tokens("(", "type", "symlink", "target", target, ")");
  } else if (st.isDirectory()) {
    yield tokens("(", "type", "directory");
    const names = await readdir(p, { encoding: "buffer" });
    names.sort(Buffer.compare);
    for (const name of names) {
      yield tokens("entry", "(", "name", name, "node");
      yield* dumpNode(Buffer.concat([p, SLASH, name]));
      yield tokens(")");
    }
    yield tokens(")");
  } else {
    throw new InvalidInputError(`cannot archive '${p.toString()}': not a file, symlink or directory`);
  }
}
