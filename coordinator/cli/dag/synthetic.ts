// Seeded synthetic DAGs for load tests (100k+ nodes): a layered random graph
// whose shape loosely follows nixpkgs: many fetches at the bottom, a few
// widely used nodes (like stdenv), multi-output nodes used partially.

import type { DrvNode, DrvPath } from "../../core/types.js";
import { BUILTIN_SYSTEM } from "../../core/types.js";

/** Parameters of syntheticDag(). */
export interface SyntheticDagOptions {
  /** Number of derivations. */
  nodes: number;
  /** Same seed, same DAG. */
  seed: number;
  /** Number of layers (bounds the longest chain); default ~ sqrt(nodes) capped at 120. */
  layers?: number;
  /** Most inputs one node has; default 8. */
  maxInputs?: number;
  /** Store dir of the fake paths; default /tmp/nix/store. */
  storeDir?: string;
}

/** Deterministic PRNG (mulberry32): returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz";

/** A closed, acyclic DAG of `nodes` derivations, in topological order (inputs first). */
export function syntheticDag(opts: SyntheticDagOptions): DrvNode[] {
  const n = Math.floor(opts.nodes);
  if (n <= 0) return [];
  const rand = seededRandom(opts.seed);
  const storeDir = opts.storeDir ?? "/tmp/nix/store";
  const layers = Math.max(1, Math.min(opts.layers ?? Math.min(120, Math.ceil(Math.sqrt(n))), n));
  const maxInputs = opts.maxInputs ?? 8;
  const hash = (): string => {
    let h = "";
    for (let i = 0; i < 32; i++) h += NIX_BASE32[Math.floor(rand() * 32)];
    return h;
  };

  // Layer sizes shrink upwards (many leaves, few top-level apps); every layer gets at least one node.
  const weights = Array.from({ length: layers }, (_, l) => 1 / (1 + l * 0.05));
  const total = weights.reduce((a, b) => a + b, 0);
  const sizes = weights.map((w) => Math.max(1, Math.floor((w / total) * n)));
  let excess = sizes.reduce((a, b) => a + b, 0) - n;
  for (let l = layers - 1; excess !== 0; l = (l - 1 + layers) % layers) {
    if (excess > 0 && sizes[l] > 1) (sizes[l]--, excess--);
    else if (excess < 0) (sizes[0]++, excess++);
  }

  const nodes: DrvNode[] = [];
  // The first few nodes of layer 1 play "stdenv": most later nodes use one of them.
  const hubs: number[] = [];
  let layerStart = 0;
  for (let l = 0; l < layers; l++) {
    const prevEnd = layerStart;
    for (let k = 0; k < sizes[l]; k++) {
      const idx = nodes.length;
      const fetch = l === 0;
      const pname = fetch ? `src${idx}` : `pkg${idx}`;
      const version = `${1 + (idx % 9)}.${idx % 17}`;
      const name = fetch ? `${pname}-${version}.tar.gz` : `${pname}-${version}`;
      const h = hash();
      const multi = !fetch && rand() < 0.2;
      const outputs: Record<string, string> = { out: `${storeDir}/${hash()}-${name}` };
      if (multi) {
        outputs.dev = `${storeDir}/${hash()}-${name}-dev`;
        outputs.lib = `${storeDir}/${hash()}-${name}-lib`;
      }
      const inputs = new Map<DrvPath, string[]>();
      if (l > 0) {
        const want = 1 + Math.floor(rand() * Math.min(maxInputs, prevEnd));
        // Bias towards recent layers so chains get deep, like real package sets.
        for (let j = 0; j < want; j++) {
          const span = Math.max(1, Math.floor(prevEnd * rand() * rand()));
          pickInput(nodes[prevEnd - 1 - Math.floor(rand() * span)], inputs, rand);
        }
        if (l > 1 && hubs.length > 0) pickInput(nodes[hubs[Math.floor(rand() * hubs.length)]], inputs, rand);
      }
      nodes.push({
        drvPath: `${storeDir}/${h}-${name}.drv`,
        name,
        pname,
        version,
        system: fetch && rand() < 0.1 ? BUILTIN_SYSTEM : "x86_64-linux",
        outputs,
        inputDrvs: [...inputs].map(([drvPath, outs]) => ({ drvPath, outputs: outs })),
        inputSrcs: [],
        fixedOutput: fetch,
        requiredSystemFeatures: !fetch && rand() < 0.005 ? ["big-parallel"] : [],
        preferLocalBuild: fetch || rand() < 0.02,
        allowSubstitutes: !(rand() < 0.01),
        enableParallelBuilding: !fetch && rand() < 0.6,
      });
      if (l === 1 && hubs.length < 3) hubs.push(idx);
    }
    layerStart += sizes[l];
  }
  return nodes;
}

function pickInput(dep: DrvNode, inputs: Map<DrvPath, string[]>, rand: () => number): void {
  if (inputs.has(dep.drvPath)) return;
  const names = Object.keys(dep.outputs);
  // Multi-output inputs are often used partially (e.g. only `lib`), as in nixpkgs.
  inputs.set(dep.drvPath, names.length > 1 && rand() < 0.5 ? [names[1 + Math.floor(rand() * (names.length - 1))]] : ["out"]);
}
