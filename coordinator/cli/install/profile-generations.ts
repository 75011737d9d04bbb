// Profile generations on disk, like nix-env's: `<profile>` is a symlink to
// `<profile>-generations/N`, and each N is a complete manifest.json plus a
// bin/ of links into the store. A new generation is built as a dot-temp dir,
// renamed to N, and only then made current by renaming a fresh symlink over
// `<profile>`: a crash at any point leaves the previous generation current and
// working. Leftover temp dirs are discarded by the next command. One farm
// command changes a profile at a time (a lock file naming its pid; a dead
// holder's lock is taken over).
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { lstat, mkdir, open, readdir, readFile, readlink, rename, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Logger } from "pino";
import { FarmError, InvalidInputError } from "../../core/errors.js";
import { linkPrograms } from "./install-paths.js";
import { emptyManifest, MANIFEST_FORMAT, type InstalledPackage, type Manifest } from "./manifest.js";

/** Another farm command is changing this profile right now. */
export class ProfileBusyError extends FarmError {}

/** A generation that does not exist, or no generation to roll back to. */
export class NoSuchGenerationError extends InvalidInputError {}

const GEN_RE = /^[1-9][0-9]{0,8}$/;

/** Whether `pid` still runs: a SIGKILLed command stays a zombie until its reaper gets to it, and a zombie holds nothing. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== "ENOENT"; // gone meanwhile; otherwise trust the signal
  }
}

/** A user's profile and its generations. */
export class Profile {
  /** Where the generations live. */
  readonly generationsDir: string;

  constructor(readonly link: string, private readonly storeDir: string, private readonly logger: Logger) {
    this.generationsDir = `${link}-generations`;
  }

  private get lockFile(): string {
    return join(this.generationsDir, ".lock");
  }

  /** Takes the profile's lock (taking over a dead holder's); returns its release. */
  async lock(): Promise<() => Promise<void>> {
    await mkdir(this.generationsDir, { recursive: true });
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fh = await open(this.lockFile, "wx", 0o644);
        await fh.writeFile(String(process.pid));
        await fh.close();
        return () => unlink(this.lockFile).catch(() => undefined);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const pid = Number(await readFile(this.lockFile, "utf8").catch(() => "0"));
        if (pid > 0 && pid !== process.pid && alive(pid)) throw new ProfileBusyError(`another farm command (pid ${pid}) is changing ${this.link}; try again when it is done`);
        this.logger.warn({ pid }, "taking over the profile lock of a farm command that died");
        await unlink(this.lockFile).catch(() => undefined);
      }
    }
    throw new ProfileBusyError(`cannot lock ${this.link}`);
  }

  /** Discards half-made generations a crash left behind (call under the lock); returns their names. */
  async recover(): Promise<string[]> {
    const names = await readdir(this.generationsDir).catch(() => [] as string[]);
    const junk = names.filter((n) => n.startsWith(".tmp-"));
    for (const n of junk) await rm(join(this.generationsDir, n), { recursive: true, force: true });
    if (junk.length) this.logger.warn({ discarded: junk }, "discarded generations a crash left half-made");
    const linkTmp = (await readdir(dirname(this.link)).catch(() => [] as string[])).filter((n) => n.startsWith(`.${basename(this.link)}.tmp-`));
    for (const n of linkTmp) await unlink(join(dirname(this.link), n)).catch(() => undefined);
    return junk;
  }

  /** Generation numbers on disk, ascending. */
  async generations(): Promise<number[]> {
    const names = await readdir(this.generationsDir).catch(() => [] as string[]);
    return names.filter((n) => GEN_RE.test(n)).map(Number).sort((a, b) => a - b);
  }

  /** The current generation's number, or 0 when there is none yet. */
  async currentNumber(): Promise<number> {
    const target = await readlink(this.link).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return "";
      if (err.code === "EINVAL") throw new InvalidInputError(`${this.link} is not a farm profile (not a symlink); move it aside first`);
      throw err;
    });
    const n = basename(target);
    return GEN_RE.test(n) ? Number(n) : 0;
  }

  /** A generation's manifest. */
  async read(generation: number): Promise<Manifest> {
    const text = await readFile(join(this.generationsDir, String(generation), "manifest.json"), "utf8").catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") throw new NoSuchGenerationError(`${this.link} has no generation ${generation}`);
      throw err;
    });
    const m = JSON.parse(text) as Manifest;
    if (m.format !== MANIFEST_FORMAT) throw new InvalidInputError(`generation ${generation} of ${this.link} is not in format ${MANIFEST_FORMAT}`);
    return m;
  }

  /** The current manifest (an empty one before the first install). */
  async current(): Promise<Manifest> {
    const n = await this.currentNumber();
    return n === 0 ? emptyManifest() : this.read(n);
  }

  /** Builds a new generation holding `packages` and makes it current; call under the lock. */
  async commit(packages: InstalledPackage[], now = new Date()): Promise<{ generation: number; linked: string[]; skippedLinks: string[] }> {
    const generation = Math.max(0, await this.currentNumber(), ...(await this.generations())) + 1;
    const manifest: Manifest = { format: MANIFEST_FORMAT, generation, createdAt: now.toISOString(), packages };
    const tmp = join(this.generationsDir, `.tmp-${generation}-${randomBytes(4).toString("hex")}`);
    await mkdir(tmp, { recursive: true });
    const outs = packages.flatMap((p) => Object.values(p.outputs));
    const links = await linkPrograms(outs, join(tmp, "bin"), this.storeDir, this.logger);
    await writeFile(join(tmp, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
    await rename(tmp, join(this.generationsDir, String(generation)));
    await this.switchTo(generation);
    const rebase = (l: string) => join(this.link, "bin", basename(l));
    return { generation, linked: links.linked.map(rebase), skippedLinks: links.skippedLinks.map(rebase) };
  }

  /** Makes `generation` current by renaming a new symlink over the profile. */
  async switchTo(generation: number): Promise<void> {
    await this.read(generation);
    const tmp = join(dirname(this.link), `.${basename(this.link)}.tmp-${randomBytes(4).toString("hex")}`);
    await symlink(join(basename(this.generationsDir), String(generation)), tmp);
    const st = await lstat(this.link).catch(() => null);
    if (st && !st.isSymbolicLink()) {
      await unlink(tmp);
      throw new InvalidInputError(`${this.link} is not a farm profile (not a symlink); move it aside first`);
    }
    await rename(tmp, this.link);
  }

  /** The generation before the current one (by number), for rollback. */
  async previous(): Promise<number> {
    const cur = await this.currentNumber();
    const before = (await this.generations()).filter((g) => g < cur);
    if (before.length === 0) throw new NoSuchGenerationError(cur === 0 ? `nothing is installed in ${this.link}` : `generation ${cur} is the oldest of ${this.link}; nothing to roll back to`);
    return before[before.length - 1];
  }

  /** Deletes every generation but the current one; returns their numbers. Call under the lock. */
  async deleteOthers(): Promise<number[]> {
    const cur = await this.currentNumber();
    const others = (await this.generations()).filter((g) => g !== cur);
    for (const g of others) await rm(join(this.generationsDir, String(g)), { recursive: true, force: true });
    return others;
  }
}
