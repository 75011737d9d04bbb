import { describe, expect, it } from "vitest";
import { printable } from "./logs.js";

describe("printable", () => {
  it("shows control characters a build could use against a terminal, and keeps tabs and newlines", () => {
    expect(printable("ok\tcolumn\nline \x1b[2J\x1b]0;pwned\x07 \x9b31m")).toBe("ok\tcolumn\nline \\x1b[2J\\x1b]0;pwned\\x07 \\x9b31m");
    expect(printable("plain text, ünïcode ✓")).toBe("plain text, ünïcode ✓");
  });
});
