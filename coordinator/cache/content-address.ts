// What a submitter may put in the cache: only paths whose name their own bytes
// determine, so the cache can recompute the path and sign it without trusting
// the uploader. Those are the kinds `farm submit` uploads: `.drv` files and
// other text files (a `text` path over the file's SHA-256 and its references)
// and sources added by evaluation (a `source` path over the NAR's SHA-256). A
// path that is not what its bytes say is refused: a submitter can't plant a
// program under a name of its choosing.
import { createHash } from "node:crypto";
import { AuthError } from "../core/errors.js";
import { makeStorePath, nix32Encode, parseDerivation, parseSha256 } from "../../proto/nix/mod.js";

/** A path type as Nix builds it: the kind, each other reference as a full path in order, then `self`. */
function typeWithReferences(kind: string, storeDir: string, selfBase: string, references: string[]): string {
  const others = references.filter((r) => r !== selfBase).sort();
  return [kind, ...others.map((r) => `${storeDir}/${r}`)].join(":") + (references.includes(selfBase) ? ":self" : "");
}

/** What a submitter's upload claims and what the cache measured of it. */
export interface ContentClaim {
  storePath: string;
  storeDir: string;
  /** The store path's name (after the hash). */
  name: string;
  /** `sha256:<nix32>` of the NAR. */
  narHash: string;
  /** Base names, as in X-Nix-References. */
  references: string[];
  /** The contents when the NAR is one regular file. */
  singleFile?: Buffer;
}

/** The paths Nix would give these bytes, each with the CA field that says so: as a recursive source, and (for a single file) as a text file. */
export function contentAddressedPaths(c: ContentClaim): { path: string; ca: string }[] {
  const selfBase = c.storePath.slice(c.storeDir.length + 1);
  const narSha = parseSha256(c.narHash);
  const paths = [{ path: makeStorePath(typeWithReferences("source", c.storeDir, selfBase, c.references), narSha, c.name, c.storeDir), ca: `fixed:r:sha256:${nix32Encode(narSha)}` }];
  if (c.singleFile && !c.references.includes(selfBase)) {
    const textSha = createHash("sha256").update(c.singleFile).digest();
    paths.push({ path: makeStorePath(typeWithReferences("text", c.storeDir, selfBase, c.references), textSha, c.name, c.storeDir), ca: `text:sha256:${nix32Encode(textSha)}` });
  }
  return paths;
}

/**
 * Throws AuthError unless `c.storePath` is a path its own bytes determine (and
 * a `.drv` is a derivation); returns the CA field the cache may then state.
 */
export function assertContentAddressed(c: ContentClaim): string {
  const candidates = contentAddressedPaths(c);
  const match = candidates.find((p) => p.path === c.storePath);
  if (!match) {
    throw new AuthError(`${c.storePath} is not the path of its own bytes (${candidates.map((p) => p.path).join(" or ")}): a submitter may upload only .drv files, text files and sources`);
  }
  if (c.name.endsWith(".drv")) {
    if (!c.singleFile) throw new AuthError(`${c.storePath}: a .drv must be a single file`);
    parseDerivation(c.singleFile.toString("utf8"), c.storePath);
  }
  return match.ca;
}
