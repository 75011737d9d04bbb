// Signs narinfo fingerprints on a thread of their own. At nixpkgs scale the
// coordinator signs one narinfo per accepted output, about a thousand a second,
// and an ed25519 signature costs 40 µs here (70 under load): 4.8 % of the main
// thread's samples in a profile of the full graph. The signatures asked for in
// one turn of the loop go to the thread as one message (batch-thread.ts).
//
// The key goes to the thread as a KeyObject, in this process's memory as it
// already was: nothing is written, nothing leaves the process.
import type { NixKey } from "../../proto/nix/mod.js";
import { BatchThread } from "./batch-thread.js";

/** Signs fingerprints with one key, giving `name:base64(signature)` (as signFingerprint does). */
export class FingerprintSigner {
  private readonly thread: BatchThread<string, string>;

  constructor(key: NixKey) {
    this.thread = new BatchThread<string, string>({ name: "narinfo signer", main: signerThreadMain, workerData: { name: key.name, key: key.key } });
  }

  sign(fingerprint: string): Promise<string> {
    return this.thread.call(fingerprint);
  }
}

/** The signer thread. Self-contained (run from its source text): no imports, no closures. */
function signerThreadMain(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { sign } = require("node:crypto") as typeof import("node:crypto");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { parentPort, workerData } = require("node:worker_threads") as typeof import("node:worker_threads");
  const { name, key } = workerData as NixKey;
  parentPort!.on("message", ({ id, calls }: { id: number; calls: string[] }) => {
    const results = calls.map((fingerprint) => {
      try {
        return { ok: `${name}:${sign(null, Buffer.from(fingerprint), key).toString("base64")}` };
      } catch (err) {
        return { error: { message: (err as Error).message } };
      }
    });
    parentPort!.postMessage({ id, results });
  });
}
