// Output checking: a derivation counts as built only when the binary cache
// holds every one of its outputs completely (narinfo and NAR file).
import type { Logger } from "pino";
import { readValidNarInfo } from "../cache/http-server.js";
import type { CacheStorage } from "../cache/storage.js";
import type { BuildReport, DrvNode } from "../core/types.js";

/** True when every output of `node` has a valid narinfo in `cache`; an output whose NAR hash differs from the worker's report is logged (first writer wins). */
export async function outputsInCache(cache: CacheStorage, node: DrvNode, report: BuildReport, logger: Logger): Promise<boolean> {
  const reported = new Map(report.outputs.map((o) => [o.path, o.narHash]));
  for (const path of Object.values(node.outputs)) {
    const info = await readValidNarInfo(cache, path).catch(() => null);
    if (!info) return false;
    const claimed = reported.get(path);
    if (claimed && claimed !== info.narHash) {
      logger.warn({ path, claimed, cached: info.narHash }, "worker's output differs from the cached one (first writer wins)");
    }
  }
  return true;
}
