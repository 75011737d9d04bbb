// The one conversion between wire messages (proto/gen) and domain values
// (proto/types.ts), used by the worker, the coordinator and the CLI in both
// directions. Inbound messages are validated here and rejected with
// InvalidInputError; nothing past this package sees an unchecked message.
//
// Not here: rendering the coordinator's status views (farm status, farm workers)
// into messages. Those are outbound only, read the core's own view types (which
// proto/ must not import), and live in coordinator/server/status-wire.ts.
export { nodeFromWire, nodeToWire } from "./derivation.js";
export {
  assignmentFromWire,
  assignmentToWire,
  builtToWire,
  drainFromWire,
  drainToWire,
  heartbeatFromWire,
  heartbeatToWire,
  joinToWire,
  leaseFromWire,
  logToWire,
  INLINE_NAR_MAX_BYTES,
  INLINE_NARS_MAX_BYTES,
  PROTOCOL_VERSION,
  reportFromWire,
  resultToWire,
  workerInfoFromJoin,
} from "./worker-protocol.js";
export { packageNameOfRef, publishRequestFromWire, publishSpecFromSubmit, unpublishRequestFromWire, type PublishRequest, type PublishSpec } from "./package-publish.js";
