// Named errors for turning a reference into a DAG, and the mapping from Nix's
// multi-line stderr to one line a user can act on.

import { FarmError, InvalidInputError } from "../../core/errors.js";

/** The attribute path names nothing in the file or in nixpkgs. */
export class UnknownAttributeError extends InvalidInputError {}

/** Nix could not evaluate the expression (syntax error, throw, type error, ...). */
export class EvaluationError extends InvalidInputError {}

/** The Nix file (or nixpkgs path) of a reference does not exist. */
export class MissingFileError extends InvalidInputError {}

/** nix-instantiate / nix-store are not installed or not on PATH. */
export class NixNotInstalledError extends FarmError {}

// Nix 2.8 says "attribute 'x' in selection path 'a.x' not found"; other
// versions and `nix eval` say "attribute 'x' missing".
const MISSING_ATTR = /attribute '([^']*)'(?: in selection path '([^']*)')? (?:not found|missing)/;
const DID_YOU_MEAN = /Did you mean (.+?)\??$/m;
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

/**
 * Classifies Nix's stderr from a failed evaluation. `source` is how the user
 * wrote the file (or `nixpkgs`), `attrPath` the attribute they asked for.
 */
export function nixEvalError(stderr: string, source: string, attrPath: string): InvalidInputError {
  const text = stderr.replace(ANSI, "");
  const missing = MISSING_ATTR.exec(text);
  if (missing) {
    const [, attr, selection] = missing;
    let line = `unknown attribute '${attr}' in ${source}`;
    if (selection !== undefined && selection !== attr) line += ` (selecting '${selection}')`;
    const hint = DID_YOU_MEAN.exec(text);
    if (hint) line += ` (did you mean ${hint[1].trim()}?)`;
    return new UnknownAttributeError(line, { cause: new Error(text) });
  }
  const what = attrPath === "" ? source : `${source}#${attrPath}`;
  return new EvaluationError(`evaluation of ${what} failed: ${firstErrorLine(text)}`, { cause: new Error(text) });
}

/** The first `error:` message of Nix output (the line after it if that line is bare), or the first non-empty line. */
export function firstErrorLine(text: string): string {
  const lines = text.replace(ANSI, "").split("\n");
  const i = lines.findIndex((l) => /^\s*error:/.test(l));
  if (i < 0) return lines.map((l) => l.trim()).find((l) => l !== "" && !l.startsWith("warning:")) ?? "unknown error (no output from Nix)";
  const msg = lines[i].replace(/^\s*error:\s*/, "").trim();
  if (msg !== "") return msg;
  return lines.slice(i + 1).map((l) => l.trim()).find((l) => l !== "") ?? "unknown error";
}
