# Jobs for the hostile-input test.
#   healthy:  the demo DAG plus slow sleepers, built by the real workers while
#             the hostile traffic goes on; it must succeed.
#   flood:    one derivation for system "hostile-flood": only the fake flooding
#             worker (which claims that system) is ever assigned it.
#   inflight: the same for "hostile-inflight", held by a worker whose token is
#             then revoked mid-build.
let
  demo = import ../fixtures/demo/default.nix;
  mk = import ../fixtures/sh-derivation.nix;
  sleeper = i: mk {
    name = "hostile-sleeper-${toString i}";
    script = ''sleep 12; echo ${toString i} > "$out"'';
  };
  sleepers = builtins.genList sleeper 8;
in
{
  healthy = mk {
    name = "hostile-healthy";
    script = ''
      mkdir -p "$out"
      ln -s ${demo} "$out/demo"
      cat ${builtins.concatStringsSep " " (map toString sleepers)} > "$out/sleepers"
    '';
  };
  flood = mk { name = "hostile-flood"; system = "hostile-flood"; script = "exit 1"; };
  inflight = mk { name = "hostile-inflight"; system = "hostile-inflight"; script = "exit 1"; };
}
