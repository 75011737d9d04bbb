// Checks on the paths and names that arrive in wire messages. These are the
// converter's own rules (a store path directly under the farm's store dir, a
// plausible name); proto/nix/store-path.ts holds Nix's full store path syntax.
import { InvalidInputError } from "../errors.js";

const HASH = "[0123456789abcdfghijklmnpqrsvwxyz]{32}";
const NAME = "[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]*";
const STORE_BASENAME = new RegExp(`^${HASH}-${NAME}$`);

/** Output names (`out`, `dev`, ...). */
export const OUTPUT_NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;
/** Nix system names (`x86_64-linux`). */
export const SYSTEM = /^[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*$/;

/** `s` cut to a length that is safe to put in an error message. */
export const truncate = (s: string) => (s.length > 120 ? `${s.slice(0, 117)}...` : s);

/** Whether `p` is a store path directly under `storeDir`. */
export function isStorePath(p: string, storeDir: string): boolean {
  return p.startsWith(storeDir + "/") && STORE_BASENAME.test(p.slice(storeDir.length + 1)) && p.length - storeDir.length < 220;
}

/** `p`, if it is a store path under `storeDir`; InvalidInputError naming `what` otherwise. */
export function requireStorePath(p: string, storeDir: string, what: string): string {
  if (!isStorePath(p, storeDir)) throw new InvalidInputError(`${what}: '${truncate(p)}' is not a store path under ${storeDir}`);
  return p;
}

/** `p`, if it is a `.drv` store path under `storeDir`; InvalidInputError naming `what` otherwise. */
export function requireDrvPath(p: string, storeDir: string, what: string): string {
  if (!isStorePath(p, storeDir) || !p.endsWith(".drv")) throw new InvalidInputError(`${what}: '${truncate(p)}' is not a .drv store path under ${storeDir}`);
  return p;
}
