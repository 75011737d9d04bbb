// Walking a closure through narinfo References, one level at a time: each level
// asks once which paths are missing (so a caller can check many paths with a
// single `nix-store --check-validity`), fetches those narinfos with bounded
// concurrency, and skips a present path together with its closure (a valid
// store path's references are valid too). Shared by the cache client
// (`farm install`) and the worker (importing a .drv closure).
import { topoSortByReferences } from "./export-stream.js";
import { referencePaths, type NarInfo } from "./narinfo.js";

/** Bounded-concurrency map; results keep their order. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const run = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
  return out;
}

/** How to walk: which of a level's paths are needed, and how to fetch one narinfo (throw when absent). */
export interface ClosureWalk {
  missing: (paths: string[]) => Promise<string[]>;
  fetch: (path: string) => Promise<NarInfo>;
  concurrency: number;
}

/** Narinfos of the needed part of the closure of `roots`, dependencies first. */
export async function walkClosure(roots: string[], walk: ClosureWalk): Promise<NarInfo[]> {
  const infos = new Map<string, NarInfo>();
  const seen = new Set(roots);
  let frontier = [...seen];
  while (frontier.length > 0) {
    const fetched = await mapLimit(await walk.missing(frontier), walk.concurrency, walk.fetch);
    frontier = [];
    for (const info of fetched) {
      infos.set(info.storePath, info);
      for (const ref of referencePaths(info)) {
        if (seen.has(ref)) continue;
        seen.add(ref);
        frontier.push(ref);
      }
    }
  }
  const nodes = [...infos.values()].map((info) => ({ storePath: info.storePath, references: referencePaths(info), info }));
  return topoSortByReferences(nodes).map((n) => n.info);
}
