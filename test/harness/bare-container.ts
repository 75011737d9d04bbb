// A "bare container" as the farm's workers and users meet it: no Nix at all.
// The host's Nix (its binary with every nix-* name, its own libraries and its
// libexec) is hidden by bind mounts in the process's namespace only, nothing on
// the host changes; isolate.sh adds the empty /tmp/nix, the unprivileged uid
// and a memory cgroup the test sets from outside.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

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

/** The Glitch kit's .env template: the only settings a bare container's worker gets. */
export const KIT_ENV = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../deploy/glitch/env.example");

/** Every variable the kit's .env names, set or commented out. */
export function kitEnvNames(): Set<string> {
  return new Set([...readFileSync(KIT_ENV, "utf8").matchAll(/^#?\s*([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));
}

/** The environment a bare container starts with: `env -i`, a PATH that finds node, and `vars`, each one the kit's .env names. */
export function bareEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  const known = kitEnvNames();
  const foreign = Object.keys(vars).filter((k) => !known.has(k));
  if (foreign.length) throw new Error(`a bare container gets only what deploy/glitch/env.example names, not ${foreign.join(", ")}`);
  return { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin`, ...vars };
}
