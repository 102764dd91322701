import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';

/** One request as a scripted endpoint saw it: the exact bytes, the headers, the answer given and when. */
export interface SeenRequest {
  method: string;
  url: string;
  status: number;
  raw: Buffer;
  body: string;
  headers: IncomingHttpHeaders;
  at: number;
}

/**
 * An HTTP endpoint on 127.0.0.1 answering a scripted sequence of statuses (then 200), with an optional
 * answer body and an optional hang (it answers only after `hangMs`, to play a slow receiver).
 */
export async function scriptedEndpoint(script: number[], opts: { hangMs?: number; answer?: string; headers?: Record<string, string> } = {}) {
  const seen: SeenRequest[] = [];
  const state = { answered: 0 };
  const listeners: ((r: SeenRequest) => void)[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const status = script.shift() ?? 200;
      const raw = Buffer.concat(chunks);
      const r: SeenRequest = { method: req.method ?? '', url: req.url ?? '', status, raw, body: raw.toString('utf8'), headers: req.headers, at: Date.now() };
      seen.push(r);
      for (const l of listeners) l(r);
      const answer = () => {
        state.answered++;
        res.writeHead(status, opts.headers).end(opts.answer ?? '');
      };
      if (opts.hangMs) setTimeout(answer, opts.hangMs);
      else answer();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    seen,
    state,
    /** Resolves once `n` requests have arrived (bounded, so a broken test fails instead of hanging). */
    requests(n: number, timeoutMs = 20_000): Promise<SeenRequest[]> {
      if (seen.length >= n) return Promise.resolve(seen.slice(0, n));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${n} requests (got ${seen.length})`)), timeoutMs);
        listeners.push(() => {
          if (seen.length < n) return;
          clearTimeout(timer);
          resolve(seen.slice(0, n));
        });
      });
    },
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** A port nothing listens on: opened, noted and closed again (a connection-refused endpoint). */
export async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((r) => server.close(() => r()));
  return `http://127.0.0.1:${port}/hook`;
}

/** Resolves with the first value `register` hands to its callback, or rejects after `timeoutMs`. */
export function nextCall<T>(register: (cb: (v: T) => void) => void, what: string, timeoutMs = 20_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
    register((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}
