// Test helper: a real cache HTTP server on 127.0.0.1:<random port> backed by
// DiskStorage in a temp dir, with a fresh signing key and upload token.

import { mkdtemp, readdir, rm } from "node:fs/promises";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { pino } from "pino";
import { CacheClient } from "../client.js";
import { DiskStorage } from "../disk-storage.js";
import { createCacheServer } from "../http-server.js";
import { generateKeyPair, type NixKeyPair } from "../signing.js";

/** A running test cache. */
export interface TestCache {
  url: string;
  root: string;
  storage: DiskStorage;
  keys: NixKeyPair;
  token: string;
  storeDir: string;
  server: Server;
  /** A client that trusts this cache's key and holds the upload token. */
  client(overrides?: Partial<ConstructorParameters<typeof CacheClient>[0]>): CacheClient;
  /** Names of files left in the storage's temp dir (should be none between requests). */
  tmpFiles(): Promise<string[]>;
  close(): Promise<void>;
}

/** Starts a cache server for `storeDir`. */
export async function startTestCache(storeDir: string, opts: { maxNarBytes?: number; maxLogBytes?: number } = {}): Promise<TestCache> {
  const root = await mkdtemp("/tmp/farm-cache-srv-");
  const storage = await DiskStorage.open(root);
  const keys = generateKeyPair("farm-test-cache-1");
  const token = "tok-" + Math.random().toString(36).slice(2);
  const server = createCacheServer({
    storage,
    storeDir,
    secretKey: keys.secretKey,
    uploadTokens: new Set([token]),
    maxNarBytes: opts.maxNarBytes ?? 64 << 20,
    maxLogBytes: opts.maxLogBytes,
    logger: pino({ level: "silent" }),
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    root,
    storage,
    keys,
    token,
    storeDir,
    server,
    client: (o = {}) => new CacheClient({ baseUrl: url, trustedPublicKeys: [keys.publicKey], token, storeDir, ...o }),
    tmpFiles: () => readdir(join(root, ".tmp")),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(root, { recursive: true, force: true });
    },
  };
}
