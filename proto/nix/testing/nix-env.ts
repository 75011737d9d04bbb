// Test helper: a private, relocated Nix 2.8 store under a temp dir, plus the
// ability to run Nix against a FRESH store at the SAME store path (a second
// machine) via `unshare -m` + a bind mount over the store's parent directory.

import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";

/** A private Nix installation rooted at `dir`. */
export interface TestNixEnv {
  dir: string;
  /** The directory holding store/ and var/; other roots get bind-mounted here. */
  nixRoot: string;
  storeDir: string;
  env: Record<string, string>;
}

/** Result of one Nix command. */
export interface NixRun {
  stdout: Buffer;
  stderr: string;
}

async function makeRootLayout(root: string): Promise<void> {
  for (const d of ["store", "var/nix", "var/log/nix"]) await mkdir(join(root, d), { recursive: true });
}

/** Creates a private Nix env in a new temp dir; `extraConf` lines go into its nix.conf. */
export async function makeNixEnv(extraConf = ""): Promise<TestNixEnv> {
  const dir = await mkdtemp("/tmp/farm-cache-nix-");
  const nixRoot = join(dir, "nix");
  await makeRootLayout(nixRoot);
  await mkdir(join(dir, "etc"));
  await writeFile(
    join(dir, "etc/nix.conf"),
    `sandbox = false\nbuild-users-group =\nsubstituters =\nexperimental-features = nix-command\n${extraConf}`,
  );
  const env = {
    NIX_STORE_DIR: join(nixRoot, "store"),
    NIX_STATE_DIR: join(nixRoot, "var/nix"),
    NIX_LOG_DIR: join(nixRoot, "var/log/nix"),
    NIX_CONF_DIR: join(dir, "etc"),
    NIX_REMOTE: "",
    HOME: join(dir, "home"),
    XDG_CACHE_HOME: join(dir, "xdg-cache"),
    PATH: process.env.PATH ?? "/usr/bin:/bin",
  };
  return { dir, nixRoot, storeDir: env.NIX_STORE_DIR, env };
}

/** Creates another empty root that can stand in for `nixRoot` inside a mount namespace. */
export async function makeAltRoot(nix: TestNixEnv, label: string): Promise<string> {
  const root = join(nix.dir, `alt-${label}`);
  await makeRootLayout(root);
  return root;
}

/**
 * Runs a Nix command. With `altRoot`, it runs in a private mount namespace where
 * `altRoot` is bind-mounted over `nixRoot`: same store path, different contents.
 */
export async function runNix(nix: TestNixEnv, cmd: string, args: string[], opts: { input?: Uint8Array; altRoot?: string } = {}): Promise<NixRun> {
  const [file, argv] = opts.altRoot
    ? ["unshare", ["-m", "--propagation", "private", "sh", "-c", 'mount --bind "$0" "$1" && shift 2 && exec "$@"', opts.altRoot, nix.nixRoot, "--", cmd, ...args]]
    : [cmd, args];
  const r = await execa(file, argv, { env: nix.env, extendEnv: false, input: opts.input, encoding: "buffer", stripFinalNewline: false, reject: false });
  const stderr = Buffer.from(r.stderr as Uint8Array).toString();
  if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.exitCode}): ${stderr}`);
  return { stdout: Buffer.from(r.stdout as Uint8Array), stderr };
}

/** Runs a Nix command and returns its trimmed stdout lines. */
export async function nixLines(nix: TestNixEnv, cmd: string, args: string[], opts: { altRoot?: string } = {}): Promise<string[]> {
  const { stdout } = await runNix(nix, cmd, args, opts);
  return stdout.toString().split("\n").map((l) => l.trim()).filter(Boolean);
}

/** A dependency (dir with bin/, symlinks, empty dir) and an app that references it, plus single-file and symlink outputs. */
export const TEST_EXPR = `
let
  mk = name: script: builtins.derivation {
    inherit name; system = "x86_64-linux"; builder = "/bin/sh";
    args = [ "-c" script ]; PATH = "/usr/bin:/bin";
  };
in rec {
  dep = mk "farm-test-dep-1.0" ''
    mkdir -p $out/bin $out/share/sub $out/share/emptydir
    echo hello > $out/share/greeting
    printf '#!/bin/sh\\necho hi from dep\\n' > $out/bin/dep-hello
    chmod +x $out/bin/dep-hello
    ln -s ../share/greeting $out/share/link
    touch $out/share/sub/empty
    head -c 100000 /dev/zero | tr '\\0' 'x' > $out/share/big
  '';
  app = mk "farm-test-app" ''
    mkdir -p $out/bin
    printf '#!/bin/sh\\nexec ${"$"}{dep}/bin/dep-hello\\n' > $out/bin/app-hello
    chmod +x $out/bin/app-hello
    echo ${"$"}{dep} > $out/dep-path
  '';
  file = mk "farm-test-file" "echo just-a-file > $out";
  link = mk "farm-test-link" "ln -s /bin/sh $out";
}
`;

/** Writes TEST_EXPR and builds `attr`, returning the output path. */
export async function buildTestAttr(nix: TestNixEnv, attr: string): Promise<string> {
  const expr = join(nix.dir, "test.nix");
  await writeFile(expr, TEST_EXPR);
  const [out] = await nixLines(nix, "nix-build", [expr, "-A", attr, "--no-out-link", "--quiet"]);
  return out;
}

/** Removes the env's temp dir (store files are read-only, so make them writable first). */
export async function destroyNixEnv(nix: TestNixEnv): Promise<void> {
  await execa("chmod", ["-R", "u+w", nix.dir], { reject: false });
  await rm(nix.dir, { recursive: true, force: true });
}
