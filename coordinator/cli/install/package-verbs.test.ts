// The package verbs against a real cache server (HTTP) and its signed index, no Nix.
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startTestCache, type TestCache } from "../../../test/fixtures/cache-server.js";
import { narFromTree } from "../../../proto/nix/testing/nar-fixtures.js";
import { PackageIndexWriter } from "../../cache/package-index-writer.js";
import { gc, installTargets, NotInIndexError, remove, rollback, upgrade, type VerbDeps } from "./package-verbs.js";
import { Profile, ProfileBusyError } from "./profile-generations.js";

const log = pino({ level: "silent" });
let dir: string, storeDir: string, cache: TestCache, writer: PackageIndexWriter, d: VerbDeps;
let LIB: string, V1: string, V2: string;

const app = (version: string) => narFromTree({ dir: [["bin", { dir: [["app", { file: `#!/bin/sh\necho app ${version}\n`, executable: true }]] }]] });

beforeEach(async () => {
  dir = await mkdtemp("/tmp/farm-verbs-test-");
  storeDir = join(dir, "nix", "store");
  LIB = `${storeDir}/72ijv89ar4x0cfhvvsj10r3gnyhvvrhb-lib-1.0`;
  V1 = `${storeDir}/nax2bw8a4k63042ch9zsg5lyyj6356w1-app-1.0`;
  V2 = `${storeDir}/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-app-2.0`;
  cache = await startTestCache(storeDir);
  const client = cache.client();
  await client.upload({ storePath: LIB, references: [], narStream: [narFromTree({ file: "lib\n".repeat(1000) })] });
  await client.upload({ storePath: V1, references: [LIB], narStream: [app("1.0")] });
  await client.upload({ storePath: V2, references: [LIB], narStream: [app("2.0")] });
  writer = new PackageIndexWriter({ storage: cache.storage, storeDir, secretKey: cache.keys.secretKey, publicKey: cache.keys.publicKey, logger: log });
  await writer.publish({ name: "app", outputs: { out: V1 }, source: "./apps.nix#app", jobId: "j1", builtAt: new Date(1) });
  const c = cache.client({ token: undefined });
  d = {
    profile: new Profile(join(dir, "home", "profile"), storeDir, log),
    storeDir,
    logger: log,
    source: c,
    index: async () => (await c.cacheInfo(), c.packageIndex()),
  };
});

afterEach(async () => {
  await cache.close();
  await execa("chmod", ["-R", "u+w", dir]);
  await rm(dir, { recursive: true, force: true });
});

const run = async (prog = "app") => (await execa(join(dir, "home", "profile", "bin", prog))).stdout;
const storeEntries = async () => (await readdir(storeDir)).sort();

describe("package verbs", () => {
  it("install by name, upgrade, rollback, remove, gc: each a generation, the last leaving the store empty", async () => {
    const first = await installTargets(d, ["app"]);
    expect(first.generation).toBe(1);
    expect(first.installed.sort()).toEqual([LIB, V1].sort());
    expect(await run()).toBe("app 1.0");
    expect((await d.profile.current()).packages).toMatchObject([{ name: "app", version: "1.0", source: "./apps.nix#app", fromIndex: true }]);

    expect((await upgrade(d, [])).change).toBeUndefined(); // nothing newer yet
    await writer.publish({ name: "app", outputs: { out: V2 }, source: "./apps.nix#app", jobId: "j2", builtAt: new Date(2) });
    const up = await upgrade(d, []);
    expect(up.plan.upgrades.map((u) => [u.from.version, u.to.version])).toEqual([["1.0", "2.0"]]);
    expect(up.change?.generation).toBe(2);
    expect(up.change?.installed).toEqual([V2]); // the library was there already
    expect(await run()).toBe("app 2.0");

    expect(await rollback(d)).toMatchObject({ from: 2, to: 1 });
    expect(await run()).toBe("app 1.0");
    expect((await gc(d, { dryRun: true, keepGenerations: true })).deleted).toEqual([]);

    const removed = await remove(d, ["app"]);
    expect(removed.generation).toBe(3);
    await expect(run()).rejects.toThrow();
    const dry = await gc(d, { dryRun: true, keepGenerations: false });
    expect(dry.deleted.sort()).toEqual([LIB, V1, V2].sort());
    expect(await storeEntries()).toHaveLength(3);
    const done = await gc(d, { dryRun: false, keepGenerations: false });
    expect(done.bytesFreed).toBeGreaterThan(4000);
    expect(done.generationsDeleted).toEqual([1, 2]);
    expect(await storeEntries()).toEqual([]);
    expect(await d.profile.generations()).toEqual([3]);
    await expect(rollback(d)).rejects.toThrow(/oldest/);
  });

  it("refuses a name the index lacks with one line and changes nothing", async () => {
    await expect(installTargets(d, ["nope"])).rejects.toThrow(NotInIndexError);
    await expect(installTargets(d, ["nope"])).rejects.toThrow(/^the farm's package index has no 'nope' \(see 'farm search'\)$/);
    expect(await d.profile.generations()).toEqual([]);
    expect(await readdir(storeDir).catch(() => [])).toEqual([]);
  });

  it("discards a half-made generation and takes over a dead command's lock", async () => {
    await installTargets(d, ["app"]);
    const gens = d.profile.generationsDir;
    await mkdir(join(gens, ".tmp-2-dead"), { recursive: true });
    const dead = await execa("sh", ["-c", "echo $$"]); // a pid that has exited
    await writeFile(join(gens, ".lock"), dead.stdout.trim());
    await installTargets(d, [V2]);
    expect((await readdir(gens)).sort()).toEqual(["1", "2"]);
    expect(await readlink(join(dir, "home", "profile"))).toBe("profile-generations/2");
    expect((await d.profile.current()).packages.map((p) => p.name)).toEqual(["app"]); // the store path replaced the name
  });

  it("refuses while a live command holds the profile", async () => {
    await mkdir(d.profile.generationsDir, { recursive: true });
    await writeFile(join(d.profile.generationsDir, ".lock"), String(process.ppid));
    await expect(installTargets(d, ["app"])).rejects.toThrow(ProfileBusyError);
    expect(await readFile(join(d.profile.generationsDir, ".lock"), "utf8")).toBe(String(process.ppid));
    expect(await d.profile.generations()).toEqual([]);
  });
});
