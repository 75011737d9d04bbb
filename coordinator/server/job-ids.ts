// Job ids: the submission date and random hex, e.g. j-20261206-9f3c01ab.
import { randomBytes } from "node:crypto";

/** A fresh job id for a job submitted at `nowMs`. */
export function newJobId(nowMs: number, random: (bytes: number) => Buffer = randomBytes): string {
  return `j-${new Date(nowMs).toISOString().slice(0, 10).replace(/-/g, "")}-${random(4).toString("hex")}`;
}
