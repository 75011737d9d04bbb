import { describe, expect, it } from "vitest";
import { renderNixConf, scrubbedEnv } from "./nix-env.js";

const cache = { cacheUrl: "http://cache:7421", cachePublicKey: "farm-1:abc=" };

describe("the worker's Nix environment", () => {
  it("offers the worker's features to Nix too, and builds as build users only when told", () => {
    expect(renderNixConf(cache)).toContain("build-users-group = \n");
    expect(renderNixConf(cache)).not.toContain("extra-system-features");
    const conf = renderNixConf(cache, "nixbld", ["big-parallel", "snoop"]);
    expect(conf).toContain("build-users-group = nixbld\n");
    expect(conf).toContain("extra-system-features = big-parallel snoop\n");
  });

  it("passes Nix nothing of the worker's own settings or secrets", () => {
    const env = scrubbedEnv({ PATH: "/bin", HOME: "/h", LC_TIME: "C", FARM_TOKEN: "secret", COORDINATOR_URL: "c:1", NIX_CONFIG: "x", NIX_SSL_CERT_FILE: "/ca.pem" });
    expect(env).toEqual({ PATH: "/bin", HOME: "/h", LC_TIME: "C", NIX_SSL_CERT_FILE: "/ca.pem" });
  });
});
