import { createServer, type Server } from 'node:http';
import { Queue, type ConnectionOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Keys } from '../../src/store/keys.ts';
import { statusValue } from '../../src/webhook/envelope.ts';
import { startWebhookReceiver } from '../../src/webhook/receiver.ts';
import { verifySubscription } from '../../src/webhook/subscription.ts';
import { createWebhookQueue, startWebhookWorker, WebhookOutbox, type WebhookJob } from '../../workers/webhook.ts';
import { waitFor } from '../helpers/devices.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

const SECRET = 'test-app-secret';
const status = (wamid: string, s: 'sent' | 'delivered' = 'sent') =>
  statusValue([{ wamid, status: s, at: Date.now(), recipientId: '15551234567' }]);

/** An endpoint answering a scripted sequence of statuses (then 200), recording the bodies it accepted. */
async function scriptedEndpoint(script: number[], opts: { hangMs?: number } = {}) {
  const seen: { status: number; body: string }[] = [];
  const state = { answered: 0 };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const code = script.shift() ?? 200;
      seen.push({ status: code, body: Buffer.concat(chunks).toString() });
      if (opts.hangMs) return void setTimeout(() => { state.answered++; res.writeHead(200).end(); }, opts.hangMs);
      state.answered++;
      res.writeHead(code).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}/hook`, seen, state, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

describe('webhook delivery', () => {
  let prefix: string;
  let redis: Redis;
  let keys: Keys;
  let queue: Queue<WebhookJob>;
  let outbox: WebhookOutbox;
  let stop: (() => Promise<void>)[];
  const connection = () => ({ url: testRedisUrl(), maxRetriesPerRequest: null }) as ConnectionOptions;

  beforeEach(() => {
    prefix = testPrefix('wh');
    redis = new Redis(testRedisUrl());
    keys = new Keys(prefix);
    queue = createWebhookQueue(connection(), { prefix: keys.bullPrefix, queueName: keys.queueName('webhooks') });
    outbox = new WebhookOutbox(redis, keys, queue);
    stop = [];
  });
  afterEach(async () => {
    for (const s of stop.reverse()) await s();
    await queue.close();
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  function worker(url: string, over: Partial<{ maxAgeMs: number; timeoutMs: number }> = {}, onDropped?: (b: string, n: number) => void) {
    const w = startWebhookWorker({
      connection: connection(), redis, keys, prefix: keys.bullPrefix, queueName: keys.queueName('webhooks'),
      resolveTarget: async () => ({ url, appSecret: SECRET, wabaId: 'waba1', displayPhoneNumber: '15550001111' }),
      concurrency: 4, backoff: { baseMs: 20, maxMs: 100, maxAgeMs: over.maxAgeMs ?? 60_000 }, timeoutMs: over.timeoutMs ?? 2000,
      ...(onDropped ? { onDropped } : {}),
    });
    stop.push(() => w.worker.close());
    return w;
  }

  it('retries until HTTP 200: 500, 500, then 200 delivers once; a 201 or 204 counts as a failure', async () => {
    const ep = await scriptedEndpoint([500, 500, 201, 204]);
    stop.push(ep.close);
    const { stats } = worker(ep.url);
    await outbox.enqueue('b1', 'pn1', [status('wamid.A')], 60_000);
    await waitFor(() => stats.delivered === 1, 'delivery after retries');
    expect(ep.seen.map((s) => s.status)).toEqual([500, 500, 201, 204, 200]);
    expect(stats.failedAttempts).toBe(4);
    expect(await redis.llen(keys.webhookOutbox('b1'))).toBe(0);
  });

  it('keeps order and batches what queued up while the endpoint was failing', async () => {
    const ep = await scriptedEndpoint([503, 503]);
    stop.push(ep.close);
    const { stats } = worker(ep.url);
    await outbox.enqueue('b1', 'pn1', [status('wamid.1')], 60_000);
    await outbox.enqueue('b1', 'pn1', [status('wamid.2'), status('wamid.2', 'delivered')], 60_000);
    await outbox.enqueue('b1', 'pn1', [status('wamid.3')], 60_000);
    await waitFor(() => stats.delivered === 4, 'all updates');
    const ok = ep.seen.filter((s) => s.status === 200).flatMap((s) => JSON.parse(s.body).entry[0].changes.flatMap((c: any) => c.value.statuses.map((x: any) => `${x.id}:${x.status}`)));
    expect(ok).toEqual(['wamid.1:sent', 'wamid.2:sent', 'wamid.2:delivered', 'wamid.3:sent']);
    // What queued up behind the failures went out together, not one POST per update.
    expect(ep.seen.filter((x) => x.status === 200).length).toBeLessThan(4);
  });

  it('drops updates still undelivered after the age limit, and counts them', async () => {
    const ep = await scriptedEndpoint(Array(10_000).fill(500));
    stop.push(ep.close);
    const dropped: number[] = [];
    const { stats } = worker(ep.url, { maxAgeMs: 300 }, (_b, n) => dropped.push(n));
    await outbox.enqueue('b1', 'pn1', [status('wamid.X')], 60_000);
    await waitFor(() => stats.dropped === 1, 'the drop');
    expect(dropped).toEqual([1]);
    expect(await redis.llen(keys.webhookOutbox('b1'))).toBe(0);
    expect(ep.seen.length).toBeGreaterThan(1);
  });

  it('a receiver that does not answer in time counts as a failure and is retried', async () => {
    const ep = await scriptedEndpoint([], { hangMs: 1000 });
    stop.push(ep.close);
    const { stats } = worker(ep.url, { timeoutMs: 100 });
    await outbox.enqueue('b1', 'pn1', [status('wamid.T')], 60_000);
    await waitFor(() => stats.failedAttempts >= 2, 'timeouts');
    expect(stats.delivered).toBe(0);
  });

  it('a slow endpoint of one business does not hold up another business', async () => {
    const slow = await scriptedEndpoint([], { hangMs: 3000 });
    const fast = await startWebhookReceiver({ appSecret: SECRET, verifyToken: 'v' });
    stop.push(slow.close, fast.close);
    const w = startWebhookWorker({
      connection: connection(), redis, keys, prefix: keys.bullPrefix, queueName: keys.queueName('webhooks'),
      resolveTarget: async (b) => ({ url: b === 'slow' ? slow.url : fast.url, appSecret: SECRET, wabaId: 'w', displayPhoneNumber: '1555' }),
      concurrency: 4, backoff: { baseMs: 20, maxMs: 100, maxAgeMs: 60_000 }, timeoutMs: 10_000,
    });
    stop.push(() => w.worker.close());
    await outbox.enqueue('slow', 'pn', [status('wamid.S')], 60_000);
    await waitFor(() => slow.seen.length === 1, 'the slow endpoint to be called');
    await outbox.enqueue('fast', 'pn', [status('wamid.F')], 60_000);
    await waitFor(() => fast.statuses().length === 1, 'fast business delivered');
    expect(slow.state.answered).toBe(0); // B was delivered while A's endpoint was still holding its request
  });

  it('the receiver rejects a bad signature with 401 and accepts a good one', async () => {
    const r = await startWebhookReceiver({ appSecret: SECRET, verifyToken: 'v' });
    stop.push(r.close);
    const bad = await fetch(r.url, { method: 'POST', body: '{}', headers: { 'x-hub-signature-256': 'sha256=00' } });
    expect(bad.status).toBe(401);
    expect(r.received).toEqual([]);
  });

  it('the subscription check succeeds only on 200 echoing the challenge', async () => {
    const r = await startWebhookReceiver({ appSecret: SECRET, verifyToken: 'right' });
    stop.push(r.close);
    expect(await verifySubscription(r.url, 'right')).toEqual({ ok: true });
    expect(await verifySubscription(r.url, 'wrong')).toMatchObject({ ok: false, reason: expect.stringContaining('403') });
    const wrongBody = await scriptedEndpoint([200]);
    const err = await scriptedEndpoint([500]);
    stop.push(wrongBody.close, err.close);
    expect(await verifySubscription(wrongBody.url, 'right')).toMatchObject({ ok: false, reason: expect.stringContaining('without echoing') });
    expect(await verifySubscription(err.url, 'right')).toMatchObject({ ok: false, reason: expect.stringContaining('500') });
    expect(await verifySubscription('http://127.0.0.1:9/none', 'right')).toMatchObject({ ok: false, reason: expect.stringContaining('unreachable') });
  });
});
