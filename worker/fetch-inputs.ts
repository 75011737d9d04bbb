// Getting a build's inputs into the local store: the .drv closure through the
// farm cache client + `nix-store --import` (Nix can't substitute .drv files),
// then input outputs with `nix-store -r` from the farm cache as substituter.
import path from "node:path";
import { encodeExport, referencePaths, walkClosure, type ExportItem, type NarInfo } from "../proto/nix/mod.js";
import type { CacheApi } from "./cache-api.js";
import { BuildStepError } from "./executor.js";
import { parseDryRun } from "./nix-log.js";
import type { NixStore } from "./nix-store.js";

/** narinfo requests in flight while walking a closure. */
const NARINFO_CONCURRENCY = 16;

/**
 * Verified narinfos of the closure of `roots` that the local store lacks,
 * dependencies first. Walks the closure one level at a time so each level costs
 * ONE `nix-store --check-validity` call (CacheClient.closure() asks isPresent per
 * path as its requests complete, which would spawn a process per path); a valid
 * path is skipped together with its closure, which Nix guarantees is valid too.
 */
export async function missingClosure(store: NixStore, cache: CacheApi, roots: string[], signal: AbortSignal): Promise<NarInfo[]> {
  return walkClosure(roots, {
    missing: async (paths) => {
      const invalid = await store.invalidPaths(paths, signal);
      return paths.filter((p) => invalid.has(p));
    },
    fetch: async (p) => {
      const info = await cache.narInfo(p);
      if (!info) throw new Error(`${p} is not in the cache`);
      return info;
    },
    concurrency: NARINFO_CONCURRENCY,
  });
}

/** Imports the closure of `drvPath` from the cache; returns the paths imported and bytes read. */
export async function importDrvClosure(store: NixStore, cache: CacheApi, drvPath: string, signal: AbortSignal): Promise<{ paths: number; bytes: number }> {
  let infos: NarInfo[];
  try {
    infos = await missingClosure(store, cache, [drvPath], signal);
  } catch (err) {
    throw new BuildStepError("inputs-unavailable", `cannot get the closure of ${drvPath} from the cache: ${(err as Error).message}`, { cause: err });
  }
  if (infos.length === 0) return { paths: 0, bytes: 0 };
  let bytes = 0;
  async function* counted(src: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of src) {
      bytes += chunk.length;
      yield chunk;
    }
  }
  async function* items(): AsyncGenerator<ExportItem> {
    for (const info of infos) {
      yield {
        storePath: info.storePath,
        references: referencePaths(info),
        deriver: info.deriver ? `${path.dirname(info.storePath)}/${info.deriver}` : undefined,
        nar: counted(await cache.narStream(info)),
      };
    }
  }
  try {
    await store.import(encodeExport(items()), signal);
  } catch (err) {
    throw new BuildStepError("inputs-unavailable", `importing ${infos.length} paths of the closure of ${drvPath} failed: ${(err as Error).message}`, { cause: err });
  }
  return { paths: infos.length, bytes };
}

/** Substitutes whichever of `paths` are missing from the farm cache; returns paths fetched and their NAR bytes. */
export async function substitutePaths(store: NixStore, paths: string[], signal: AbortSignal, onLine?: (line: string) => void): Promise<{ paths: number; bytes: number }> {
  const missing = [...(await store.invalidPaths(paths, signal))];
  if (missing.length === 0) return { paths: 0, bytes: 0 };
  const fetched: string[] = [];
  const r = await store.realise(missing, {
    signal,
    onLine: (line) => {
      const m = /^copying path '([^']+)' from/.exec(line);
      if (m) fetched.push(m[1]);
      onLine?.(line);
    },
  });
  if (signal.aborted) throw new BuildStepError("aborted", "aborted while fetching inputs");
  if (r.exitCode !== 0) throw new BuildStepError("inputs-unavailable", `substituting ${missing.length} input paths failed: ${r.error ?? `exit code ${r.exitCode}`}`);
  let bytes = 0;
  try {
    for (const p of fetched) bytes += (await store.narHashAndSize(p, signal)).narSize;
  } catch {
    // only a metric
  }
  return { paths: fetched.length, bytes };
}

/**
 * Makes sure building `drvPath` will build nothing else: fetches any missing
 * inputs a dry run wants substituted, and refuses if it would build another
 * derivation locally (a worker builds exactly what it was assigned).
 */
export async function ensureOnlyThisBuilds(store: NixStore, drvPath: string, signal: AbortSignal, onLine?: (line: string) => void): Promise<{ paths: number; bytes: number }> {
  const dry = await store.realise([drvPath], { extraArgs: ["--dry-run"], signal });
  if (signal.aborted) throw new BuildStepError("aborted", "aborted while planning the build");
  if (dry.exitCode !== 0) throw new BuildStepError("inputs-unavailable", `planning ${drvPath} failed: ${dry.error}`);
  const plan = parseDryRun(dry.lines);
  const others = plan.build.filter((d) => d !== drvPath);
  if (others.length > 0) {
    const names = others.slice(0, 3).map((d) => path.basename(d)).join(", ");
    throw new BuildStepError("inputs-unavailable", `${others.length} input derivation(s) are neither local nor in the cache (${names}${others.length > 3 ? ", …" : ""})`);
  }
  return plan.fetch.length ? substitutePaths(store, plan.fetch, signal, onLine) : { paths: 0, bytes: 0 };
}
