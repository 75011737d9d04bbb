// Relocates the Nix installed on this machine into store paths of the farm's
// store dir, the way the seed's "nix (a) installs nix (b)" did it: the binary,
// every shared library it loads and the dynamic loader are copied, and
// patchelf points the binary's interpreter and rpath at the copies, so the
// result loads nothing from the host it later runs on (an old distro with
// another glibc). Three content-addressed paths, none referring to itself:
//
//   <h1>-nix-libs-V        lib/: the loader and the libraries (rpath $ORIGIN);
//                          bin/syscall-compat (static; see syscall-compat.c)
//   <h2>-nix-unwrapped-V   bin/nix and its nix-* names; interpreter, rpath -> h1
//   <h3>-nix-V             bin/nix-*: sh wrappers defaulting NIX_STORE_DIR etc.
//                          to the farm's layout, then exec h2 through
//                          syscall-compat (the one users and workers run)
//
// Each path's name is its own NAR hash plus its references, so the cache can
// check it from the bytes alone, as it does for every submitter's source.

import { copyFile, chmod, mkdir, readdir, realpath, rm, stat, symlink, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { basename, dirname, join } from "node:path";
import { execa } from "execa";
import type { Logger } from "pino";
import { InvalidInputError } from "../../core/errors.js";
import { dumpPath, HashCounter, makeSourceStorePath, parseNixVersion, parseSha256 } from "../../../proto/nix/mod.js";

/** One relocated store path, built in a work dir, ready to upload. */
export interface RelocatedPath {
  storePath: string;
  /** Where its tree is on this machine now. */
  dir: string;
  /** Full store paths it refers to. */
  references: string[];
  narHash: string;
  narSize: number;
}

/** The relocated Nix: its paths in dependency order; the last is the one users run. */
export interface RelocatedNix {
  version: string;
  paths: RelocatedPath[];
  /** The wrapper path (`<h3>-nix-V`): its bin/ has nix-store, nix-build, ... */
  main: RelocatedPath;
}

/** What to relocate and where to. */
export interface RelocateOptions {
  /** The host's `nix` binary (or a nix-* link to it). */
  nixBinary: string;
  storeDir: string;
  /** An empty scratch dir of ours. */
  workDir: string;
  logger: Logger;
  patchelf?: string;
}

/** The names Nix answers to (argv[0] picks the command). */
export const NIX_COMMANDS = ["nix", "nix-build", "nix-channel", "nix-collect-garbage", "nix-copy-closure", "nix-env", "nix-hash", "nix-instantiate", "nix-prefetch-url", "nix-shell", "nix-store"] as const;

/** The settings the relocated Nix starts from (NIX_CONF_DIR's default). */
export const DEFAULT_NIX_CONF = ["# tmpnix farm: Nix without root, namespaces or build users.", "sandbox = false", "build-users-group =", ""].join("\n");

/** Parses `ldd` output into the loader and the libraries (soname -> host file). */
export function parseLdd(text: string): { loader?: string; libs: Map<string, string> } {
  const libs = new Map<string, string>();
  let loader: string | undefined;
  for (const line of text.split("\n")) {
    const arrow = /^\s*(\S+)\s+=>\s+(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (arrow) {
      libs.set(arrow[1], arrow[2]);
      continue;
    }
    if (/=>\s+not found/.test(line)) throw new InvalidInputError(`the host's Nix misses a library: ${line.trim()}`);
    const bare = /^\s*(\/\S+)\s+\(0x[0-9a-f]+\)/.exec(line);
    if (bare) loader = bare[1];
  }
  return { loader, libs };
}

/** The wrapper script for one command: farm-layout defaults (overridable), then the relocated binary. */
export function wrapperScript(command: string, unwrapped: string, storeDir: string, version: string, compat?: string): string {
  const root = dirname(storeDir);
  return [
    "#!/bin/sh",
    `# Nix ${version}, relocated by tmpnix farm to run from ${storeDir} without root.`,
    `: "\${NIX_STORE_DIR:=${storeDir}}" "\${NIX_STATE_DIR:=${root}/var/nix}" "\${NIX_LOG_DIR:=${root}/var/log/nix}" "\${NIX_CONF_DIR:=${unwrapped}/etc/nix}"`,
    `NIX_BIN_DIR=${unwrapped}/bin NIX_LIBEXEC_DIR=${unwrapped}/libexec`,
    "export NIX_STORE_DIR NIX_STATE_DIR NIX_LOG_DIR NIX_CONF_DIR NIX_BIN_DIR NIX_LIBEXEC_DIR",
    `exec ${compat ? `${compat} ` : ""}${unwrapped}/bin/${command} "$@"`,
    "",
  ].join("\n");
}

/** Relocates the host's Nix into three store paths under `opts.workDir`. */
export async function relocateHostNix(opts: RelocateOptions): Promise<RelocatedNix> {
  const patchelf = opts.patchelf ?? "patchelf";
  const binary = await realpath(opts.nixBinary).catch(() => {
    throw new InvalidInputError(`no Nix at ${opts.nixBinary}: install one (Debian: apt-get install nix-bin) or pass --from a store path the farm built`);
  });
  await execa(patchelf, ["--version"]).catch(() => {
    throw new InvalidInputError(`relocating Nix needs patchelf (Debian: apt-get install patchelf)`);
  });
  // Its dirs in our scratch dir: with the compiled-in defaults, Nix run as root sets up /nix/var even for --version.
  const scratch = join(opts.workDir, "nix-query");
  const queryEnv = { PATH: "/usr/bin:/bin", NIX_STORE_DIR: join(scratch, "store"), NIX_STATE_DIR: join(scratch, "state"), NIX_LOG_DIR: join(scratch, "log"), HOME: scratch };
  const version = parseNixVersion((await execa(binary, ["--version"], { env: queryEnv, extendEnv: false })).stdout);
  const { loader, libs } = parseLdd((await execa("ldd", [binary])).stdout);
  if (!loader) throw new InvalidInputError(`ldd names no dynamic loader for ${binary}: is it a dynamically linked ELF?`);
  // glibc loads NSS modules (user and host lookups) with dlopen, which ldd can't see; libc's rpath
  // ($ORIGIN, below) finds them beside it, so ship the host glibc's own, with what they need.
  const libcDir = dirname(libs.get("libc.so.6") ?? loader);
  for (const nss of (await readdir(libcDir)).filter((n) => /^libnss_\w+\.so\.2$/.test(n)).sort()) {
    const file = join(libcDir, nss);
    libs.set(nss, file);
    for (const [soname, dep] of parseLdd((await execa("ldd", [file])).stdout).libs) if (!libs.has(soname)) libs.set(soname, dep);
  }
  opts.logger.info({ binary, version, libraries: libs.size, loader }, "relocating the host's Nix");

  // 1. The loader and libraries; each finds its neighbours through $ORIGIN.
  const libsDir = join(opts.workDir, "libs");
  await mkdir(join(libsDir, "lib"), { recursive: true });
  const loaderName = basename(loader);
  await copyInto(loader, join(libsDir, "lib", loaderName));
  for (const [soname, file] of [...libs].sort()) {
    const to = join(libsDir, "lib", soname);
    await copyInto(file, to);
    await execa(patchelf, ["--force-rpath", "--set-rpath", "$ORIGIN", to]);
  }
  const compat = await buildSyscallCompat(join(libsDir, "bin"), opts.logger);
  const libsPath = await seal(libsDir, `nix-libs-${version}`, [], opts.storeDir);

  // 2. The binary, pointed at them; the nix-* names are links, as in every Nix install.
  const unwrappedDir = join(opts.workDir, "unwrapped");
  await mkdir(join(unwrappedDir, "bin"), { recursive: true });
  await mkdir(join(unwrappedDir, "libexec", "nix"), { recursive: true });
  const nix = join(unwrappedDir, "bin", "nix");
  await copyInto(binary, nix);
  await execa(patchelf, ["--set-interpreter", `${libsPath.storePath}/lib/${loaderName}`, "--force-rpath", "--set-rpath", `${libsPath.storePath}/lib`, nix]);
  for (const c of NIX_COMMANDS) if (c !== "nix") await symlink("nix", join(unwrappedDir, "bin", c));
  await symlink("../../bin/nix", join(unwrappedDir, "libexec", "nix", "build-remote"));
  // The hosts it is for have no namespaces and no build users; users add their own settings in ~/.config/nix/nix.conf.
  await mkdir(join(unwrappedDir, "etc", "nix"), { recursive: true });
  await writeFile(join(unwrappedDir, "etc", "nix", "nix.conf"), DEFAULT_NIX_CONF);
  const unwrappedPath = await seal(unwrappedDir, `nix-unwrapped-${version}`, [libsPath.storePath], opts.storeDir);

  // 3. What users and workers run.
  const mainDir = join(opts.workDir, "main");
  await mkdir(join(mainDir, "bin"), { recursive: true });
  for (const c of NIX_COMMANDS) {
    const file = join(mainDir, "bin", c);
    await writeFile(file, wrapperScript(c, unwrappedPath.storePath, opts.storeDir, version, compat ? `${libsPath.storePath}/bin/syscall-compat` : undefined));
    await chmod(file, 0o555);
  }
  const mainPath = await seal(mainDir, `nix-${version}`, compat ? [libsPath.storePath, unwrappedPath.storePath] : [unwrappedPath.storePath], opts.storeDir);
  return { version, paths: [libsPath, unwrappedPath, mainPath], main: mainPath };
}

/** The C source of the syscall-compat launcher: beside this module, or (run from dist/) in the source tree. */
const COMPAT_SOURCE = [new URL("./syscall-compat.c", import.meta.url), new URL("../../../../coordinator/cli/publish-nix/syscall-compat.c", import.meta.url)]
  .map((u) => fileURLToPath(u))
  .find((f) => existsSync(f)) ?? "syscall-compat.c";

/**
 * Compiles syscall-compat statically into `binDir` with the host's cc. Without
 * a compiler (or a static libc) the Nix still works everywhere but on hosts
 * that answer clone3 with EPERM; say so and go on.
 */
async function buildSyscallCompat(binDir: string, logger: Logger): Promise<boolean> {
  await mkdir(binDir, { recursive: true });
  try {
    await execa("cc", ["-static", "-O2", "-o", join(binDir, "syscall-compat"), COMPAT_SOURCE]);
    return true;
  } catch (err) {
    logger.warn({ err: (err as Error).message.split("\n")[0] }, "no syscall-compat (needs cc and a static libc, Debian: gcc libc6-dev): this Nix will fail on hosts that deny clone3 with EPERM");
    await rm(binDir, { recursive: true, force: true });
    return false;
  }
}

/** Copies a file's bytes (following links) and makes the copy writable for patchelf. */
async function copyInto(from: string, to: string): Promise<void> {
  await copyFile(from, to);
  await chmod(to, (await stat(from)).mode & 0o111 ? 0o755 : 0o644);
}

/** Makes a tree look as Nix stores it, hashes it, and names it by that hash and its references. */
async function seal(dir: string, name: string, references: string[], storeDir: string): Promise<RelocatedPath> {
  await canonicalModes(dir);
  const counter = new HashCounter();
  for await (const chunk of dumpPath(dir)) counter.update(chunk);
  const { hash, size } = counter.result();
  const storePath = makeSourceStorePath(parseSha256(hash), name, references, storeDir);
  return { storePath, dir, references, narHash: hash, narSize: size };
}

/**
 * Read-only files: a NAR records only the executable bit, but the files should match what it unpacks to.
 * Directories stay writable (unlike the store installer's canonicalize): the tree is copied and removed as scratch.
 */
async function canonicalModes(path: string): Promise<void> {
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const p = join(path, entry.name);
    if (entry.isSymbolicLink()) continue;
    if (entry.isDirectory()) await canonicalModes(p);
    else await chmod(p, (await stat(p)).mode & 0o111 ? 0o555 : 0o444);
  }
}
