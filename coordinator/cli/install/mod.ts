// Installing cached outputs into a local Nix store without Nix: download,
// verify and unpack their closure (`farm install`).
//
// Why under cli/: only the CLI installs; the coordinator's cache server and the
// worker (which substitutes through Nix itself) never do. The cache formats it
// reads are shared and live in proto/nix/.
export { installPaths } from "./install-paths.js";
