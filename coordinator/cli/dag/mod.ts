// Turning what a user submits into a DAG of DrvNodes: parse the reference,
// run nix-instantiate, read the .drv closure (ATerm), or load a recorded
// nixpkgs dump (JSONL) or a synthetic DAG.
//
// Why under cli/: only the submitting machine evaluates Nix; the coordinator
// receives finished nodes in Submit and never runs this. The simulator
// (coordinator/sim) and the load tests use the JSONL loader to replay real DAGs.
export { instantiate } from "./instantiate.js";
export { cutClosure, loadJsonlDag } from "./jsonl.js";
export { syntheticDag } from "./synthetic.js";
