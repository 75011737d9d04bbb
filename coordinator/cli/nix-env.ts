// Where the submitter's Nix keeps things for the farm's store dir. Nix finds
// its state and logs from NIX_STATE_DIR / NIX_LOG_DIR; by convention they sit
// beside the store: /tmp/nix/store -> /tmp/nix/var/nix, /tmp/nix/var/log/nix.
import path from "node:path";

/** Environment for running stock Nix against the farm's store dir. */
export interface SubmitterNixEnv {
  storeDir: string;
  stateDir: string;
  logDir: string;
  env: NodeJS.ProcessEnv;
}

/** Derives state and log dirs from the store dir unless the environment sets them. */
export function nixEnvFor(storeDir: string, base: NodeJS.ProcessEnv = process.env): SubmitterNixEnv {
  const root = path.dirname(storeDir);
  const stateDir = base.NIX_STATE_DIR || path.join(root, "var", "nix");
  const logDir = base.NIX_LOG_DIR || path.join(root, "var", "log", "nix");
  return {
    storeDir,
    stateDir,
    logDir,
    env: { ...base, NIX_STORE_DIR: storeDir, NIX_STATE_DIR: stateDir, NIX_LOG_DIR: logDir, USER: base.USER || "app" },
  };
}
