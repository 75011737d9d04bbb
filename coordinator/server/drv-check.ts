// The .drv is the truth. A submitted node is accepted only when the farm's
// cache holds its .drv, that .drv's text is the one Nix gives the node's path,
// and the node says exactly what the .drv says (outputs, inputs, system,
// features, ...). So no submitter can make a derivation build something else
// or claim other outputs, and what one user submitted can't change what
// another user's job of the same derivation builds or reports.
import type { Logger } from "pino";
import { InvalidInputError } from "../core/errors.js";
import type { DrvNode } from "../core/types.js";
import type { CacheStorage } from "../cache/storage.js";
import { readValidNarInfo } from "../cache/http-server.js";
import { createHash } from "node:crypto";
import { asCompression, decompress, mapLimit, nix32Encode, parseDerivation, parseNar, verifiedDrvNode, type ByteSource, type NarInfo } from "../../proto/nix/mod.js";
import type { OutputPublisher } from "../cache/staged-output.js";
import type { Lease } from "../core/types.js";

/** .drv files are small; a bigger one is refused rather than read. */
const MAX_DRV_NAR_BYTES = 16 * 2 ** 20;
/** NAR files up to this size are read whole. */
const SMALL_NAR_FILE_BYTES = 1 << 20;

/** The NAR file `info` names, or null when it is missing; one its narinfo says is small is read whole (a stream each cost a submit of 100 .drv files 100 ms more). */
async function narFile(storage: CacheStorage, info: NarInfo): Promise<ByteSource | null> {
  const name = info.url.slice("nar/".length);
  if (info.fileSize !== undefined && info.fileSize <= SMALL_NAR_FILE_BYTES) {
    const bytes = await storage.getBytes("nar", name);
    return bytes && [bytes];
  }
  return (await storage.get("nar", name))?.stream ?? null;
}

/** The contents of the NAR `info` describes when it is one regular file; null when its NAR is missing, undefined when it is no single file. */
async function singleFileOf(storage: CacheStorage, info: NarInfo, maxNarBytes: number): Promise<Buffer | null | undefined> {
  const nar = await narFile(storage, info);
  if (!nar) return null;
  const chunks: Buffer[] = [];
  for await (const ev of parseNar(decompress(asCompression(info.compression), nar), { maxNarBytes })) {
    if (ev.type === "data") chunks.push(ev.chunk);
    else if (ev.type !== "file" || ev.path.length !== 0) return undefined;
  }
  return Buffer.concat(chunks);
}

/** The contents of a single-file store path in the cache, or null when the cache lacks it. */
export async function readCachedFile(storage: CacheStorage, storePath: string, maxNarBytes = MAX_DRV_NAR_BYTES): Promise<string | null> {
  const info = await readValidNarInfo(storage, storePath);
  if (!info) return null;
  const file = await singleFileOf(storage, info, maxNarBytes);
  if (file === undefined) throw new InvalidInputError(`${storePath}: not a single file in the cache`);
  return file === null ? null : file.toString("utf8");
}

/**
 * Whether a fixed-output derivation's staged output is what its .drv declares:
 * the NAR hash (recursive sha256) or the file's hash (flat sha256). Other
 * hash kinds are "unknown": the caller asks for a second build instead.
 */
export async function checkFixedOutput(storage: CacheStorage, publisher: OutputPublisher, node: DrvNode, lease: Lease, workerId: string): Promise<"match" | "mismatch" | "unknown"> {
  const text = await readCachedFile(storage, node.drvPath);
  if (text === null) return "unknown";
  const drv = parseDerivation(text, node.drvPath);
  const out = drv.outputs[0];
  if (drv.outputs.length !== 1 || !out.hash || !/^[0-9a-f]{64}$/.test(out.hash)) return "unknown";
  const recursive = out.hashAlgo === "r:sha256";
  if (!recursive && out.hashAlgo !== "sha256") return "unknown";
  const staged = await publisher.staged(out.path, lease, workerId);
  if (!staged) return "mismatch";
  const declared = `sha256:${nix32Encode(Buffer.from(out.hash, "hex"))}`;
  if (recursive) return staged.narHash === declared ? "match" : "mismatch";
  return (await flatFileSha256(storage, staged)) === declared ? "match" : "mismatch";
}

/** `sha256:<nix32>` of the file a single-file NAR holds, streamed (fetched sources can be large); null when it is no single file. */
async function flatFileSha256(storage: CacheStorage, info: NarInfo): Promise<string | null> {
  const nar = await narFile(storage, info);
  if (!nar) return null;
  const h = createHash("sha256");
  for await (const ev of parseNar(decompress(asCompression(info.compression), nar))) {
    if (ev.type === "data") h.update(ev.chunk);
    else if (ev.type !== "file" || ev.path.length !== 0) return null;
  }
  return `sha256:${nix32Encode(h.digest())}`;
}

/** A node as compared: lists in a fixed order, so a DAG written elsewhere may list inputs in any order. */
function canonical(n: DrvNode): Record<string, unknown> {
  return {
    name: n.name,
    pname: n.pname,
    version: n.version,
    system: n.system,
    outputs: Object.entries(n.outputs).sort(([a], [b]) => a.localeCompare(b)),
    inputDrvs: n.inputDrvs.map((i) => [i.drvPath, [...i.outputs].sort()]).sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
    inputSrcs: [...n.inputSrcs].sort(),
    fixedOutput: n.fixedOutput,
    requiredSystemFeatures: [...n.requiredSystemFeatures].sort(),
    preferLocalBuild: n.preferLocalBuild,
    allowSubstitutes: n.allowSubstitutes,
    enableParallelBuilding: n.enableParallelBuilding,
  };
}

/** Throws with one line naming the first field where `submitted` differs from what its .drv says. */
export function assertSameNode(submitted: DrvNode, truth: DrvNode): void {
  const a = canonical(submitted);
  const b = canonical(truth);
  for (const key of Object.keys(b)) {
    const [x, y] = [JSON.stringify(a[key]), JSON.stringify(b[key])];
    if (x !== y) throw new InvalidInputError(`${submitted.drvPath}: submitted ${key} ${x} is not what its .drv says (${y})`);
  }
}

/** Checks every node against its .drv in the cache (bounded concurrency); throws on the first that disagrees. */
export async function checkNodesAgainstDrvs(storage: CacheStorage, nodes: DrvNode[], logger?: Logger): Promise<void> {
  const started = Date.now();
  await mapLimit(nodes, 32, async (node) => {
    const text = await readCachedFile(storage, node.drvPath);
    if (text === null) throw new InvalidInputError(`${node.drvPath}: its .drv is not in the farm's cache (farm submit uploads the .drv closure first)`);
    assertSameNode(node, verifiedDrvNode(node.drvPath, text));
  });
  logger?.debug({ nodes: nodes.length, ms: Date.now() - started }, "submitted nodes match their .drv files");
}
