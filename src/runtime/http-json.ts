import http from 'node:http';
import https from 'node:https';

/** An HTTP answer: its status and its body parsed as JSON (null when empty or not JSON). */
export interface JsonAnswer {
  status: number;
  json: any;
}

/**
 * A small JSON-over-HTTP client on Node's own `http` with keep-alive connections.
 *
 * The router talks to the transport for every message; global `fetch` (undici behind WHATWG streams) cost
 * ~4 % of a worker's CPU in `bench --profile`, a plain keep-alive request a fraction of it.
 */
export class HttpJsonClient {
  private readonly agent: http.Agent;
  private readonly mod: typeof http | typeof https;
  private readonly base: URL;

  constructor(baseUrl: string, maxSockets = 64) {
    this.base = new URL(baseUrl);
    this.mod = this.base.protocol === 'https:' ? https : http;
    this.agent = new this.mod.Agent({ keepAlive: true, maxSockets, keepAliveMsecs: 10_000 });
  }

  /** Sends one request; rejects on network errors and on the timeout, resolves with any HTTP status. */
  request(method: string, path: string, body: unknown, timeoutMs: number, headers: Record<string, string> = {}): Promise<JsonAnswer> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = this.mod.request({
        protocol: this.base.protocol,
        hostname: this.base.hostname,
        port: this.base.port,
        path: this.base.pathname.replace(/\/$/, '') + path,
        method,
        agent: this.agent,
        headers: payload ? { ...headers, 'content-type': 'application/json', 'content-length': payload.length } : headers,
        timeout: timeoutMs,
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: any = null;
          try {
            json = text ? JSON.parse(text) : null;
          } catch {
            json = null;
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
