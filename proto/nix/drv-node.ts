// Turns a parsed .drv into the farm's DrvNode: the few env attributes that
// change how and where a derivation may be built, decoded the way Nix does.
// The coordinator also checks a submitted node against its .drv here: the path
// must be the one Nix gives that text, so the .drv, not the submitter, decides
// what a derivation builds and which outputs it has.

import { InvalidInputError } from "../errors.js";
import type { DrvNode, DrvPath } from "../types.js";
import { createHash } from "node:crypto";
import { type AtermDerivation, parseDerivation } from "./aterm.js";
import { makeStorePath, storeDirOf } from "./store-path.js";

/** Splits a derivation name like Nix's builtins.parseDrvName: the version starts after the first `-` not followed by a letter. */
export function parseDrvName(name: string): { pname: string; version: string } {
  for (let i = 0; i < name.length - 1; i++) {
    if (name[i] === "-" && !/[A-Za-z]/.test(name[i + 1])) {
      return { pname: name.slice(0, i), version: name.slice(i + 1) };
    }
  }
  return { pname: name, version: "" };
}

/** Parses a .drv file's text and converts it to a DrvNode. */
export function drvNodeFromText(drvPath: DrvPath, text: string): DrvNode {
  return drvNodeFromAterm(drvPath, parseDerivation(text, drvPath));
}

/**
 * The store path Nix gives a .drv with this text: a text path named after the
 * derivation, whose references are its input sources and input derivations.
 */
export function derivationPathOf(text: string, drv: AtermDerivation, name: string, storeDir: string): DrvPath {
  const references = [...new Set([...drv.inputSrcs, ...drv.inputDrvs.map((i) => i.path)])].sort();
  const sha256 = createHash("sha256").update(text).digest();
  return makeStorePath(["text", ...references].join(":"), sha256, `${name}.drv`, storeDir);
}

/** Parses a .drv that claims to live at `drvPath` and checks that its text really is that path's. */
export function verifiedDrvNode(drvPath: DrvPath, text: string): DrvNode {
  const drv = parseDerivation(text, drvPath);
  const node = drvNodeFromAterm(drvPath, drv);
  const actual = derivationPathOf(text, drv, node.name, storeDirOf(drvPath));
  if (actual !== drvPath) throw new InvalidInputError(`${drvPath}: the .drv stored under that path is the text of ${actual}`);
  return node;
}

/** Converts a parsed derivation to a DrvNode. */
export function drvNodeFromAterm(drvPath: DrvPath, drv: AtermDerivation): DrvNode {
  const attrs = readAttrs(drvPath, drv);
  const name = attrs.string("name") ?? nameFromDrvPath(drvPath);
  const split = parseDrvName(name);
  const outputs: Record<string, string> = {};
  for (const o of drv.outputs) outputs[o.name] = o.path;
  return {
    drvPath,
    name,
    pname: attrs.string("pname") ?? split.pname,
    version: attrs.string("version") ?? split.version,
    system: drv.system,
    outputs,
    inputDrvs: drv.inputDrvs.map((i) => ({ drvPath: i.path, outputs: [...i.outputs] })),
    inputSrcs: [...drv.inputSrcs],
    // Nix treats a derivation as fixed-output when its only output has a hash.
    fixedOutput: drv.outputs.length === 1 && drv.outputs[0].hash !== "",
    requiredSystemFeatures: attrs.stringList("requiredSystemFeatures"),
    preferLocalBuild: attrs.bool("preferLocalBuild", false),
    allowSubstitutes: attrs.bool("allowSubstitutes", true),
    enableParallelBuilding: attrs.bool("enableParallelBuilding", false),
  };
}

/** `/store/<32-char hash>-<name>.drv` -> `<name>`; used when no name attribute exists. */
function nameFromDrvPath(drvPath: DrvPath): string {
  const base = drvPath.slice(drvPath.lastIndexOf("/") + 1).replace(/\.drv$/, "");
  return base.replace(/^[0-9a-z]{32}-/, "");
}

interface Attrs {
  string(key: string): string | undefined;
  stringList(key: string): string[];
  bool(key: string, dflt: boolean): boolean;
}

/**
 * Plain derivations put attributes in env as strings (booleans as "1"/"");
 * `__structuredAttrs` ones put them all as JSON in env `__json`.
 */
function readAttrs(drvPath: DrvPath, drv: AtermDerivation): Attrs {
  const json = drv.env.get("__json");
  if (json === undefined) {
    return {
      string: (k) => drv.env.get(k),
      stringList: (k) => (drv.env.get(k) ?? "").split(/\s+/).filter((s) => s !== ""),
      bool: (k, d) => {
        const v = drv.env.get(k);
        return v === undefined ? d : v === "1";
      },
    };
  }
  let obj: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(json);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
    obj = parsed as Record<string, unknown>;
  } catch (cause) {
    throw new InvalidInputError(`malformed derivation ${drvPath}: __json is not a JSON object`, { cause });
  }
  const bad = (k: string, want: string): never => {
    throw new InvalidInputError(`malformed derivation ${drvPath}: __json attribute ${k} is not ${want}`);
  };
  return {
    string: (k) => {
      const v = obj[k];
      if (v === undefined) return undefined;
      return typeof v === "string" ? v : bad(k, "a string");
    },
    stringList: (k) => {
      const v = obj[k];
      if (v === undefined) return [];
      return Array.isArray(v) && v.every((s) => typeof s === "string") ? (v as string[]) : bad(k, "a list of strings");
    },
    bool: (k, d) => {
      const v = obj[k];
      if (v === undefined) return d;
      return typeof v === "boolean" ? v : bad(k, "a boolean");
    },
  };
}
