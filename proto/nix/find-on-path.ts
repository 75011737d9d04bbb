// Finding a program on a PATH the way a shell would, minus what a shell
// forgives: only an executable regular file counts, so a program hidden by a
// bind mount of /dev/null (a bare container's host Nix in the tests) is absent.
import { accessSync, constants, statSync } from "node:fs";
import path from "node:path";

/** An executable regular file named `name` in a PATH list, or undefined. */
export function findOnPath(name: string, pathEnv: string): string | undefined {
  for (const dir of pathEnv.split(":").filter(Boolean)) {
    const file = path.join(dir, name);
    try {
      // A regular file: a name hidden under /dev/null (as a test's bare container does) is not a Nix.
      if (!statSync(file).isFile()) continue;
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}
