// The .drv closure of a build, walked in-process: a .drv's references are its
// inputDrvs and inputSrcs, fixed by its hash, so they are read from the file
// when it is in the store already (and remembered), and taken from the cache's
// narinfo otherwise. The output paths the .drv files name come along: the
// inputs' runtime closures can only hold those and sources, so one validity
// call can cover everything a build might need.
import { readFile } from "node:fs/promises";
import { mapLimit, parseDerivation, referencePaths, type NarInfo } from "../proto/nix/mod.js";

/** .drv files read at once. */
const CONCURRENCY = 16;
/** .drv files remembered; past this the memory starts over (some MB at most). */
const MAX_REMEMBERED_DRVS = 50_000;

/** What a .drv file says that the walk needs. */
export interface DrvFacts {
  /** inputDrvs and inputSrcs: the .drv's store references. */
  references: string[];
  /** Its output paths (none for floating content-addressed outputs). */
  outputs: string[];
  /** Output name -> path ("" for a floating content-addressed output). */
  outputsByName: ReadonlyMap<string, string>;
  /** The input derivations and which of their outputs it uses. */
  inputDrvs: { path: string; outputs: string[] }[];
}

/** Facts of .drv files read before: a .drv never changes, its hash fixes its content. */
export class DrvMemo {
  private readonly facts = new Map<string, DrvFacts>();

  /** The facts of a .drv, from memory or from its file in the store; undefined when it is not readable here. */
  async read(drv: string): Promise<DrvFacts | undefined> {
    const known = this.facts.get(drv);
    if (known) return known;
    let text: string;
    try {
      text = await readFile(drv, "utf8");
    } catch {
      return undefined; // not in the store yet
    }
    let facts: DrvFacts;
    try {
      const d = parseDerivation(text, drv);
      facts = {
        references: [...d.inputDrvs.map((i) => i.path), ...d.inputSrcs],
        outputs: d.outputs.map((o) => o.path).filter(Boolean),
        outputsByName: new Map(d.outputs.map((o) => [o.name, o.path])),
        inputDrvs: d.inputDrvs.map((i) => ({ path: i.path, outputs: [...i.outputs] })),
      };
    } catch {
      return undefined; // half written by an import that died: the cache's narinfo says
    }
    if (this.facts.size >= MAX_REMEMBERED_DRVS) this.facts.clear();
    this.facts.set(drv, facts);
    return facts;
  }
}

/** The closure of a .drv, split by what each path is. */
export interface DrvClosure {
  /** Every .drv in it. */
  drvs: string[];
  /** The other paths those refer to (sources). */
  sources: string[];
  /** Output paths named by the .drv files that were readable here. */
  outputs: string[];
}

/** Walks the closure of `drvPath`; `narInfo` answers for a .drv not in the store (and throws when the cache lacks it). */
export async function walkDrvClosure(drvPath: string, memo: DrvMemo, narInfo: (p: string) => Promise<NarInfo>): Promise<DrvClosure> {
  const seen = new Set([drvPath]);
  const drvs = [drvPath];
  const sources: string[] = [];
  const outputs: string[] = [];
  let frontier = [drvPath];
  while (frontier.length > 0) {
    const refLists = await mapLimit(frontier, CONCURRENCY, async (drv) => {
      const facts = await memo.read(drv);
      if (facts) {
        outputs.push(...facts.outputs);
        return facts.references;
      }
      return referencePaths(await narInfo(drv));
    });
    frontier = [];
    for (const ref of refLists.flat()) {
      if (seen.has(ref)) continue;
      seen.add(ref);
      if (ref.endsWith(".drv")) {
        drvs.push(ref);
        frontier.push(ref);
      } else sources.push(ref);
    }
  }
  return { drvs, sources, outputs };
}
