// A "bare container" as the farm's workers and users meet it: no Nix at all.
// The host's Nix (its binary with every nix-* name, its own libraries and its
// libexec) is hidden by bind mounts in the process's namespace only, nothing on
// the host changes; isolate.sh adds the empty /tmp/nix, the unprivileged uid
// and a memory cgroup the test sets from outside.
import { execFileSync } from "node:child_process";
import { existsSync, realpathSync } from "node:fs";
import path from "node:path";

/** The uid a bare container runs as (nobody). */
export const BARE_UID = 65534;

/** Host paths to hide so no Nix binary, library or libexec file of the host is reachable. */
export function hostNixPaths(): string[] {
  const hidden = new Set<string>();
  let binary: string | undefined;
  try {
    binary = realpathSync(execFileSync("sh", ["-c", "command -v nix-store"], { encoding: "utf8" }).trim());
  } catch {
    return []; // no Nix on this host: nothing to hide
  }
  // /usr/bin/nix: every nix-* name is a link to it, so they all lead to the cover.
  hidden.add(binary);
  for (const line of execFileSync("ldd", [binary], { encoding: "utf8" }).split("\n")) {
    const m = /=>\s+(\/\S+)/.exec(line);
    if (m && path.basename(m[1]).startsWith("libnix")) hidden.add(path.dirname(realpathSync(m[1])));
  }
  for (const dir of ["/usr/libexec/nix", path.join(path.dirname(path.dirname(binary)), "libexec", "nix")]) if (existsSync(dir)) hidden.add(dir);
  return [...hidden].sort();
}

/** The environment a bare container starts with: `env -i` plus exactly `vars` and a PATH that finds node. */
export function bareEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin`, ...vars };
}
