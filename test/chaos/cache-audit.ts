// After a chaos run: is the cache sound, and does the durable state only
// claim what the cache holds? Reads the farm's NATS state directly and the
// cache over HTTP with the same verifying client workers use.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { connect } from "@nats-io/transport-node";
import { CacheClient, parseNar, parseNarInfo, verifyNarInfo } from "../../proto/nix/mod.js";
import type { Snapshot } from "../../coordinator/core/snapshot.js";
import { NatsStore } from "../../coordinator/store/nats-store.js";

const STORE_DIR = "/tmp/nix/store";

/** The farm's durable state as NATS holds it now. */
export async function loadFarmState(natsUrl: string, prefix: string): Promise<Snapshot> {
  const nc = await connect({ servers: natsUrl });
  try {
    return await (await NatsStore.open(nc, { prefix })).load();
  } finally {
    await nc.close();
  }
}

/** Every narinfo file in the cache dir, checked against the farm key; returns the bad ones. */
export function badNarInfos(cacheDir: string, publicKey: string): { total: number; bad: string[] } {
  const files = readdirSync(cacheDir).filter((f) => f.endsWith(".narinfo"));
  const bad: string[] = [];
  for (const f of files) {
    try {
      if (!verifyNarInfo(parseNarInfo(readFileSync(path.join(cacheDir, f), "utf8"), STORE_DIR), [publicKey])) bad.push(`${f}: bad signature`);
    } catch (err) {
      bad.push(`${f}: ${(err as Error).message}`);
    }
  }
  return { total: files.length, bad };
}

/** The contents of a single-file output, fetched and verified (signature, NAR hash) through the cache. */
export async function narFile(client: CacheClient, storePath: string): Promise<string> {
  const info = await client.narInfo(storePath);
  if (!info) throw new Error(`${storePath} is not in the cache`);
  return fileOf(client.narStream(info));
}

/** The single regular file a chaos output's NAR holds. */
async function fileOf(stream: AsyncIterable<Uint8Array>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const ev of parseNar(stream)) {
    if (ev.type === "data") chunks.push(ev.chunk);
    else if (ev.type !== "file" || ev.path.length !== 0) throw new Error(`expected a single file, found a ${ev.type}`);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Checks a chaos output's self-checksum line (see test/fixtures/chaos/default.nix). */
export function chaosFileProblem(text: string): string | null {
  const lines = text.split("\n");
  if (lines.length !== 4 || !lines[0].startsWith("id ") || !lines[1].startsWith("deps ") || !lines[2].startsWith("sum ")) return "not a chaos output file";
  const body = `${lines[0]}\n${lines[1]}\n`;
  return lines[2] === `sum ${sha256(body)}` ? null : "checksum line does not match";
}

function sha256(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}

/**
 * For every derivation the durable state calls done: each output has a narinfo
 * signed by the farm key, its NAR matches NarHash/NarSize, and (for chaos
 * outputs) the file inside passes its own checksum. Returns one line per problem.
 */
export async function doneWithoutOutputs(state: Snapshot, cacheUrl: string, publicKey: string): Promise<{ done: number; problems: string[] }> {
  const client = new CacheClient({ baseUrl: cacheUrl, trustedPublicKeys: [publicKey], storeDir: STORE_DIR });
  const nodes = new Map(state.nodes.map((n) => [n.drvPath, n]));
  const problems: string[] = [];
  let done = 0;
  for (const rec of state.drvs) {
    if (rec.state !== "done") continue;
    done++;
    const node = nodes.get(rec.drvPath);
    if (!node) {
      problems.push(`${rec.drvPath}: done but no node stored`);
      continue;
    }
    for (const out of Object.values(node.outputs)) {
      try {
        const info = await client.narInfo(out);
        if (!info) {
          problems.push(`${rec.drvPath}: done but ${out} is not in the cache`);
          continue;
        }
        const text = await fileOf(client.narStream(info));
        const bad = node.name.startsWith("chaos-") ? chaosFileProblem(text) : null;
        if (bad) problems.push(`${out}: ${bad}`);
      } catch (err) {
        problems.push(`${out}: ${(err as Error).message}`);
      }
    }
  }
  return { done, problems };
}
