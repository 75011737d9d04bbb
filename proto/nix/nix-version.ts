// What `nix-store --version` says, read the one way the worker and publish-nix both need.
import { InvalidInputError } from "../errors.js";

/** `nix (Nix) 2.8.0` -> `2.8.0`. */
export function parseNixVersion(text: string): string {
  const m = /\(Nix\)\s+(\d[\w.+-]*)/.exec(text);
  if (!m) throw new InvalidInputError(`cannot read a Nix version from '${text.trim().slice(0, 80)}'`);
  return m[1];
}
