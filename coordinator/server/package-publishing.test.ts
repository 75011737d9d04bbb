import { describe, expect, it } from "vitest";
import { rootOutputs } from "./package-publishing.js";
import type { JobRecord } from "../core/types.js";

describe("rootOutputs", () => {
  it("takes the roots' outputs, suffixing a second root's", () => {
    const job = { roots: ["/s/a.drv", "/s/b.drv"] } as JobRecord;
    const outs: Record<string, Record<string, string>> = { "/s/a.drv": { out: "/s/a", dev: "/s/a-dev" }, "/s/b.drv": { out: "/s/b" } };
    expect(rootOutputs(job, (p) => outs[p])).toEqual({ out: "/s/a", dev: "/s/a-dev", "out-1": "/s/b" });
  });
});
