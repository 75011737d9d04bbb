// Uploads a build's outputs to the farm cache under the build's lease: NAR
// serialised in-process (byte-identical to `nix-store --dump`, and checked
// against the hash Nix registered), hashed on the way so the report carries
// narHash/narSize. The cache stages them; only the farm's acceptance of the
// result publishes them. An output of at most INLINE_NAR_MAX_BYTES goes in the
// build report instead, and the coordinator stages it the same way.
import { INLINE_NAR_MAX_BYTES, INLINE_NARS_MAX_BYTES } from "../proto/convert/mod.js";
import { baseName, dumpPath, HashCounter, topoSortByReferences } from "../proto/nix/mod.js";
import type { Lease } from "../proto/types.js";
import type { BuiltOutput } from "../proto/types.js";
import type { CacheApi } from "./cache-api.js";
import { BuildStepError } from "./executor.js";
import type { LocalPathInfo, NixStore } from "./nix-store.js";

/** How an upload of outputs runs, and what it tells along the way. */
export interface UploadOptions {
  signal: AbortSignal;
  /** Bytes of NAR sent, as they go. */
  onBytes?: (n: number) => void;
  /** The NAR bytes of all outputs, once Nix said what they are and before any is sent. */
  onSized?: (narBytes: number) => void;
  /** Bearer for the uploads instead of the worker's token (a lease-scoped credential). */
  uploadCredential?: string;
}

/** Uploads each output (outputs referenced by siblings first), or puts a small one in the report; returns what was built. */
export async function uploadOutputs(store: NixStore, cache: CacheApi, lease: Lease, outputs: Record<string, string>, opts: UploadOptions): Promise<BuiltOutput[]> {
  const { signal, onBytes, uploadCredential } = opts;
  const entries = Object.entries(outputs);
  const paths = entries.map(([, p]) => p);
  // References of every output in one question to Nix; it fails only if an output is missing, which a second names.
  const infos = await store.pathInfos(paths, signal).catch(async (err: unknown) => {
    const invalid = await store.invalidPaths(paths, signal);
    if (invalid.size > 0) throw new BuildStepError("failed", `build succeeded but did not produce ${[...invalid].join(", ")}`);
    throw err;
  });
  const withInfo = entries.map(([name, storePath]) => {
    const info = infos.get(storePath);
    if (!info) throw new BuildStepError("worker-error", `Nix said nothing about ${storePath}`);
    return { name, storePath, references: info.references, info };
  });
  opts.onSized?.(withInfo.reduce((sum, o) => sum + o.info.narSize, 0));
  const built: BuiltOutput[] = [];
  let inlineBudget = INLINE_NARS_MAX_BYTES;
  for (const o of topoSortByReferences(withInfo)) {
    if (signal.aborted) throw new BuildStepError("aborted", "aborted while uploading outputs");
    if (o.info.narSize <= Math.min(INLINE_NAR_MAX_BYTES, inlineBudget)) {
      // Small: it goes in the build report, staged by the coordinator as this upload would be.
      inlineBudget -= o.info.narSize;
      built.push(await inlineOutput(o.name, o.storePath, o.info, signal, onBytes));
      continue;
    }
    const counter = new HashCounter();
    // Serialised here rather than by a `nix-store --dump` per output; checked below against the hash Nix registered.
    async function* hashed(): AsyncGenerator<Uint8Array> {
      for await (const chunk of dumpPath(o.storePath)) {
        if (signal.aborted) throw new BuildStepError("aborted", "aborted while uploading outputs");
        counter.update(chunk);
        onBytes?.(chunk.length);
        yield chunk;
      }
    }
    try {
      await cache.upload({ storePath: o.storePath, references: o.references, deriver: lease.drvPath, narStream: hashed(), lease, token: uploadCredential });
    } catch (err) {
      if (signal.aborted) throw new BuildStepError("aborted", "aborted while uploading outputs");
      throw new BuildStepError("upload-failed", `uploading ${o.storePath} failed: ${(err as Error).message}`, { cause: err });
    }
    checkAgainstNix(o.storePath, counter, o.info);
    built.push({ name: o.name, path: o.storePath, narHash: o.info.narHash, narSize: o.info.narSize });
  }
  return built;
}

/** Never report bytes Nix would not serve: the staged output stays unpublished, the build goes elsewhere. */
function checkAgainstNix(storePath: string, counter: HashCounter, info: LocalPathInfo): void {
  const { hash, size } = counter.result();
  if (hash !== info.narHash || size !== info.narSize) {
    throw new BuildStepError("worker-error", `the NAR of ${storePath} read here (${hash}, ${size} bytes) is not the one Nix registered (${info.narHash}, ${info.narSize} bytes)`);
  }
}

/** A small output serialised whole, to travel in the build report. */
async function inlineOutput(name: string, storePath: string, info: LocalPathInfo, signal: AbortSignal, onBytes?: (n: number) => void): Promise<BuiltOutput> {
  const counter = new HashCounter();
  const chunks: Uint8Array[] = [];
  for await (const chunk of dumpPath(storePath)) {
    if (signal.aborted) throw new BuildStepError("aborted", "aborted while uploading outputs");
    counter.update(chunk);
    chunks.push(chunk);
  }
  checkAgainstNix(storePath, counter, info);
  onBytes?.(info.narSize);
  return { name, path: storePath, narHash: info.narHash, narSize: info.narSize, inline: { nar: Buffer.concat(chunks), references: info.references.map(baseName) } };
}
