// Getting a build's inputs into the local store with few questions to Nix.
// The .drv closure is walked in-process (drv-closure.ts), ONE validity query
// says what of it, of the build's input paths and of the outputs the .drv files
// name is missing, and ONE import brings what is needed in (both answered by
// the worker's `nix-store --serve` session), dependencies first, through the farm cache client, which
// checks every narinfo's signature and every NAR's hash against the farm key as
// Nix's substituter would. Only a missing path referring to a path nobody asked
// about yet costs another validity call.
import path from "node:path";
import { mapLimit, referencePaths, topoSortByReferences, type ExportItem, type NarInfo } from "../proto/nix/mod.js";
import type { CacheApi } from "./cache-api.js";
import { walkDrvClosure, type DrvMemo } from "./drv-closure.js";
import { BuildStepError } from "./executor.js";
import { parseDryRun } from "./nix-log.js";
import type { NixStore } from "./nix-store.js";

/** narinfo requests in flight. */
const CONCURRENCY = 16;

/** What a fetch found and did. */
export interface FetchResult {
  /** Paths known valid here now: what the validity calls found (minus what `dropUnpublished` removed), and what was imported. */
  valid: Set<string>;
  /** Paths imported of the .drv closure (.drv files and sources). */
  drvPaths: number;
  /** Other paths imported: the inputs and their closures. */
  inputPaths: number;
  bytes: number;
}

/** What fetching a build's inputs needs. */
export interface FetchRequest {
  drvPath: string;
  inputPaths: readonly string[];
  signal: AbortSignal;
  drvMemo: DrvMemo;
  /** Named in the "copying path" log lines. */
  cacheUrl: string;
  /** Given the paths found valid, removes those that must not be used; returns every path it deleted. */
  dropUnpublished?: (valid: Set<string>) => Promise<string[]>;
  onLine?: (line: string) => void;
}

/** Brings the .drv closure of `drvPath` and `inputPaths` (with their closures) into the local store. */
export async function fetchInputs(store: NixStore, cache: CacheApi, req: FetchRequest): Promise<FetchResult> {
  const fetched = new Map<string, NarInfo>();
  const narInfo = async (p: string): Promise<NarInfo> => {
    const known = fetched.get(p);
    if (known) return known;
    const info = await cache.narInfo(p);
    if (!info) throw new Error(`${p} is not in the cache`);
    fetched.set(p, info);
    return info;
  };
  let closure;
  try {
    closure = await walkDrvClosure(req.drvPath, req.drvMemo, narInfo);
  } catch (err) {
    throw new BuildStepError("inputs-unavailable", `cannot get the closure of ${req.drvPath} from the cache: ${(err as Error).message}`, { cause: err });
  }
  const needed = [...new Set([...closure.drvs, ...closure.sources, ...req.inputPaths])];
  // true = valid here. The outputs the .drv files name are asked about too, so the inputs' own references are known at once.
  const validity = new Map<string, boolean>();
  const ask = async (paths: string[]) => {
    const invalid = await store.invalidPaths(paths, req.signal);
    for (const p of paths) validity.set(p, !invalid.has(p));
  };
  await ask([...new Set([...needed, ...closure.outputs])]);
  const validNow = () => new Set([...validity].filter(([, v]) => v).map(([p]) => p));
  for (const p of (await req.dropUnpublished?.(validNow())) ?? []) if (validity.has(p)) validity.set(p, false);

  const missing = new Map<string, NarInfo>();
  let frontier = needed.filter((p) => !validity.get(p));
  try {
    while (frontier.length > 0) {
      const infos = await mapLimit(frontier, CONCURRENCY, narInfo);
      for (const info of infos) missing.set(info.storePath, info);
      const refs = [...new Set(infos.flatMap(referencePaths))].filter((r) => !missing.has(r));
      const unknown = refs.filter((r) => !validity.has(r));
      if (unknown.length > 0) await ask(unknown);
      frontier = refs.filter((r) => !validity.get(r));
    }
  } catch (err) {
    if (req.signal.aborted) throw new BuildStepError("aborted", "aborted while fetching inputs");
    throw new BuildStepError("inputs-unavailable", `cannot get the inputs of ${req.drvPath} from the cache: ${(err as Error).message}`, { cause: err });
  }
  const ofDrvClosure = new Set([...closure.drvs, ...closure.sources]);
  const { bytes } = await importPaths(store, cache, [...missing.values()], ofDrvClosure, req);
  const valid = validNow();
  for (const p of missing.keys()) valid.add(p);
  const drvPaths = [...missing.keys()].filter((p) => ofDrvClosure.has(p)).length;
  return { valid, drvPaths, inputPaths: missing.size - drvPaths, bytes };
}

/** ONE import of `infos` (any order); logs a "copying path" line per input path (not of `drvClosure`), as Nix's substituter did. */
async function importPaths(store: NixStore, cache: CacheApi, infos: NarInfo[], drvClosure: Set<string>, req: FetchRequest): Promise<{ bytes: number }> {
  if (infos.length === 0) return { bytes: 0 };
  let bytes = 0;
  async function* counted(src: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of src) {
      bytes += chunk.length;
      yield chunk;
    }
  }
  const ordered = topoSortByReferences(infos.map((info) => ({ storePath: info.storePath, references: referencePaths(info), info })));
  async function* items(): AsyncGenerator<ExportItem> {
    for (const { info, references } of ordered) {
      if (!drvClosure.has(info.storePath)) req.onLine?.(`copying path '${info.storePath}' from '${req.cacheUrl}'...`);
      yield {
        storePath: info.storePath,
        references,
        deriver: info.deriver ? `${path.dirname(info.storePath)}/${info.deriver}` : undefined,
        nar: counted(await cache.narStream(info)),
      };
    }
  }
  try {
    await store.import(items(), req.signal);
  } catch (err) {
    if (req.signal.aborted) throw new BuildStepError("aborted", "aborted while fetching inputs");
    throw new BuildStepError("inputs-unavailable", `importing ${infos.length} paths for ${req.drvPath} failed: ${(err as Error).message}`, { cause: err });
  }
  return { bytes };
}

/**
 * Makes sure building `drvPath` will build nothing else: every output of an
 * input derivation it uses must be valid here by now. Read from the .drv files
 * in-process; an output still missing is fetched if the cache has it, and the
 * build is refused if not (a worker builds exactly what it was assigned).
 */
export async function ensureOnlyThisBuilds(store: NixStore, cache: CacheApi, req: FetchRequest, known: Set<string>): Promise<FetchResult> {
  const none = { valid: known, drvPaths: 0, inputPaths: 0, bytes: 0 };
  const needed = await inputOutputs(req.drvPath, req.drvMemo);
  if (!needed) return planWithDryRun(store, cache, req);
  const unknown = [...needed.keys()].filter((p) => !known.has(p));
  if (unknown.length === 0) return none;
  const invalid = [...(await store.invalidPaths(unknown, req.signal))];
  if (invalid.length === 0) return none;
  const available = await mapLimit(invalid, CONCURRENCY, async (p) => (await cache.narInfo(p)) !== null);
  const unbuildable = [...new Set(invalid.filter((_, i) => !available[i]).map((p) => needed.get(p)!))];
  if (unbuildable.length > 0) throw notHere(unbuildable);
  return fetchInputs(store, cache, { ...req, inputPaths: invalid, dropUnpublished: undefined });
}

/**
 * Output path -> its derivation, for every input derivation output `drvPath` uses, from the .drv
 * files (read once per worker, in the memo); undefined when they don't say (then Nix must).
 */
async function inputOutputs(drvPath: string, memo: DrvMemo): Promise<Map<string, string> | undefined> {
  const needed = new Map<string, string>();
  const drv = await memo.read(drvPath);
  if (!drv) return undefined;
  for (const input of drv.inputDrvs) {
    const inputDrv = await memo.read(input.path);
    if (!inputDrv) return undefined;
    for (const [name, outPath] of inputDrv.outputsByName) {
      if (!input.outputs.includes(name)) continue;
      if (!outPath) return undefined; // a floating content-addressed output
      needed.set(outPath, input.path);
    }
  }
  return needed;
}

/** The general plan: what `nix-store -r --dry-run` would build and fetch. */
async function planWithDryRun(store: NixStore, cache: CacheApi, req: FetchRequest): Promise<FetchResult> {
  const dry = await store.realise([req.drvPath], { extraArgs: ["--dry-run"], signal: req.signal });
  if (req.signal.aborted) throw new BuildStepError("aborted", "aborted while planning the build");
  if (dry.exitCode !== 0) throw new BuildStepError("inputs-unavailable", `planning ${req.drvPath} failed: ${dry.error}`);
  const plan = parseDryRun(dry.lines);
  const others = plan.build.filter((d) => d !== req.drvPath);
  if (others.length > 0) throw notHere(others);
  return fetchInputs(store, cache, { ...req, inputPaths: plan.fetch, dropUnpublished: undefined });
}

function notHere(drvs: string[]): BuildStepError {
  const names = drvs.slice(0, 3).map((d) => path.basename(d)).join(", ");
  return new BuildStepError("inputs-unavailable", `${drvs.length} input derivation(s) are neither local nor in the cache (${names}${drvs.length > 3 ? ", …" : ""})`);
}
