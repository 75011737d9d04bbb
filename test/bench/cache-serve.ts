// The farm's cache server over an existing data directory, as its own process,
// for bench:cache (so the benchmark's clients do not share its event loop).
// Prints its URL on stdout once listening; uploads are refused.
//   node dist/test/bench/cache-serve.js ROOT STORE_DIR
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { AuthError } from "../../coordinator/core/errors.js";
import { DiskStorage } from "../../coordinator/cache/disk-storage.js";
import { createCacheServer } from "../../coordinator/cache/http-server.js";
import { generateKeyPair } from "../../proto/nix/mod.js";

const [root, storeDir] = process.argv.slice(2);
const server = createCacheServer({
  storage: await DiskStorage.open(root),
  storeDir,
  secretKey: generateKeyPair("bench-unused-1").secretKey,
  authorizeUpload: () => {
    throw new AuthError("the benchmark's cache takes no uploads");
  },
  maxNarBytes: 1 << 30,
  logger: pino({ level: "silent" }),
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => console.log(`http://127.0.0.1:${(server.address() as AddressInfo).port}`));
process.once("SIGTERM", () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
