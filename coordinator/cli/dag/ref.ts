// What a user may submit: `nixpkgs#attr.path`, `./file.nix#attr.path`,
// `/abs/file.nix#` (empty attr = the file's own value) or `./file.nix`.

import { InvalidInputError } from "../../core/errors.js";

/** A parsed user reference: a nixpkgs attribute or an attribute of a Nix file. */
export type BuildRef =
  | { kind: "nixpkgs"; attrPath: string; text: string }
  | { kind: "file"; file: string; attrPath: string; text: string };

/** Parses `nixpkgs#attr`, `FILE#attr`, `FILE#` or `FILE`; rejects anything else with one line. */
export function parseRef(text: string): BuildRef {
  const hash = text.indexOf("#");
  const head = hash < 0 ? text : text.slice(0, hash);
  const attrPath = hash < 0 ? "" : text.slice(hash + 1);
  checkAttrPath(text, attrPath);
  if (head === "nixpkgs") {
    if (attrPath === "") throw new InvalidInputError(`reference '${text}' names no attribute: use nixpkgs#ATTR, e.g. nixpkgs#hello`);
    return { kind: "nixpkgs", attrPath, text };
  }
  if (looksLikePath(head)) return { kind: "file", file: head, attrPath, text };
  throw new InvalidInputError(
    `cannot understand reference '${text}': use nixpkgs#ATTR, ./FILE.nix#ATTR or /abs/FILE.nix# (a file path must start with ./, ../ or /, or end in .nix)`,
  );
}

function looksLikePath(s: string): boolean {
  return s.startsWith("/") || s.startsWith("./") || s.startsWith("../") || s === "." || s === ".." || s.endsWith(".nix");
}

// Nix's -A accepts quoted segments too; we keep to what can be typed on a
// command line without quoting, plus `"` quoted segments without dots inside.
const SEGMENT = /^(?:[A-Za-z0-9_'+-]+|"[^".]+")$/;

function checkAttrPath(text: string, attrPath: string): void {
  if (attrPath === "") return;
  for (const seg of attrPath.split(".")) {
    if (!SEGMENT.test(seg)) {
      throw new InvalidInputError(`bad attribute path '${attrPath}' in reference '${text}'`);
    }
  }
}

/** How the reference reads in messages: the file part for files, `nixpkgs` otherwise. */
export function refSourceLabel(ref: BuildRef): string {
  return ref.kind === "file" ? ref.file : "nixpkgs";
}
