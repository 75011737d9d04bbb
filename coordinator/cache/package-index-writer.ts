// The one writer of the cache's package index (proto/nix/package-index.ts).
// The signed file in the cache's data dir (<cache dir>/index/packages.json) is
// the authoritative copy: every change re-reads it, verifies it with the
// farm's own key, applies the change and replaces it atomically (storage.put
// is temp + rename). Changes run one at a time, so none is lost; a restart
// loses nothing because there is no other copy to fall out of step with.
import type { Logger } from "pino";
import { FarmError, InvalidInputError } from "../core/errors.js";
import {
  currentEntry,
  emptyPackageIndex,
  hashPart,
  parsePublicKey,
  readPackageIndex,
  signPackageIndex,
  versionOfStorePath,
  withEntry,
  withoutName,
  type NixKey,
  type PackageEntry,
  type PackageIndex,
} from "../../proto/nix/mod.js";
import type { CacheStorage } from "./storage.js";

/** The index file's place in the cache storage: kind "index", name "packages.json" → URL path index/packages.json. */
export const INDEX_FILE = { kind: "index", name: "packages.json" } as const;

/** A path to publish is not in the cache signed. */
export class NotPublishedError extends InvalidInputError {}

/** The index in storage cannot be read with the farm's key (tampered with, or written under another key). */
export class IndexUnreadableError extends FarmError {}

/** What one publication names. */
export interface PublishInput {
  name: string;
  outputs: Record<string, string>;
  source: string;
  jobId?: string;
  builtAt: Date;
}

/** Serialised read-modify-write of the signed package index. */
export class PackageIndexWriter {
  private queue: Promise<unknown> = Promise.resolve();
  private readonly publicKey: NixKey;

  constructor(private readonly d: { storage: CacheStorage; storeDir: string; secretKey: string; publicKey: string; logger: Logger; now?: () => Date }) {
    this.publicKey = parsePublicKey(d.publicKey);
  }

  private now(): Date {
    return this.d.now?.() ?? new Date();
  }

  /** The current index (empty when none was published yet). */
  async read(): Promise<PackageIndex> {
    const text = await this.d.storage.getText(INDEX_FILE.kind, INDEX_FILE.name);
    if (text === null) return emptyPackageIndex(this.d.storeDir, this.now());
    try {
      return readPackageIndex(text, [this.publicKey], this.d.storeDir);
    } catch (err) {
      throw new IndexUnreadableError(`the package index in the cache cannot be read with the farm's key (${(err as Error).message}); move it aside to start a new one`, { cause: err });
    }
  }

  /** Runs `change` on the current index and stores its result (nothing when it returns false), one change at a time. */
  private update<T>(change: (index: PackageIndex, now: Date) => { index: PackageIndex | false; result: T }): Promise<T> {
    const run = this.queue.then(async () => {
      const { index, result } = change(await this.read(), this.now());
      if (index) await this.d.storage.put(INDEX_FILE.kind, INDEX_FILE.name, signPackageIndex(index, this.d.secretKey));
      return result;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Publishes `input` as the newest entry of its name, after checking the cache holds every output signed. */
  async publish(input: PublishInput): Promise<{ entry: PackageEntry; serial: number }> {
    for (const [out, p] of Object.entries(input.outputs)) {
      if (!(await this.d.storage.has("narinfo", hashPart(p)))) throw new NotPublishedError(`refusing to publish '${input.name}': output ${out} (${p}) is not in the cache signed`);
    }
    const main = input.outputs.out ?? Object.values(input.outputs)[0];
    const entry: PackageEntry = {
      name: input.name,
      version: versionOfStorePath(main, this.d.storeDir),
      outputs: { ...input.outputs },
      source: input.source,
      builtAt: input.builtAt.toISOString(),
      ...(input.jobId ? { jobId: input.jobId } : {}),
    };
    if (entry.version === undefined) delete entry.version;
    const serial = await this.update((index, now) => {
      const next = withEntry(index, entry, now);
      return { index: next, result: next.serial };
    });
    this.d.logger.info({ name: entry.name, outputs: entry.outputs, jobId: entry.jobId, serial }, "package published");
    return { entry, serial };
  }

  /** Removes a name and its history; false when the index has no such name. */
  async unpublish(name: string): Promise<{ removed: boolean; serial: number }> {
    const res = await this.update((index, now) => {
      const next = withoutName(index, name, now);
      return { index: next, result: { removed: next !== false, serial: next ? next.serial : index.serial } };
    });
    if (res.removed) this.d.logger.warn({ name, serial: res.serial }, "package unpublished");
    return res;
  }

  /** Whether `jobId`'s build is already recorded under `name` (current or history). */
  async has(name: string, jobId: string): Promise<boolean> {
    return ((await this.read()).packages[name] ?? []).some((e) => e.jobId === jobId);
  }

  /** When the index last changed (epoch ms; 0 when never). */
  async lastPublishedMs(): Promise<number> {
    const index = await this.read();
    return index.serial === 0 ? 0 : Date.parse(index.publishedAt);
  }

  /** The current outputs of a name, if published. */
  async current(name: string): Promise<PackageEntry | undefined> {
    return currentEntry(await this.read(), name);
  }
}
