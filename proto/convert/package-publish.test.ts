import { describe, expect, it } from "vitest";
import { packageNameOfRef, publishRequestFromWire, publishSpecFromSubmit, unpublishRequestFromWire } from "./package-publish.js";

const SD = "/tmp/nix/store";
const P = `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-hello-2.12`;

describe("package publishing on the wire", () => {
  it("names a job by the attribute path of its ref", () => {
    expect(packageNameOfRef("nixpkgs#hello")).toBe("hello");
    expect(packageNameOfRef("./file.nix#tools.x")).toBe("tools.x");
    expect(packageNameOfRef("./file.nix")).toBeUndefined();
    expect(packageNameOfRef("/abs/file.nix#")).toBeUndefined();
    expect(packageNameOfRef("dag.jsonl")).toBeUndefined();
  });

  it("publishes a submit unless no_publish, with the source naming the ref and where it came from", () => {
    expect(publishSpecFromSubmit({ description: "nixpkgs#hello", noPublish: false, source: "https://x/nixexprs.tar.xz" })).toEqual({
      name: "hello",
      source: "nixpkgs#hello from https://x/nixexprs.tar.xz",
    });
    expect(publishSpecFromSubmit({ description: "nixpkgs#hello", noPublish: true, source: "" })).toBeUndefined();
    expect(publishSpecFromSubmit({ description: "./f.nix", noPublish: false, source: "/f.nix" })).toBeUndefined();
    expect(publishSpecFromSubmit({ description: "./f.nix#a", noPublish: false, source: "x\ny" })?.source).toBe("./f.nix#a from x y");
  });

  it("validates an operator's publish request", () => {
    expect(publishRequestFromWire({ name: "nix", outputs: { out: P }, source: "", jobId: "" }, SD)).toEqual({ name: "nix", outputs: { out: P }, source: "published by hand" });
    expect(publishRequestFromWire({ name: "hello", outputs: {}, source: "", jobId: "j-1" }, SD)).toEqual({ name: "hello", source: "", jobId: "j-1" });
    expect(() => publishRequestFromWire({ name: "../x", outputs: { out: P }, source: "", jobId: "" }, SD)).toThrow(/not a package name/);
    expect(() => publishRequestFromWire({ name: "x", outputs: { out: "/nix/store/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-x" }, source: "", jobId: "" }, SD)).toThrow(/not a store path under/);
    expect(() => publishRequestFromWire({ name: "x", outputs: {}, source: "", jobId: "" }, SD)).toThrow(/no outputs and no job/);
    expect(() => publishRequestFromWire({ name: "x", outputs: { out: P }, source: "", jobId: "j" }, SD)).toThrow(/either/);
    expect(() => unpublishRequestFromWire({ name: "a b" })).toThrow(/not a package name/);
  });
});
