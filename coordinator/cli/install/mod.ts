// `farm install`: the closure is installed by proto/nix/install (shared with a
// worker that bootstraps its Nix); what only the CLI does, linking programs
// into the user's profile, lives here.
export { installPaths } from "./install-paths.js";
