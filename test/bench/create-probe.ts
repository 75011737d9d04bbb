// How much creating a small file costs on a bench's filesystem right now. On an ext4 without a journal
// (this workplace's machines), allocating an inode skips every inode freed in the last one to six minutes,
// looking each one up: after a run's 200,000 files are deleted, a create costs several times what it does
// on a quiet filesystem for minutes. Millions of cached inodes (runs kept with BENCH_KEEP=1) slow it too, with
// nothing deleted (insert_inode_locked). A bench prints this beside its figures so that state is visible.
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import path from "node:path";

/** Median microseconds to create, write 400 bytes to and close one new file, over `count` files under `dir` (left there). */
export function probeCreateMicros(dir: string, count = 400): number {
  const probeDir = path.join(dir, "create-probe");
  mkdirSync(probeDir, { recursive: true });
  const bytes = Buffer.alloc(400, 0x61);
  const micros: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = process.hrtime.bigint();
    const fd = openSync(path.join(probeDir, `f${i}`), "wx", 0o644);
    writeSync(fd, bytes);
    closeSync(fd);
    micros.push(Number(process.hrtime.bigint() - started) / 1000);
  }
  micros.sort((a, b) => a - b);
  return micros[Math.floor(micros.length / 2)]!;
}
