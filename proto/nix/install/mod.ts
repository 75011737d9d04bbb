// Installing cached paths into a local store dir with no Nix: download, verify
// (signature, NarHash) and unpack a closure atomically. `farm install` links a
// profile on top of it; a worker with no Nix installs the farm's Nix with it.
export { claimStoreDir, installRecordDir, PlantedPathError, UnsafeStoreDirError, verifyPresentPath, wasRecorded } from "./install-trust.js";
export { installClosure, removeTree, type ClosureInstallOptions, type ClosureInstallResult, type InstallProgress, type InstallSource } from "./store-install.js";
export { base16Hash, NixDbBusyError, NixDbSchemaError, nixStateDirOf, registerValidPaths, unregisterPaths, validPaths, type ValidPath } from "./nix-db.js";
