// Derivation nodes on the wire: the CLI sends them in Submit (nodeToWire), the
// coordinator validates them against the farm's store dir (nodeFromWire).
import { InvalidInputError } from "../errors.js";
import * as wire from "../gen/farm.js";
import { BUILTIN_SYSTEM, type DrvNode } from "../types.js";
import { OUTPUT_NAME, requireDrvPath, requireStorePath, SYSTEM, truncate } from "./store-paths.js";

/** Validates one submitted DAG node against the farm's store dir. */
export function nodeFromWire(n: wire.DerivationNode, storeDir: string): DrvNode {
  const where = `derivation ${truncate(n.drvPath)}`;
  requireDrvPath(n.drvPath, storeDir, "derivation");
  if (!n.name) throw new InvalidInputError(`${where}: empty name`);
  if (n.system !== BUILTIN_SYSTEM && !SYSTEM.test(n.system)) throw new InvalidInputError(`${where}: bad system '${truncate(n.system)}'`);
  const outputs = Object.entries(n.outputs);
  if (outputs.length === 0) throw new InvalidInputError(`${where}: no outputs`);
  for (const [name, p] of outputs) {
    if (!OUTPUT_NAME.test(name)) throw new InvalidInputError(`${where}: bad output name '${truncate(name)}'`);
    requireStorePath(p, storeDir, `${where} output ${name}`);
  }
  return {
    drvPath: n.drvPath,
    name: n.name,
    pname: n.pname || n.name,
    version: n.version,
    system: n.system,
    outputs: { ...n.outputs },
    inputDrvs: n.inputDrvs.map((i) => {
      requireDrvPath(i.drvPath, storeDir, `${where} input`);
      if (i.outputs.length === 0 || !i.outputs.every((o) => OUTPUT_NAME.test(o))) {
        throw new InvalidInputError(`${where}: input ${truncate(i.drvPath)} names no valid output`);
      }
      return { drvPath: i.drvPath, outputs: [...i.outputs] };
    }),
    inputSrcs: n.inputSrcs.map((s) => requireStorePath(s, storeDir, `${where} source`)),
    fixedOutput: n.fixedOutput,
    requiredSystemFeatures: [...n.requiredSystemFeatures],
    preferLocalBuild: n.preferLocalBuild,
    allowSubstitutes: n.allowSubstitutes,
    enableParallelBuilding: n.enableParallelBuilding,
  };
}

/** A domain node as a wire message (the CLI's side of Submit). */
export function nodeToWire(n: DrvNode): wire.DerivationNode {
  return { ...n, inputDrvs: n.inputDrvs.map((i) => ({ drvPath: i.drvPath, outputs: i.outputs })) };
}
