import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../errors.js";
import { EXPORT_MAGIC, encodeExport, parseExport, topoSortByReferences, type ExportItem } from "./export-stream.js";
import { hashSource } from "./nar.js";
import { chunked, collect, narFromTree, SAMPLE_TREE } from "./testing/nar-fixtures.js";
import { encodeString, encodeU64 } from "./serialise.js";

const SD = "/tmp/nix/store";
const A = `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-a`;
const B = `${SD}/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-b`;
const DRV = `${SD}/2h9i448h1w70s30b184hh1q60l2060h1-b.drv`;
const NAR_A = narFromTree({ file: "aaa" });
const NAR_B = narFromTree(SAMPLE_TREE);

function items(): ExportItem[] {
  return [
    { storePath: A, references: [], nar: [NAR_A] },
    { storePath: B, references: [B, A], deriver: DRV, nar: chunked(NAR_B, 100) },
  ];
}

async function parseAll<T = Buffer>(stream: Buffer, sink: (nar: AsyncIterable<Buffer>) => Promise<T> = (nar) => collect(nar) as Promise<T>) {
  const out = [];
  for await (const item of parseExport(chunked(stream, 13), sink, SD)) out.push(item);
  return out;
}

describe("export stream", () => {
  it("round-trips paths, references, deriver and NARs, with hashes", async () => {
    const stream = await collect(encodeExport(items()));
    const parsed = await parseAll(stream);
    expect(parsed.map((p) => [p.storePath, p.references, p.deriver])).toEqual([
      [A, [], undefined],
      [B, [B, A].sort(), DRV],
    ]);
    expect(parsed[1].sinkResult.equals(NAR_B)).toBe(true);
    expect(parsed[1].narHash).toBe((await hashSource([NAR_B])).hash);
    expect(parsed[1].narSize).toBe(NAR_B.length);
  });

  it("drains what a sink leaves unread", async () => {
    const stream = await collect(encodeExport(items()));
    const firstChunkOnly = async (nar: AsyncIterable<Buffer>) => {
      for await (const c of nar) return c.length;
      return 0;
    };
    const parsed = await parseAll(stream, firstChunkOnly);
    expect(parsed.map((p) => p.storePath)).toEqual([A, B]);
    expect(parsed[1].narSize).toBe(NAR_B.length);
  });

  it("rejects malformed streams", async () => {
    const good = await collect(encodeExport(items()));
    const bad = async (s: Buffer) => expect(parseAll(s)).rejects.toBeInstanceOf(InvalidInputError);
    await bad(good.subarray(0, good.length - 8)); // missing end marker
    await bad(Buffer.concat([good, Buffer.alloc(1)])); // trailing garbage
    await bad(Buffer.concat([encodeU64(2), good.subarray(8)])); // bad item marker
    const wrongMagic = Buffer.from(good);
    wrongMagic.writeUInt32LE(EXPORT_MAGIC + 1, 8 + NAR_A.length);
    await bad(wrongMagic);
    const foreign = Buffer.concat([encodeU64(1), NAR_A, encodeU64(EXPORT_MAGIC), encodeString("/nix/store/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-a"), encodeU64(0), encodeString(""), encodeU64(0), encodeU64(0)]);
    await bad(foreign); // path outside our store dir
    const badNar = Buffer.concat([encodeU64(1), narFromTree({ dir: [["..", { file: "x" }]] })]);
    await bad(badNar);
  });

  it("refuses to encode an invalid NAR or foreign references", async () => {
    const withBadNar = [{ storePath: A, references: [], nar: [narFromTree({ dir: [["b", { file: "" }], ["a", { file: "" }]] })] }];
    await expect(collect(encodeExport(withBadNar))).rejects.toThrow(/ascending/);
    const withForeignRef = [{ storePath: A, references: ["/nix/store/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-b"], nar: [NAR_A] }];
    await expect(collect(encodeExport(withForeignRef))).rejects.toBeInstanceOf(InvalidInputError);
  });

  it("sorts by references, dependencies first, and detects cycles", () => {
    const x = { storePath: "x", references: ["y", "z", "x", "outside"] };
    const y = { storePath: "y", references: ["z"] };
    const z = { storePath: "z", references: [] };
    expect(topoSortByReferences([x, y, z]).map((i) => i.storePath)).toEqual(["z", "y", "x"]);
    expect(() => topoSortByReferences([{ storePath: "p", references: ["q"] }, { storePath: "q", references: ["p"] }])).toThrow(/cycle/);
  });
});
