// `farm install` end to end against a real cache server over HTTP, no Nix.

import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { execa } from "execa";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { dumpPath, generateKeyPair, HashMismatchError, InsufficientSpaceError, NotInCacheError, UntrustedError } from "../../../proto/nix/mod.js";
import { installPaths } from "./install-paths.js";
import type { InstallProgress } from "../../../proto/nix/install/mod.js";
import { startTestCache, type TestCache } from "../../../test/fixtures/cache-server.js";
import { collect, narFromTree } from "../../../proto/nix/testing/nar-fixtures.js";
import { PlantedPathError, UnsafeStoreDirError, installRecordDir } from "../../../proto/nix/install/mod.js";

const log = pino({ level: "silent" });
let dir: string;
let storeDir: string;
let profileDir: string;
let cache: TestCache;
let DEP: string, APP: string, FILE: string, OLD: string;
let NARS: Record<string, Buffer>;

beforeEach(async () => {
  dir = await mkdtemp("/tmp/farm-install-test-");
  storeDir = join(dir, "store");
  profileDir = join(dir, "profile");
  DEP = `${storeDir}/72ijv89ar4x0cfhvvsj10r3gnyhvvrhb-dep-1.0`;
  APP = `${storeDir}/nax2bw8a4k63042ch9zsg5lyyj6356w1-app`;
  FILE = `${storeDir}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-file`;
  OLD = `${storeDir}/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-app-0.9`;
  NARS = {
    [DEP]: narFromTree({ dir: [
      ["bin", { dir: [["dep-hello", { file: "#!/bin/sh\necho hi\n", executable: true }]] }],
      ["share", { dir: [["greeting", { file: "hello\n" }], ["link", { symlink: "greeting" }]] }],
    ] }),
    [APP]: narFromTree({ dir: [
      ["bin", { dir: [["app-hello", { file: `#!/bin/sh\nexec ${DEP}/bin/dep-hello\n`, executable: true }], ["app-other", { symlink: "app-hello" }]] }],
    ] }),
    [FILE]: narFromTree({ file: "just a file\n" }),
  };
  cache = await startTestCache(storeDir);
  const client = cache.client();
  await client.upload({ storePath: DEP, references: [], narStream: [NARS[DEP]] });
  await client.upload({ storePath: APP, references: [DEP], narStream: [NARS[APP]] });
  await client.upload({ storePath: FILE, references: [], narStream: [NARS[FILE]] });
});

afterEach(async () => {
  await cache.close();
  await execa("chmod", ["-R", "u+w", dir]);
  await rm(dir, { recursive: true, force: true });
});

async function storeEntries(): Promise<string[]> {
  return (await readdir(storeDir).catch(() => [])).sort();
}

describe("installPaths", () => {
  it("installs the closure read-only, byte-exact, and links bin entries into the profile", async () => {
    const events: InstallProgress[] = [];
    const result = await installPaths({ client: cache.client(), storeDir, paths: [APP, FILE], profileDir, logger: log, onProgress: (p) => events.push(p) });
    expect(result.installed.sort()).toEqual([DEP, APP, FILE].sort());
    expect(result.alreadyPresent).toEqual([]);
    for (const p of [DEP, APP, FILE]) expect((await collect(dumpPath(p))).equals(NARS[p])).toBe(true);
    expect(await storeEntries()).toEqual([DEP, APP, FILE].map((p) => p.slice(storeDir.length + 1)).sort());
    const mode = async (p: string) => (await lstat(p)).mode & 0o777;
    expect(await mode(APP)).toBe(0o555);
    expect(await mode(`${DEP}/bin/dep-hello`)).toBe(0o555);
    expect(await mode(`${DEP}/share/greeting`)).toBe(0o444);
    expect(await mode(FILE)).toBe(0o444);
    expect((await lstat(`${DEP}/share/greeting`)).mtimeMs).toBe(1000);
    expect(await readlink(join(profileDir, "bin/app-hello"))).toBe(`${APP}/bin/app-hello`);
    expect(await readlink(join(profileDir, "bin/app-other"))).toBe(`${APP}/bin/app-other`);
    expect(await readdir(join(profileDir, "bin"))).toEqual(["app-hello", "app-other"]); // not the dependency's
    const { stdout } = await execa(join(profileDir, "bin/app-hello"));
    expect(stdout).toBe("hi");
    const phases = events.map((e) => e.phase).filter((p) => p !== "bytes");
    expect([phases[0], phases.at(-1)]).toEqual(["resolved", "linked"]);
    expect(phases.filter((p) => p === "installed")).toHaveLength(3);
    expect(events.at(-1)?.bytesDone).toBe(events.at(-1)?.bytesTotal);
    expect(events.at(-1)).toMatchObject({ done: 3, total: 3, bytesDone: events[0].bytesTotal });
  });

  it("skips paths already present and is idempotent", async () => {
    await installPaths({ client: cache.client(), storeDir, paths: [DEP], profileDir, logger: log });
    const again = await installPaths({ client: cache.client(), storeDir, paths: [APP], profileDir, logger: log });
    expect(again.installed).toEqual([APP]);
    const third = await installPaths({ client: cache.client(), storeDir, paths: [APP], profileDir, logger: log });
    expect(third).toEqual({ installed: [], alreadyPresent: [APP], linked: [], skippedLinks: [] });
  });

  it("replaces profile links it owns but never foreign files", async () => {
    await mkdir(join(profileDir, "bin"), { recursive: true });
    await symlink(`${OLD}/bin/app-hello`, join(profileDir, "bin/app-hello"));
    await writeFile(join(profileDir, "bin/app-other"), "user's own script");
    const result = await installPaths({ client: cache.client(), storeDir, paths: [APP], profileDir, logger: log });
    expect(await readlink(join(profileDir, "bin/app-hello"))).toBe(`${APP}/bin/app-hello`);
    expect(await readFile(join(profileDir, "bin/app-other"), "utf8")).toBe("user's own script");
    expect(result.linked).toEqual([join(profileDir, "bin/app-hello")]);
    expect(result.skippedLinks).toEqual([join(profileDir, "bin/app-other")]);
  });

  it("refuses a cache signed by an untrusted key and writes nothing", async () => {
    const client = cache.client({ trustedPublicKeys: [generateKeyPair("someone-else").publicKey] });
    await expect(installPaths({ client, storeDir, paths: [APP], profileDir, logger: log })).rejects.toBeInstanceOf(UntrustedError);
    expect(await storeEntries()).toEqual([]);
  });

  it("refuses a tampered NAR and leaves no partial path or temp dir", async () => {
    const client = cache.client();
    const info = (await client.narInfo(APP))!;
    const evil = narFromTree({ dir: [["bin", { dir: [["app-hello", { file: "#!/bin/sh\nrm -rf ~\n", executable: true }]] }]] });
    await writeFile(join(cache.root, info.url), info.compression === "gzip" ? gzipSync(evil) : evil); // as the cache stored it
    await expect(installPaths({ client, storeDir, paths: [APP], profileDir, logger: log })).rejects.toBeInstanceOf(HashMismatchError);
    // The dependency was complete and verified, so it may stay; the tampered path must not.
    expect(await storeEntries()).toEqual([DEP.slice(storeDir.length + 1)]);
    await expect(lstat(join(profileDir, "bin"))).rejects.toThrow(/ENOENT/);
  });

  it("checks free space before downloading anything", async () => {
    const run = installPaths({ client: cache.client(), storeDir, paths: [APP], profileDir, logger: log, freeBytes: async () => 100 });
    await expect(run).rejects.toBeInstanceOf(InsufficientSpaceError);
    await expect(run).rejects.toThrow(/needs .* MiB .* only .* MiB is free/);
    expect(await storeEntries()).toEqual([]);
  });

  it("refuses a store dir another user owns, and one others can write, with one line each", async () => {
    await mkdir(storeDir);
    await chown(storeDir, 65534, 65534);
    const owned = installPaths({ client: cache.client(), storeDir, paths: [APP], profileDir, logger: log });
    await expect(owned).rejects.toBeInstanceOf(UnsafeStoreDirError);
    await expect(owned).rejects.toThrow(`refusing ${storeDir}: it belongs to uid 65534, not to you`);
    await chown(storeDir, 0, 0);
    await chmod(storeDir, 0o1777);
    await expect(installPaths({ client: cache.client(), storeDir, paths: [APP], profileDir, logger: log })).rejects.toThrow(
      new RegExp(`^refusing ${storeDir}: other users can write it \\(mode 1777\\).*chmod go-w ${storeDir}`),
    );
    await chmod(dir, 0o777); // the parent (the Nix root) counts too
    await expect(installPaths({ client: cache.client(), storeDir, paths: [APP], profileDir, logger: log })).rejects.toThrow(`refusing ${dir}: other users can write it`);
    expect(await storeEntries()).toEqual([]);
  });

  it("uses a present path it did not record only if its bytes are the signed ones", async () => {
    await installPaths({ client: cache.client(), storeDir, paths: [DEP], profileDir, logger: log });
    // The same bytes put there some other way (say, by stock Nix): verified, recorded, reused.
    await rm(installRecordDir(storeDir), { recursive: true });
    const same = await installPaths({ client: cache.client(), storeDir, paths: [DEP], profileDir, logger: log });
    expect(same.alreadyPresent).toEqual([DEP]);
    expect(await readdir(installRecordDir(storeDir))).toEqual([`${DEP.slice(storeDir.length + 1)}.narinfo`]);
    // Different bytes under the app's name: refused, never linked.
    await mkdir(join(APP, "bin"), { recursive: true });
    await writeFile(join(APP, "bin/app-hello"), "#!/bin/sh\necho planted\n", { mode: 0o755 });
    const planted = installPaths({ client: cache.client(), storeDir, paths: [APP], profileDir, logger: log });
    await expect(planted).rejects.toBeInstanceOf(PlantedPathError);
    await expect(planted).rejects.toThrow(`${APP} is in the store but is not the farm's signed build`);
    await expect(lstat(join(profileDir, "bin/app-hello"))).rejects.toThrow(/ENOENT/);
  });

  it("never links a bin/ that leads out of its store path", async () => {
    const EVIL = `${storeDir}/1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r6s-evil`;
    await cache.client().upload({ storePath: EVIL, references: [], narStream: [narFromTree({ dir: [["bin", { symlink: "/usr/bin" }]] })] });
    const result = await installPaths({ client: cache.client(), storeDir, paths: [EVIL, APP], profileDir, logger: log });
    expect(result.installed).toContain(EVIL);
    expect(await readdir(join(profileDir, "bin"))).toEqual(["app-hello", "app-other"]);
  });

  it("reports paths the cache does not have", async () => {
    const missing = `${storeDir}/2h9i448h1w70s30b184hh1q60l2060h1-missing`;
    await expect(installPaths({ client: cache.client(), storeDir, paths: [missing], profileDir, logger: log })).rejects.toBeInstanceOf(NotInCacheError);
  });
});
