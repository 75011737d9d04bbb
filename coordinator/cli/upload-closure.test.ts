import { describe, expect, it } from "vitest";
import { uploadGroups } from "./upload-closure.js";

const item = (name: string, bytes: number) => ({ name, nar: Buffer.alloc(bytes) });
const names = (groups: { name: string }[][]) => groups.map((g) => g.map((i) => i.name).join(" "));

describe("uploadGroups", () => {
  it("keeps the order, puts a large path alone and ends a batch at its path and byte limits", () => {
    expect(names(uploadGroups([item("a", 300), item("b", 300), item("big", 2 << 20), item("c", 300)]))).toEqual(["a b", "big", "c"]);
    const many = Array.from({ length: 4001 }, (_, i) => item(String(i), 100));
    expect(uploadGroups(many).map((g) => g.length)).toEqual([2000, 2000, 1]);
    const full = Array.from({ length: 20 }, (_, i) => item(String(i), 1 << 20)); // 16 of these fill 16 MiB
    expect(uploadGroups(full).map((g) => g.length)).toEqual([16, 4]);
    expect(uploadGroups([])).toEqual([]);
  });
});
