// The package index on the wire: what a Submit asks to be published under
// (derived from its ref, never from anything the submitter says about
// outputs), and an operator's PublishPackage request, validated here.
import { InvalidInputError } from "../errors.js";
import type * as wire from "../gen/farm.js";
import { isPackageName } from "../nix/package-index.js";
import { OUTPUT_NAME, requireStorePath, truncate } from "./store-paths.js";

/** Under which name, and with which source text, a succeeded job is published. */
export interface PublishSpec {
  name: string;
  source: string;
}

/** A validated PublishPackage request. */
export type PublishRequest =
  | { name: string; source: string; outputs: Record<string, string>; jobId?: undefined }
  | { name: string; source: string; jobId: string; outputs?: undefined };

const JOB_ID = /^[A-Za-z0-9._-]{1,128}$/;
const MAX_SOURCE = 500;

/** The package name a ref publishes under: the attribute path after `#` (`nixpkgs#hello` → `hello`), or undefined when it names none. */
export function packageNameOfRef(ref: string): string | undefined {
  const hash = ref.indexOf("#");
  if (hash < 0) return undefined;
  const attr = ref.slice(hash + 1);
  return isPackageName(attr) ? attr : undefined;
}

/** What a Submit publishes: nothing with no_publish or a ref that names no attribute. */
export function publishSpecFromSubmit(req: Pick<wire.SubmitRequest, "description" | "noPublish" | "source">): PublishSpec | undefined {
  if (req.noPublish) return undefined;
  const name = packageNameOfRef(req.description);
  if (!name) return undefined;
  const from = req.source.slice(0, MAX_SOURCE).replace(/[\r\n]/g, " ");
  return { name, source: from ? `${req.description} from ${from}` : req.description };
}

function checkName(name: string): string {
  if (!isPackageName(name)) throw new InvalidInputError(`'${truncate(name)}' is not a package name (an attribute path such as hello or tools.x)`);
  return name;
}

/** Validates an operator's PublishPackage request against the farm's store dir. */
export function publishRequestFromWire(req: wire.PublishPackageRequest, storeDir: string): PublishRequest {
  const name = checkName(req.name);
  const source = req.source.slice(0, MAX_SOURCE).replace(/[\r\n]/g, " ");
  const outputs = Object.entries(req.outputs);
  if (req.jobId) {
    if (outputs.length) throw new InvalidInputError("give either a job id or outputs, not both");
    if (!JOB_ID.test(req.jobId)) throw new InvalidInputError(`'${truncate(req.jobId)}' is not a job id`);
    return { name, source, jobId: req.jobId };
  }
  if (outputs.length === 0) throw new InvalidInputError(`publishing '${name}' names no outputs and no job`);
  for (const [out, p] of outputs) {
    if (!OUTPUT_NAME.test(out)) throw new InvalidInputError(`bad output name '${truncate(out)}'`);
    requireStorePath(p, storeDir, `output ${out}`);
  }
  return { name, source: source || "published by hand", outputs: { ...req.outputs } };
}

/** Validates an UnpublishPackage request. */
export function unpublishRequestFromWire(req: wire.UnpublishPackageRequest): { name: string } {
  return { name: checkName(req.name) };
}
