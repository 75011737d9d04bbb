// Uploads a build's outputs to the farm cache under the build's lease: NAR
// straight from `nix-store --dump`, hashed on the way so the report carries
// narHash/narSize. The cache stages them; only the farm's acceptance of the
// result publishes them.
import { HashCounter, topoSortByReferences } from "../proto/nix/mod.js";
import type { Lease } from "../proto/types.js";
import type { BuiltOutput } from "../proto/types.js";
import type { CacheApi } from "./cache-api.js";
import { BuildStepError } from "./executor.js";
import type { NixStore } from "./nix-store.js";

/** Uploads each output (outputs referenced by siblings first); returns what was uploaded. */
export async function uploadOutputs(
  store: NixStore,
  cache: CacheApi,
  lease: Lease,
  outputs: Record<string, string>,
  signal: AbortSignal,
  onBytes?: (n: number) => void,
  uploadCredential?: string,
): Promise<BuiltOutput[]> {
  const entries = Object.entries(outputs);
  const invalid = await store.invalidPaths(entries.map(([, p]) => p), signal);
  if (invalid.size > 0) {
    throw new BuildStepError("failed", `build succeeded but did not produce ${[...invalid].join(", ")}`);
  }
  const withRefs = await Promise.all(entries.map(async ([name, storePath]) => ({ name, storePath, references: await store.references(storePath, signal) })));
  const built: BuiltOutput[] = [];
  for (const o of topoSortByReferences(withRefs)) {
    if (signal.aborted) throw new BuildStepError("aborted", "aborted while uploading outputs");
    const counter = new HashCounter();
    const dump = store.dump(o.storePath, signal);
    async function* hashed(): AsyncGenerator<Uint8Array> {
      for await (const chunk of dump.nar) {
        counter.update(chunk as Buffer);
        onBytes?.((chunk as Buffer).length);
        yield chunk as Buffer;
      }
    }
    try {
      await cache.upload({ storePath: o.storePath, references: o.references, deriver: lease.drvPath, narStream: hashed(), lease, token: uploadCredential });
      await dump.done;
    } catch (err) {
      dump.nar.destroy(); // a half-read dump would otherwise block on its pipe forever
      if (signal.aborted) throw new BuildStepError("aborted", "aborted while uploading outputs");
      throw new BuildStepError("upload-failed", `uploading ${o.storePath} failed: ${(err as Error).message}`, { cause: err });
    }
    const { hash, size } = counter.result();
    built.push({ name: o.name, path: o.storePath, narHash: hash, narSize: size });
  }
  return built;
}
