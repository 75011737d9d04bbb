// The cache client's HTTP against a real node:http server on loopback.
import { createServer, type Server } from "node:http";
import { createServer as createNetServer, type AddressInfo, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { httpRequest } from "./http.js";

let server: Server;
let base: string;
let connections = 0;
const received: Record<string, number> = {};

beforeAll(async () => {
  server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const hops = Number(url.searchParams.get("hops") ?? 0);
    if (url.pathname === "/redirect") {
      res.writeHead(302, { Location: hops > 1 ? `/redirect?hops=${hops - 1}` : "/file" }).end();
    } else if (url.pathname === "/file") {
      res.end("the file\n");
    } else if (url.pathname === "/refuse") {
      // As the cache refuses an upload it won't read: at once, and the connection goes.
      res.writeHead(403, { Connection: "close" }).end("not yours");
    } else if (url.pathname === "/silent") {
      // never answers
    } else if (url.pathname === "/upload") {
      let bytes = 0;
      req.on("data", (c: Buffer) => (bytes += c.length));
      req.on("end", () => {
        received.upload = bytes;
        res.writeHead(201).end(`got ${bytes}`);
      });
    } else res.writeHead(404).end("no");
  });
  server.on("connection", () => connections++);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe("httpRequest", () => {
  it("reuses one kept-alive connection for requests one after another", async () => {
    const before = connections;
    for (let i = 0; i < 5; i++) expect(await (await httpRequest(`${base}/file`)).text()).toBe("the file\n");
    expect(connections - before).toBe(1);
  });

  it("follows a GET's redirects, up to five", async () => {
    const res = await httpRequest(`${base}/redirect?hops=5`);
    expect([res.status, await res.text()]).toEqual([200, "the file\n"]);
    const tooMany = await httpRequest(`${base}/redirect?hops=6`);
    tooMany.discard();
    expect(tooMany.status).toBe(302);
  });

  it("streams a PUT's body and reads the answer", async () => {
    async function* chunks() {
      for (let i = 0; i < 64; i++) yield Buffer.alloc(64 * 1024, i);
    }
    const res = await httpRequest(`${base}/upload`, { method: "PUT", body: chunks() });
    expect([res.status, await res.text()]).toEqual([201, `got ${64 * 64 * 1024}`]);
  });

  it("fails a PUT with its source's own error, and closes the source", async () => {
    let closed = false;
    async function* failing() {
      try {
        yield Buffer.from("a little");
        throw new Error("the disk said no");
      } finally {
        closed = true;
      }
    }
    await expect(httpRequest(`${base}/upload`, { method: "PUT", body: failing() })).rejects.toThrow("the disk said no");
    expect(closed).toBe(true);
  });

  it("returns a refusal that came before the body was read, with the source closed, every time", async () => {
    for (let round = 0; round < 20; round++) {
      let closed = false;
      async function* endless() {
        try {
          for (;;) yield Buffer.alloc(256 * 1024);
        } finally {
          closed = true;
        }
      }
      const res = await httpRequest(`${base}/refuse`, { method: "PUT", body: endless() });
      expect([res.status, await res.text(), closed]).toEqual([403, "not yours", true]);
    }
  });

  it("returns a refusal from a server that then stops reading but keeps the connection, with the source closed", async () => {
    // Answers as soon as the headers are in, then reads no more and never closes: a write that waits to drain would wait forever.
    const sockets = new Set<Socket>();
    const stubborn = createNetServer((socket) => {
      sockets.add(socket);
      socket.once("data", () => {
        socket.write("HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nnot yours");
        socket.pause();
      });
    });
    await new Promise<void>((r) => stubborn.listen(0, "127.0.0.1", r));
    let closed = false;
    async function* slowThenBig() {
      try {
        yield Buffer.from("head");
        await new Promise((r) => setTimeout(r, 100)); // the answer comes while the source reads
        for (;;) yield Buffer.alloc(4 * 1024 * 1024);
      } finally {
        closed = true;
      }
    }
    try {
      const res = await httpRequest(`http://127.0.0.1:${(stubborn.address() as AddressInfo).port}/upload`, { method: "PUT", body: slowThenBig() });
      expect([res.status, await res.text(), closed]).toEqual([403, "not yours", true]);
    } finally {
      for (const socket of sockets) socket.destroy();
      stubborn.close();
    }
  }, 10_000);

  it("asks a GET again on a fresh connection when a kept-alive one is reset before it answers", async () => {
    // Each connection answers its first request and resets on its second, as a server that closed an idle
    // connection just as the client reused it.
    let connections = 0;
    const sockets = new Set<Socket>();
    const forgetful = createNetServer((socket) => {
      connections++;
      sockets.add(socket);
      let requests = 0;
      socket.on("data", () => {
        if (++requests === 1) socket.write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nyes");
        else socket.resetAndDestroy();
      });
    });
    await new Promise<void>((r) => forgetful.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(forgetful.address() as AddressInfo).port}/file`;
    try {
      expect(await (await httpRequest(url)).text()).toBe("yes");
      expect(await (await httpRequest(url)).text()).toBe("yes"); // reset on the reused connection, answered on a new one
      expect(connections).toBe(2);
    } finally {
      for (const socket of sockets) socket.destroy();
      forgetful.close();
    }
  });

  it("gives up on a server that does not answer within the idle timeout", async () => {
    await expect(httpRequest(`${base}/silent`, { idleTimeoutMs: 200 })).rejects.toThrow(/no answer from 127\.0\.0\.1:\d+ in 200 ms/);
  });
});
