// The `nix-store --export` / `--import` stream. Per path: u64 1, NAR, u64
// 0x4558494e, path, references, deriver, u64 0 (no legacy signature); a final
// u64 0 ends the stream. Note the metadata FOLLOWS the NAR.

import { InvalidInputError } from "../errors.js";
import { hashThrough, type HashResult } from "./nar-hash.js";
import { narBytesFrom, validatedNar } from "./nar-parse.js";
import { parseStorePath, storeDirOf } from "./store-path.js";
import { ByteReader, encodeString, encodeU64, type ByteSource } from "./serialise.js";

/** Marks the metadata that follows each NAR in an export stream ("NIXE"). */
export const EXPORT_MAGIC = 0x4558494e;
const MAX_PATH_BYTES = 4096;
const MAX_REFERENCES = 1 << 20;

/** One path to export; references and deriver are full store paths. */
export interface ExportItem {
  storePath: string;
  references: string[];
  deriver?: string;
  nar: ByteSource;
}

/** Metadata of one path read from an export stream, plus what the NAR sink returned. */
export interface ImportedItem<T> {
  storePath: string;
  references: string[];
  deriver?: string;
  narHash: string;
  narSize: number;
  sinkResult: T;
}

/** Encodes items (dependencies first) into a stream `nix-store --import` accepts. */
export async function* encodeExport(items: Iterable<ExportItem> | AsyncIterable<ExportItem>): AsyncGenerator<Buffer> {
  for await (const item of items) {
    const dir = storeDirOf(item.storePath);
    for (const p of [...item.references, ...(item.deriver ? [item.deriver] : [])]) parseStorePath(p, dir);
    yield encodeU64(1);
    yield* validatedNar(item.nar);
    const refs = [...item.references].sort();
    yield Buffer.concat([
      encodeU64(EXPORT_MAGIC),
      encodeString(item.storePath),
      encodeU64(refs.length),
      ...refs.map((r) => encodeString(r)),
      encodeString(item.deriver ?? ""),
      encodeU64(0),
    ]);
  }
  yield encodeU64(0);
}

/**
 * Splits an export stream into paths. Each NAR is validated and handed to `sinkNar`
 * as it streams (its metadata is only known afterwards); whatever the sink leaves
 * unread is drained. With `storeDir`, every path must lie in it.
 */
export async function* parseExport<T>(
  source: ByteSource,
  sinkNar: (nar: AsyncIterable<Buffer>) => Promise<T>,
  storeDir?: string,
): AsyncGenerator<ImportedItem<T>> {
  const r = new ByteReader(source, "export stream");
  try {
    for (;;) {
      const flag = await r.readU64();
      if (flag === 0) break;
      if (flag !== 1) throw new InvalidInputError(`export stream: unexpected item marker ${flag}`);
      let hash: HashResult | null = null;
      const nar = hashThrough(narBytesFrom(r), (h) => (hash = h));
      // The sink may stop early; never let it close `nar`, so we can drain it.
      const shielded: AsyncIterable<Buffer> = { [Symbol.asyncIterator]: () => ({ next: () => nar.next() }) };
      const sinkResult = await sinkNar(shielded);
      while (!(await nar.next()).done);
      if ((await r.readU64()) !== EXPORT_MAGIC) throw new InvalidInputError("export stream: bad magic after NAR");
      const storePath = (await r.readString(MAX_PATH_BYTES)).toString("utf8");
      const dir = storeDir ?? storeDirOf(storePath);
      parseStorePath(storePath, dir);
      const count = await r.readU64();
      if (count > MAX_REFERENCES) throw new InvalidInputError("export stream: too many references");
      const references: string[] = [];
      for (let i = 0; i < count; i++) {
        const ref = (await r.readString(MAX_PATH_BYTES)).toString("utf8");
        parseStorePath(ref, dir);
        references.push(ref);
      }
      const deriver = (await r.readString(MAX_PATH_BYTES)).toString("utf8");
      if (deriver) parseStorePath(deriver, dir);
      const legacySig = await r.readU64();
      if (legacySig === 1) await r.readString(MAX_PATH_BYTES);
      else if (legacySig !== 0) throw new InvalidInputError("export stream: bad signature marker");
      const { hash: narHash, size: narSize } = hash as unknown as HashResult;
      yield { storePath, references, ...(deriver ? { deriver } : {}), narHash, narSize, sinkResult };
    }
    if (!(await r.atEnd())) throw new InvalidInputError("export stream: trailing data");
  } finally {
    await r.close();
  }
}

/** Orders items so every item comes after the items it references (self and outside references ignored). */
export function topoSortByReferences<T extends { storePath: string; references: readonly string[] }>(items: readonly T[]): T[] {
  const byPath = new Map(items.map((i) => [i.storePath, i]));
  const state = new Map<string, "visiting" | "done">();
  const out: T[] = [];
  const visit = (item: T, trail: string[]) => {
    const s = state.get(item.storePath);
    if (s === "done") return;
    if (s === "visiting") throw new InvalidInputError(`reference cycle: ${[...trail, item.storePath].join(" -> ")}`);
    state.set(item.storePath, "visiting");
    for (const ref of item.references) {
      const dep = byPath.get(ref);
      if (dep && ref !== item.storePath) visit(dep, [...trail, item.storePath]);
    }
    state.set(item.storePath, "done");
    out.push(item);
  };
  for (const item of items) visit(item, []);
  return out;
}
