// The cache's signing key: created once on the coordinator host, readable only
// by its owner, and never sent anywhere. The public half is written beside it
// for operators to hand to users (`trusted-public-keys`).
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { generateKeyPair, publicKeyOf } from "../proto/nix/mod.js";

/** Loads the secret key, creating it (mode 0600) on first start; returns both halves. */
export function ensureSigningKey(file: string, name: string): { secretKey: string; publicKey: string; created: boolean } {
  let created = false;
  if (!existsSync(file)) {
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const pair = generateKeyPair(name);
    writeFileSync(file, pair.secretKey + "\n", { mode: 0o600, flag: "wx" });
    created = true;
  }
  chmodSync(file, 0o600);
  const secretKey = readFileSync(file, "utf8").trim();
  const publicKey = publicKeyOf(secretKey);
  writeFileSync(file.replace(/\.sec$/, "") + ".pub", publicKey + "\n");
  return { secretKey, publicKey, created };
}
