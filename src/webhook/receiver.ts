import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { maskPhone } from '../log.ts';
import { verifySignature } from './signature.ts';

/** One delivery as the receiver got it: the exact bytes, the signature header and the parsed body. */
export interface ReceivedWebhook {
  raw: Buffer;
  signature: string | undefined;
  body: any;
  at: number;
}

/** A running webhook receiver. */
export interface WebhookReceiver {
  url: string;
  received: ReceivedWebhook[];
  /** Every status object received, in arrival order. */
  statuses(): { id: string; status: string; [k: string]: unknown }[];
  /** Every inbound message object received, in arrival order. */
  messages(): { id: string; from: string; [k: string]: unknown }[];
  /** Makes the next POSTs answer `status` (tests of retries); `null` restores 200. */
  failWith(status: number | null): void;
  /** Fails this share (0..1) of POSTs with 500, and/or delays every answer (a slow endpoint). */
  misbehave(opts: { failRate?: number; delayMs?: number }): void;
  /** Signed POSTs received and not answered yet (held by `delayMs`). */
  answering(): number;
  /** Signed POSTs answered with a failure so far (`failWith`, `failRate`). */
  refused(): number;
  close(): Promise<void>;
}

const readBody = (req: IncomingMessage) =>
  new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });

/**
 * A business's webhook endpoint, as the demo and the tests use it: answers the subscription check, verifies
 * X-Hub-Signature-256 over the exact bytes (401 on mismatch), records every delivery and, with `print`,
 * writes one line per status or message (never message text).
 */
export async function startWebhookReceiver(opts: {
  port?: number;
  host?: string;
  appSecret: string;
  verifyToken: string;
  print?: boolean;
  onUpdate?: (w: ReceivedWebhook) => void;
}): Promise<WebhookReceiver> {
  const received: ReceivedWebhook[] = [];
  let failStatus: number | null = null;
  let failRate = 0;
  let delayMs = 0;
  let answering = 0;
  let refused = 0;
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method === 'GET') {
      const ok = url.searchParams.get('hub.mode') === 'subscribe' && url.searchParams.get('hub.verify_token') === opts.verifyToken;
      res.writeHead(ok ? 200 : 403, { 'content-type': 'text/plain' });
      return res.end(ok ? (url.searchParams.get('hub.challenge') ?? '') : 'forbidden');
    }
    if (req.method !== 'POST') {
      res.writeHead(405);
      return res.end();
    }
    const raw = await readBody(req);
    const signature = req.headers['x-hub-signature-256'] as string | undefined;
    if (!verifySignature(opts.appSecret, raw, signature)) {
      res.writeHead(401, { 'content-type': 'text/plain' });
      return res.end('bad signature');
    }
    if (delayMs) {
      answering++;
      await new Promise((r) => setTimeout(r, delayMs)).finally(() => answering--);
    }
    if (failStatus !== null || (failRate > 0 && Math.random() < failRate)) {
      refused++;
      res.writeHead(failStatus ?? 500);
      return res.end();
    }
    const w: ReceivedWebhook = { raw, signature, body: JSON.parse(raw.toString('utf8')), at: Date.now() };
    received.push(w);
    opts.onUpdate?.(w);
    if (opts.print) {
      for (const change of w.body.entry?.flatMap((e: any) => e.changes) ?? []) {
        for (const s of change.value?.statuses ?? []) {
          process.stdout.write(`webhook status ${s.status} ${s.id}${s.errors ? ` error ${s.errors[0]?.code}` : ''}\n`);
        }
        for (const m of change.value?.messages ?? []) {
          process.stdout.write(`webhook message ${m.id} from ${maskPhone(m.from)} type ${m.type}\n`);
        }
      }
    }
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok');
  };
  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      res.writeHead(400);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const values = () => received.flatMap((w) => w.body.entry?.flatMap((e: any) => e.changes.map((c: any) => c.value)) ?? []);
  return {
    url: `http://127.0.0.1:${port}/webhook`,
    received,
    statuses: () => values().flatMap((v: any) => v.statuses ?? []),
    messages: () => values().flatMap((v: any) => v.messages ?? []),
    failWith: (s) => { failStatus = s; },
    answering: () => answering,
    refused: () => refused,
    misbehave: (o) => {
      failRate = o.failRate ?? 0;
      delayMs = o.delayMs ?? 0;
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
