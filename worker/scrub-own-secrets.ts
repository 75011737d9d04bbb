// On a host where builds run as the worker's own uid (a bare container), a
// build can read /proc/<worker pid>/environ and /proc/<worker pid>/cmdline:
// the kernel shows there the bytes the process was started with, whatever
// process.env says later. Once the worker has read its token, it overwrites
// the token's bytes in those two blocks of its own memory (through
// /proc/self/mem, which a process may always write), so they read as xxx.
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";

/** A byte range [start, end) within a block. */
export interface Span {
  start: number;
  end: number;
}

/** Where the values of NAME=value entries for `names` lie in a NUL-separated environment block. */
export function environValueSpans(block: Buffer, names: readonly string[]): Span[] {
  const spans: Span[] = [];
  let at = 0;
  while (at < block.length) {
    const end = block.indexOf(0, at) === -1 ? block.length : block.indexOf(0, at);
    const eq = block.indexOf(0x3d, at); // '='
    if (eq !== -1 && eq < end && names.includes(block.subarray(at, eq).toString())) spans.push({ start: eq + 1, end });
    at = end + 1;
  }
  return spans;
}

/** Where `secret` appears in a NUL-separated argument block (as a whole argument or after `=`). */
export function argumentSpans(block: Buffer, secret: string): Span[] {
  const spans: Span[] = [];
  if (!secret) return spans;
  const needle = Buffer.from(secret);
  for (let i = block.indexOf(needle); i !== -1; i = block.indexOf(needle, i + needle.length)) spans.push({ start: i, end: i + needle.length });
  return spans;
}

/** The start addresses of this process's argument and environment blocks (fields 48 and 50 of /proc/self/stat). */
export function blockAddresses(stat: string): { argStart: number; envStart: number } {
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { argStart: Number(f[45]), envStart: Number(f[47]) };
}

/**
 * Overwrites `secret` in this process's /proc/self/cmdline and the values of
 * `envNames` in /proc/self/environ. Returns how many places it overwrote, or
 * throws if the kernel would not let it (the caller logs that).
 */
export function scrubOwnSecrets(envNames: readonly string[], secret: string): number {
  const { argStart, envStart } = blockAddresses(readFileSync("/proc/self/stat", "utf8"));
  const writes = [
    ...environValueSpans(readFileSync("/proc/self/environ"), envNames).map((s) => ({ ...s, base: envStart })),
    ...argumentSpans(readFileSync("/proc/self/cmdline"), secret).map((s) => ({ ...s, base: argStart })),
  ];
  if (writes.length === 0) return 0;
  const mem = openSync("/proc/self/mem", "r+");
  try {
    for (const w of writes) writeSync(mem, Buffer.alloc(w.end - w.start, "x"), 0, w.end - w.start, w.base + w.start);
  } finally {
    closeSync(mem);
  }
  return writes.length;
}
