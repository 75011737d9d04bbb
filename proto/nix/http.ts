// The cache client's HTTP: node:http(s) over keep-alive agents. Node's fetch()
// wraps every request in the WHATWG layer (Request, Response, web streams,
// abort signals); in a real-Nix worker that layer took 38 % of the main
// thread's CPU, more than anything else a build costs it there. What the cache
// client needs is small: a status, a body to stream or read, a streamed upload,
// and redirects followed for a cache behind a CDN or an object store.
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { iteratorOf, type ByteSource } from "./serialise.js";

/** Redirects followed for a GET before giving up. */
const MAX_REDIRECTS = 5;

/** What to send. */
export interface HttpRequestInit {
  method?: "GET" | "PUT";
  headers?: Record<string, string>;
  /** A PUT's body, streamed with backpressure; what it holds is let go once the request ends either way. */
  body?: ByteSource;
  /** Gives up when the connection is idle this long (0 or absent: never). */
  idleTimeoutMs?: number;
}

/** An answer: read its body (as a stream or as text), or discard it so the connection is reused. */
export interface HttpResponse {
  status: number;
  ok: boolean;
  body: IncomingMessage;
  text(): Promise<string>;
  discard(): void;
}

const agents = { "http:": new http.Agent({ keepAlive: true }), "https:": new https.Agent({ keepAlive: true }) };

/** Trusts `ca` (PEM certificates, the system roots among them) for every https request of this process. */
export function trustCaForHttps(ca: string[]): void {
  agents["https:"].destroy();
  agents["https:"] = new https.Agent({ keepAlive: true, ca });
}

/** Sends one request; rejects only when no answer came (the connection failed or dropped before one). */
export async function httpRequest(url: string, init: HttpRequestInit = {}): Promise<HttpResponse> {
  let target = new URL(url);
  for (let redirects = 0; ; redirects++) {
    const res = await send(target, init);
    const location = res.headers.location;
    const isRedirect = [301, 302, 303, 307, 308].includes(res.statusCode ?? 0) && location !== undefined;
    if (!isRedirect || init.body !== undefined || redirects >= MAX_REDIRECTS) return answer(res);
    res.on("error", () => undefined).resume();
    target = new URL(location, target);
  }
}

async function send(url: URL, init: HttpRequestInit, retriedStale = false): Promise<IncomingMessage> {
  const protocol = url.protocol as keyof typeof agents;
  if (!(protocol in agents)) throw new TypeError(`unsupported URL scheme in ${url.href}`);
  const mod = protocol === "https:" ? https : http;
  const req = mod.request(url, { method: init.method ?? "GET", headers: init.headers, agent: agents[protocol] });
  if (init.idleTimeoutMs) req.setTimeout(init.idleTimeoutMs, () => req.destroy(new Error(`no answer from ${url.host} in ${init.idleTimeoutMs} ms`)));
  // Listened to for good: a write after the request failed emits another error, which must not go unheard.
  const responded = new Promise<IncomingMessage>((resolve, reject) => {
    req.once("response", resolve);
    req.on("error", reject);
  });
  const written = init.body === undefined ? (req.end(), Promise.resolve(true)) : writeBody(req, init.body);
  try {
    const res = await responded;
    // The source is let go before the caller hears the answer. A body cut short leaves the request unfinished:
    // its connection goes once the answer is read, not back to the pool.
    if (!(await written)) res.once("end", () => req.destroy());
    return res;
  } catch (err) {
    // A kept-alive connection the server closed meanwhile: once more on a fresh one (nothing was sent yet that counted).
    if (req.reusedSocket && (err as NodeJS.ErrnoException).code === "ECONNRESET" && init.body === undefined && !retriedStale) return send(url, init, true);
    throw err;
  }
}

/**
 * Streams `body` into `req` with backpressure; true when all of it went. A
 * server that answers before reading it all (a refusal) stops it at once: the
 * answer counts, and the source is closed either way. A source that fails fails
 * the request with its error.
 */
async function writeBody(req: http.ClientRequest, body: ByteSource): Promise<boolean> {
  let answered = false;
  req.once("response", () => (answered = true));
  const stopped = () => answered || req.destroyed;
  const it = iteratorOf(body);
  let done = false;
  try {
    while (!stopped()) {
      const next = await it.next();
      if (next.done) {
        done = true;
        req.end();
        return true;
      }
      // The answer may have come while the source read: then this chunk is not written, nor waited on.
      if (stopped()) break;
      if (!req.write(next.value)) await writable(req, stopped);
    }
    return false;
  } catch (err) {
    done = true; // a source that threw has ended
    req.destroy(err as Error);
    return false;
  } finally {
    if (!done) await Promise.resolve(it.return?.()).catch(() => undefined);
  }
}

/** Resolves when `req` takes more, answers, fails or closes (at once when it already has). */
function writable(req: http.ClientRequest, stopped: () => boolean): Promise<void> {
  if (stopped() || !req.writableNeedDrain) return Promise.resolve();
  const events = ["drain", "response", "error", "close"];
  return new Promise((resolve) => {
    const go = () => {
      for (const event of events) req.off(event, go);
      resolve();
    };
    for (const event of events) req.on(event, go);
  });
}

function answer(res: IncomingMessage): HttpResponse {
  // A reader hears a dropped connection through its iteration; one that stopped reading must not crash on it.
  res.on("error", () => undefined);
  const status = res.statusCode ?? 0;
  return {
    status,
    ok: status >= 200 && status < 300,
    body: res,
    text: async () => {
      res.setEncoding("utf8");
      let text = "";
      for await (const chunk of res) text += chunk as string;
      return text;
    },
    discard: () => void res.resume(),
  };
}
