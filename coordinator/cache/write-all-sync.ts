// A group append's write is synchronous once its file is open: a page-cache
// copy of some microseconds, where an async write was a threadpool hand-off and
// then a wait for a turn of a busy loop. The open and the flush (milliseconds,
// maybe) stay in the threadpool. (Single files go to file-writer.ts instead.)
import { writeSync } from "node:fs";

/** Writes all of `bytes` to `fd` at its current position (a short write is continued). Meant for small buffers. */
export function writeAllSync(fd: number, bytes: Uint8Array): void {
  for (let offset = 0; offset < bytes.length; ) offset += writeSync(fd, bytes, offset, bytes.length - offset);
}
