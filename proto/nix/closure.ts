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

/**
 * Runs `fn` on every item, at most `limit` at once, each only after every item
 * it references (among `items`) has finished: uploads to a cache that refuses
 * dangling references go up in parallel, a level of the graph at a time at
 * worst. After a failure nothing new starts, and it rejects with that failure
 * once the running ones have settled.
 */
export async function forEachAfterReferences<T extends { storePath: string; references: readonly string[] }>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const ordered = topoSortByReferences(items); // rejects a cycle before anything starts
  const present = new Set(ordered.map((i) => i.storePath));
  const waitingOn = new Map<T, number>();
  const dependents = new Map<string, T[]>();
  const ready: T[] = [];
  for (const item of ordered) {
    const deps = new Set(item.references.filter((r) => r !== item.storePath && present.has(r)));
    waitingOn.set(item, deps.size);
    for (const d of deps) {
      const list = dependents.get(d);
      if (list) list.push(item);
      else dependents.set(d, [item]);
    }
    if (deps.size === 0) ready.push(item);
  }
  await new Promise<void>((resolve, reject) => {
    let next = 0;
    let running = 0;
    let finished = 0;
    let failure: { err: unknown } | undefined;
    const pump = () => {
      if (failure) {
        if (running === 0) reject(failure.err);
        return;
      }
      if (finished === ordered.length) return resolve();
      while (running < limit && next < ready.length) {
        const item = ready[next++];
        running++;
        fn(item).then(
          () => {
            running--;
            finished++;
            for (const d of dependents.get(item.storePath) ?? []) {
              const left = waitingOn.get(d)! - 1;
              waitingOn.set(d, left);
              if (left === 0) ready.push(d);
            }
            pump();
          },
          (err: unknown) => {
            running--;
            failure ??= { err };
            pump();
          },
        );
      }
    };
    pump();
  });
}
