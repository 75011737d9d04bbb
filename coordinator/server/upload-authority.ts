// Who may put what in the cache, decided from the bearer token before any byte
// of an upload is read:
//   - an upload that names a lease is a build's output: its uploader must hold
//     that lease right now (as the primary or a backup copy), and the path must
//     be one of the outputs the lease's .drv declares. It is staged, not
//     published, until the farm accepts the lease's result;
//   - a CLI token (a submitter) may upload only content-addressed paths, which
//     the cache checks against their bytes;
//   - a worker token with no lease may upload nothing;
//   - the admin token (the operator) publishes directly;
//   - a lease credential (lease-credentials.ts, in every assignment) uploads
//     that lease's outputs only, like its worker's token would;
//   - a batch (many paths, no lease) is decided once, for all its paths: only
//     the content-addressed or the admin's grant can hold one.
import { AuthError } from "../core/errors.js";
import { holdsLease } from "../core/drv-state.js";
import type { Scheduler } from "../core/scheduler.js";
import type { UploadRequest } from "../cache/http-server.js";
import type { UploadGrant } from "../cache/upload.js";
import type { TokenRegistry } from "./auth.js";
import { LeaseCredentials } from "./lease-credentials.js";
import type { Lease } from "../core/types.js";

/** Builds the cache's upload decision from the token registry and the scheduler's leases. */
export function uploadAuthority(tokens: TokenRegistry, scheduler: () => Pick<Scheduler, "drv">, credentials?: LeaseCredentials, now: () => number = Date.now): (req: UploadRequest) => UploadGrant {
  const outputOf = (builder: string, lease: Lease, storePath: string | undefined, by: string): UploadGrant => {
    if (storePath === undefined) throw new AuthError("a build's outputs are uploaded one at a time, under their lease");
    const drv = scheduler().drv(lease.drvPath);
    if (!drv || !holdsLease(drv.record, builder, lease.epoch)) throw new AuthError(`${builder} holds no lease on ${lease.drvPath} at epoch ${lease.epoch}`);
    if (!Object.values(drv.node.outputs).includes(storePath)) throw new AuthError(`${storePath} is not an output of ${lease.drvPath}`);
    return { kind: "output", by, workerId: builder, lease };
  };
  return ({ token, storePath, lease, workerId }) => {
    if (credentials && LeaseCredentials.looksLike(token)) {
      const grant = credentials.verify(token, now());
      if (!grant) throw new AuthError("lease credential not valid (forged, altered or expired)");
      if (lease && (lease.drvPath !== grant.lease.drvPath || lease.epoch !== grant.lease.epoch)) throw new AuthError("the lease credential is for another lease");
      return outputOf(grant.workerId, grant.lease, storePath, `${grant.workerId} (lease credential)`);
    }
    const who = tokens.authenticate(`Bearer ${token}`, ["worker", "cli"]);
    if (lease) {
      if (who.role === "cli") throw new AuthError(`token of '${who.name}' may not upload build outputs`);
      // A worker token names its worker; the admin token (a farm run by one operator) says which worker it is.
      const builder = who.role === "worker" ? who.name : workerId;
      if (!builder) throw new AuthError("an output upload under the admin token must name its worker (X-Farm-Worker)");
      if (who.role === "worker" && workerId && workerId !== who.name) throw new AuthError(`token of '${who.name}' may not upload as worker '${workerId}'`);
      return outputOf(builder, lease, storePath, who.name);
    }
    if (who.role === "admin") return { kind: "publish", by: who.name };
    if (who.role === "cli") return { kind: "content-addressed", by: who.name };
    throw new AuthError(`worker '${who.name}' may upload only outputs of a lease it holds (X-Farm-Lease-Drv, X-Farm-Lease-Epoch)`);
  };
}
