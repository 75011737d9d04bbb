import { describe, expect, it } from "vitest";
import { newJobId } from "./job-ids.js";

describe("newJobId", () => {
  it("names the submission day and adds 8 random hex digits", () => {
    expect(newJobId(Date.UTC(2026, 11, 6, 23, 59), () => Buffer.from([0x9f, 0x3c, 0x01, 0xab]))).toBe("j-20261206-9f3c01ab");
    expect(newJobId(0)).toMatch(/^j-19700101-[0-9a-f]{8}$/);
  });
});
