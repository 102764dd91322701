import { randomBytes } from 'node:crypto';
import { seal } from '../../src/store/sealer.ts';
import { createHmac } from 'node:crypto';
import type { Job, Queue, ConnectionOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Keys } from '../../src/store/keys.ts';
import type { WebhookTarget } from '../../src/webhook/delivery.ts';
import { inboundMessageValue, statusValue } from '../../src/webhook/envelope.ts';
import { startWebhookReceiver } from '../../src/webhook/receiver.ts';
import { startWebhookWorker, webhookBackoffStrategy, WebhookAttemptError, webhookDelay, type WebhookWorkerOptions } from '../../workers/webhook.ts';
import { createWebhookQueue, WebhookOutbox, type WebhookJob } from '../../src/queues/webhooks.ts';
import { waitFor } from '../helpers/devices.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';
import { dumpPrefix, keysContaining } from '../helpers/scan.ts';
import { closedPortUrl, nextCall, scriptedEndpoint } from './endpoint.ts';

const SECRET = 'test-app-secret';
const status = (wamid: string, s: 'sent' | 'delivered' = 'sent') =>
  statusValue([{ wamid, status: s, at: Date.now(), recipientId: '15551234567' }]);
const statusesOf = (body: string): string[] =>
  JSON.parse(body).entry[0].changes.flatMap((c: any) => c.value.statuses.map((x: any) => `${x.id}:${x.status}`));

describe('webhook delivery', () => {
  let prefix: string;
  let redis: Redis;
  let keys: Keys;
  let queue: Queue<WebhookJob>;
  let outbox: WebhookOutbox;
  let stop: (() => Promise<void>)[];
  const connection = () => ({ url: testRedisUrl(), maxRetriesPerRequest: null }) as ConnectionOptions;
  // Outbox entries are sealed with the business's data key; one key per test business is enough here.
  const dataKey = randomBytes(32);
  const dataKeyOf = async () => dataKey;
  /** An outbox entry as the outbox writes it (sealed), for tests that set up a batch by hand. */
  const sealedEntry = (b: string, p: string, id: string) => seal(dataKey, JSON.stringify({ p, v: status(id), t: Date.now() }), keys.webhookOutbox(b));

  beforeEach(() => {
    prefix = testPrefix('wh');
    redis = new Redis(testRedisUrl());
    keys = new Keys(prefix);
    queue = createWebhookQueue(connection(), { prefix: keys.bullPrefix, queueName: keys.queueName('webhooks') });
    outbox = new WebhookOutbox(async () => redis, keys, queue, dataKeyOf);
    stop = [];
  });
  afterEach(async () => {
    for (const s of stop.reverse()) await s();
    await queue.close();
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  function worker(url: string | ((businessId: string, phoneNumberId: string) => WebhookTarget | null), over: Partial<WebhookWorkerOptions> & { maxAgeMs?: number; baseMs?: number; maxMs?: number } = {}) {
    const { maxAgeMs, baseMs, maxMs, ...rest } = over;
    const w = startWebhookWorker({
      connection: connection(), storeOf: async () => redis, keys, dataKeyOf, prefix: keys.bullPrefix, queueName: keys.queueName('webhooks'),
      resolveTarget: async (b, p) => (typeof url === 'string' ? { url, appSecret: SECRET, wabaId: 'waba1', displayPhoneNumber: '15550001111' } : url(b, p)),
      concurrency: 4, backoff: { baseMs: baseMs ?? 20, maxMs: maxMs ?? 100, maxAgeMs: maxAgeMs ?? 60_000 }, timeoutMs: 2000,
      ...rest,
    });
    stop.push(() => w.close());
    return w;
  }
  const finished = (w: ReturnType<typeof worker>, event: 'completed' | 'failed', jobId: string) =>
    nextCall<Job>((cb) => w.worker.on(event, (job: Job | undefined) => { if (job?.id === jobId) cb(job); }), `job ${jobId} ${event}`);
  /** The first wake-up job of `businessId` to complete or fail for good (its id is BullMQ's to choose). */
  const wakeFinished = (w: ReturnType<typeof worker>, event: 'completed' | 'failed', businessId: string) =>
    nextCall<Job>((cb) => w.worker.on(event, (job: Job | undefined) => {
      if (job?.data.business_id === businessId && (event === 'completed' || job.finishedOn)) cb(job);
    }), `the wake-up of ${businessId} ${event}`);

  it('adds one wake-up for appends that complete together, and another for an append after it started', async () => {
    const adds: string[] = [];
    const add = queue.add.bind(queue);
    queue.add = ((name: string, data: WebhookJob, opts?: object) => {
      adds.push(name);
      return add(name as never, data as never, opts as never);
    }) as typeof queue.add;
    // As in a worker: one auto-pipelined connection, so the 20 appends go out together and their answers
    // mostly come back in the same read (how many turns they take is up to the socket: the count is a bound).
    const pipelined = new Redis(testRedisUrl(), { enableAutoPipelining: true });
    stop.push(async () => pipelined.disconnect());
    const shared = new WebhookOutbox(async () => pipelined, keys, queue, dataKeyOf);
    await Promise.all(Array.from({ length: 20 }, (_, i) => shared.enqueue('b1', 'pn1', [status(`wamid.C${i}`)], 60_000)));
    expect(await redis.llen(keys.webhookOutbox('b1'))).toBe(20);
    expect(adds.length).toBeGreaterThanOrEqual(1);
    expect(adds.length).toBeLessThan(10);
    expect(await queue.count()).toBe(1);
    // An append after those adds began gets one of its own.
    const before = adds.length;
    await shared.enqueue('b1', 'pn1', [status('wamid.LATER')], 60_000);
    expect(adds.length).toBe(before + 1);
    // Another business gets its own.
    await shared.enqueue('b2', 'pn2', [status('wamid.B2')], 60_000);
    expect(adds.length).toBe(before + 2);
    expect(await queue.count()).toBe(2);
  });

  it('keeps pending updates sealed: a message waiting for a failing endpoint is not readable in Redis', async () => {
    const ep = await scriptedEndpoint(Array(1000).fill(503));
    stop.push(ep.close);
    const w = worker(ep.url);
    const canary = `CANARY-${randomBytes(6).toString('hex')}`;
    await outbox.enqueue('b1', 'pn1', [{ contacts: [{ wa_id: '15557654321' }], messages: [{ from: '15557654321', id: 'wamid.IN', type: 'text', text: { body: canary } }] }], 60_000);
    await nextCall<void>((cb) => w.worker.on('failed', () => cb()), 'a failed attempt');
    const raw = (await redis.lrange(keys.webhookOutbox('b1'), 0, -1)).join('\n');
    expect(raw).not.toContain(canary);
    expect(raw).not.toContain('15557654321');
    expect(ep.seen.some((x) => x.body.includes(canary))).toBe(true); // it was the real payload that failed
  });

  it('signs the exact bytes it sends: ASCII-only JSON, verified by an independent HMAC over the received bytes', async () => {
    const ep = await scriptedEndpoint([]);
    stop.push(ep.close);
    const w = worker(ep.url);
    const done = wakeFinished(w, 'completed', 'b1');
    const text = 'Grüße, äöå 👋 naïve canary-7f3a';
    await outbox.enqueue('b1', 'pn1', [
      inboundMessageValue('15551234567', 'wamid.IN', { message: { type: 'text', text: { body: text } }, timestamp: '1700000000', profileName: 'Åsa' }),
    ], 60_000);
    const [req] = await ep.requests(1);
    expect(req!.method).toBe('POST');
    expect(req!.headers['content-type']).toBe('application/json');
    expect([...req!.raw].every((b) => b < 0x80)).toBe(true);
    expect(req!.body).toContain('Gr\\u00fc\\u00dfe, \\u00e4\\u00f6\\u00e5 \\ud83d\\udc4b');
    const independent = createHmac('sha256', SECRET).update(req!.raw).digest('hex');
    expect(req!.headers['x-hub-signature-256']).toBe(`sha256=${independent}`);
    const parsed = JSON.parse(req!.body);
    expect(parsed).toMatchObject({
      object: 'whatsapp_business_account',
      entry: [{ id: 'waba1', changes: [{ field: 'messages', value: {
        messaging_product: 'whatsapp',
        metadata: { display_phone_number: '15550001111', phone_number_id: 'pn1' },
        contacts: [{ profile: { name: 'Åsa' }, wa_id: '15551234567' }],
        messages: [{ from: '15551234567', id: 'wamid.IN', type: 'text', text: { body: text } }],
      } }] }],
    });
    // The completed wake-up stays visible naming only the business; the content and the user's number left
    // Redis with the 200 (the outbox entry is gone, not merely sealed).
    const job = await done;
    expect(job.data).toEqual({ business_id: 'b1' });
    expect(await redis.exists(keys.webhookOutbox('b1'))).toBe(0);
    const dump = await dumpPrefix(testRedisUrl(), prefix);
    expect(keysContaining(dump, 'canary-7f3a')).toEqual([]);
    expect(keysContaining(dump, '15551234567')).toEqual([]);
  });

  it('a wake-up retried after 500, 500 delivers on its third attempt, once', async () => {
    const ep = await scriptedEndpoint([500, 500]);
    stop.push(ep.close);
    const w = worker(ep.url);
    const done = wakeFinished(w, 'completed', 'b1');
    await outbox.enqueue('b1', 'pn1', [status('wamid.A')], 60_000);
    const job = await done;
    expect(job.attemptsMade).toBe(3);
    expect(ep.seen.map((s) => s.status)).toEqual([500, 500, 200]);
    expect(statusesOf(ep.seen[2]!.body)).toEqual(['wamid.A:sent']);
    expect(w.stats).toEqual({ delivered: 1, dropped: 0, failedAttempts: 2 });
    expect(await queue.getJobCounts('completed', 'failed', 'waiting', 'delayed')).toEqual({ completed: 1, failed: 0, waiting: 0, delayed: 0 });
    expect(await redis.llen(keys.webhookOutbox('b1'))).toBe(0);
  });

  it('only 200 is success: 201, 204, 302, 404 and 503 are failures and retried', async () => {
    const ep = await scriptedEndpoint([201, 204, 302, 404, 503], { headers: { location: 'http://127.0.0.1:9/elsewhere' } });
    stop.push(ep.close);
    const w = worker(ep.url);
    const done = wakeFinished(w, 'completed', 'b1');
    await outbox.enqueue('b1', 'pn1', [status('wamid.B')], 60_000);
    expect((await done).attemptsMade).toBe(6);
    expect(ep.seen.map((s) => s.status)).toEqual([201, 204, 302, 404, 503, 200]);
    expect(ep.seen.map((s) => statusesOf(s.body))).toEqual(Array(6).fill(['wamid.B:sent']));
    expect(w.stats).toEqual({ delivered: 1, dropped: 0, failedAttempts: 5 });
    expect(await redis.llen(keys.webhookOutbox('b1'))).toBe(0);
  });

  it('a timeout and a refused connection count as failures and are retried, the updates kept', async () => {
    const slow = await scriptedEndpoint([], { hangMs: 5000 });
    stop.push(slow.close);
    const refused = await closedPortUrl();
    const w = worker((b) => ({ url: b === 'slow' ? slow.url : refused, appSecret: SECRET, wabaId: 'w', displayPhoneNumber: '1555' }), { timeoutMs: 100 });
    const errors: string[] = [];
    const twoEach = nextCall<void>((cb) => w.worker.on('failed', (job, err) => {
      errors.push(`${job?.data.business_id} ${err.message}`);
      const n = (b: string) => errors.filter((e) => e.startsWith(b)).length;
      if (n('slow') >= 2 && n('refused') >= 2) cb();
    }), 'two failed attempts of each');
    await outbox.enqueue('slow', 'pn1', [status('wamid.T')], 60_000);
    await outbox.enqueue('refused', 'pn1', [status('wamid.R')], 60_000);
    await twoEach;
    expect(errors.find((e) => e.startsWith('slow'))).toMatch(/webhook POST failed: .*(timeout|aborted)/i);
    expect(errors.find((e) => e.startsWith('refused'))).toMatch(/webhook POST failed: .*ECONNREFUSED/);
    expect(w.stats).toMatchObject({ delivered: 0, dropped: 0 });
    expect(w.stats.failedAttempts).toBeGreaterThanOrEqual(4);
    // Still owed, so still there for the next attempt.
    expect(await redis.llen(keys.webhookOutbox('slow'))).toBe(1);
    expect(await redis.llen(keys.webhookOutbox('refused'))).toBe(1);
  });

  it('a job that is not a wake-up {business_id} fails at once with a clear reason and is kept, never delivered or dropped silently', async () => {
    const ep = await scriptedEndpoint([]);
    stop.push(ep.close);
    const drops: string[] = [];
    const w = worker(ep.url, { onDropped: (b) => drops.push(b) });
    // b1 has an update waiting: a malformed job naming b1 must not deliver it either.
    await redis.rpush(keys.webhookOutbox('b1'), sealedEntry('b1', 'pn1', 'wamid.W'));
    const bad: [string, unknown, RegExp][] = [
      ['bad-empty', {}, /^invalid webhook job: business_id: /],
      ['bad-number', { business_id: 5 }, /^invalid webhook job: business_id: /],
      ['bad-blank', { business_id: '' }, /^invalid webhook job: business_id: /],
      // A job carrying updates itself: they would be lost without a word if it merely woke b1.
      ['bad-values', { business_id: 'b1', phone_number_id: 'pn1', values: [status('wamid.V')] }, /^invalid webhook job: \(data\): .*"values"/],
    ];
    const failed = bad.map(([id]) => finished(w, 'failed', id));
    for (const [id, data] of bad) await queue.add('webhook', data as never, { jobId: id });
    const jobs = await Promise.all(failed);
    for (const [i, job] of jobs.entries()) {
      expect(job.failedReason).toMatch(bad[i]![2]);
      expect(job.attemptsMade).toBe(1);
      expect(await job.getState()).toBe('failed');
    }
    expect((await queue.getFailed()).map((j) => j.id).sort()).toEqual(bad.map(([id]) => id).sort());
    expect(ep.seen).toEqual([]);
    expect(drops).toEqual([]);
    expect(w.stats).toEqual({ delivered: 0, dropped: 0, failedAttempts: 0 });
    expect(await redis.llen(keys.webhookOutbox('b1'))).toBe(1);
  });

  it('the injected fetch is used, with the signed body and headers', async () => {
    const calls: { url: string; init: RequestInit }[] = [];
    const w = worker('https://example.invalid/hook', {
      fetchImpl: async (url, init) => { calls.push({ url, init }); return new Response('ok', { status: 200 }); },
    });
    const done = wakeFinished(w, 'completed', 'b1');
    await outbox.enqueue('b1', 'pn1', [status('wamid.F')], 60_000);
    await done;
    expect(calls).toHaveLength(1);
    expect(calls[0]!.url).toBe('https://example.invalid/hook');
    const body = calls[0]!.init.body as string;
    expect(statusesOf(body)).toEqual(['wamid.F:sent']);
    expect((calls[0]!.init.headers as Record<string, string>)['x-hub-signature-256']).toBe(`sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`);
  });

  describe('the per-business outbox', () => {
    it('keeps order and batches what queued up while the endpoint was failing', async () => {
      const ep = await scriptedEndpoint([503, 503]);
      stop.push(ep.close);
      const { stats } = worker(ep.url);
      await outbox.enqueue('b1', 'pn1', [status('wamid.1')], 60_000);
      await outbox.enqueue('b1', 'pn1', [status('wamid.2'), status('wamid.2', 'delivered')], 60_000);
      await outbox.enqueue('b1', 'pn1', [status('wamid.3')], 60_000);
      await waitFor(() => stats.delivered === 4, 'all updates');
      const ok = ep.seen.filter((s) => s.status === 200).flatMap((s) => statusesOf(s.body));
      expect(ok).toEqual(['wamid.1:sent', 'wamid.2:sent', 'wamid.2:delivered', 'wamid.3:sent']);
      // What queued up behind the failures went out together, not one POST per update.
      expect(ep.seen.filter((x) => x.status === 200).length).toBeLessThan(4);
    });

    it('drops updates still undelivered at the age limit, after a last attempt at the limit; onDropped gets the count and the job', async () => {
      const ep = await scriptedEndpoint(Array(1000).fill(500));
      stop.push(ep.close);
      const drops: [string, number, string | undefined][] = [];
      // A 60 s backoff against a 300 ms age limit: only the clamp to the age limit brings the last attempt
      // (and the drop) before the wait below gives up.
      const w = worker(ep.url, { maxAgeMs: 300, baseMs: 60_000, maxMs: 60_000, onDropped: (b, n, id) => drops.push([b, n, id]) });
      const done = wakeFinished(w, 'completed', 'b1');
      const queuedFrom = Date.now();
      await outbox.enqueue('b1', 'pn1', [status('wamid.X'), status('wamid.Y')], 60_000);
      const job = await done;
      expect(drops).toEqual([['b1', 2, job.id]]);
      expect(w.stats).toEqual({ delivered: 0, dropped: 2, failedAttempts: 2 });
      // Two attempts, the last one at (not before) the age limit, both carrying both updates.
      expect(ep.seen.map((s) => s.status)).toEqual([500, 500]);
      expect(ep.seen.map((s) => statusesOf(s.body))).toEqual([['wamid.X:sent', 'wamid.Y:sent'], ['wamid.X:sent', 'wamid.Y:sent']]);
      expect(ep.seen[1]!.at).toBeGreaterThanOrEqual(queuedFrom + 300);
      // Nothing owed is left: the outbox is empty and no wake-up is waiting to retry.
      expect(await redis.llen(keys.webhookOutbox('b1'))).toBe(0);
      expect(await queue.getJobCounts('completed', 'failed', 'waiting', 'delayed')).toEqual({ completed: 1, failed: 0, waiting: 0, delayed: 0 });
    });

    it('a number without a target loses only its own updates; the business\'s other numbers are delivered', async () => {
      const ep = await scriptedEndpoint([]);
      stop.push(ep.close);
      const drops: [string, number][] = [];
      const { stats } = worker((_b, p) => (p === 'gone' ? null : { url: ep.url, appSecret: SECRET, wabaId: 'w', displayPhoneNumber: '1555' }), {
        onDropped: (b, n) => drops.push([b, n]),
      });
      // Queued before the worker picks them up, so both numbers are in one batch and 'gone' comes first.
      await redis.rpush(keys.webhookOutbox('b1'), ...[['gone', 'wamid.G'], ['pn1', 'wamid.K'], ['gone', 'wamid.H']].map(([p, id]) => sealedEntry('b1', p!, id!)));
      await outbox.wake('b1');
      await waitFor(() => stats.delivered === 1 && stats.dropped === 2, 'the delivery and the drop');
      expect(drops).toEqual([['b1', 2]]);
      expect(ep.seen.flatMap((s) => statusesOf(s.body))).toEqual(['wamid.K:sent']);
      expect(await redis.llen(keys.webhookOutbox('b1'))).toBe(0);
    });

    it('after a partial failure only what is still owed is retried', async () => {
      const a = await scriptedEndpoint([]);
      const b = await scriptedEndpoint([500]);
      stop.push(a.close, b.close);
      const { stats } = worker((_b, p) => ({ url: p === 'pnA' ? a.url : b.url, appSecret: SECRET, wabaId: 'w', displayPhoneNumber: '1555' }));
      await redis.rpush(keys.webhookOutbox('b1'), ...[['pnA', 'wamid.1'], ['pnB', 'wamid.2']].map(([p, id]) => sealedEntry('b1', p!, id!)));
      await outbox.wake('b1');
      await waitFor(() => stats.delivered === 2, 'both numbers');
      expect(a.seen.map((s) => statusesOf(s.body))).toEqual([['wamid.1:sent']]);
      expect(b.seen.map((s) => s.status)).toEqual([500, 200]);
    });

    it('a slow endpoint of one business does not hold up another business', async () => {
      const slow = await scriptedEndpoint([], { hangMs: 3000 });
      const fast = await startWebhookReceiver({ appSecret: SECRET, verifyToken: 'v' });
      stop.push(slow.close, fast.close);
      worker((b) => ({ url: b === 'slow' ? slow.url : fast.url, appSecret: SECRET, wabaId: 'w', displayPhoneNumber: '1555' }), { timeoutMs: 10_000 });
      await outbox.enqueue('slow', 'pn', [status('wamid.S')], 60_000);
      await slow.requests(1);
      await outbox.enqueue('fast', 'pn', [status('wamid.F')], 60_000);
      await waitFor(() => fast.statuses().length === 1, 'fast business delivered');
      expect(slow.state.answered).toBe(0); // B was delivered while A's endpoint was still holding its request
      await slow.close(); // rather than let the worker's close wait out the held request
    });
  });

  describe('direct delivery from the appending process', () => {
    it('delivers at once, in order, with no job run: the queue keeps one delayed job per business as its safety net', async () => {
      const ep = await scriptedEndpoint([]);
      stop.push(ep.close);
      const w = worker(ep.url);
      outbox.deliverDirectly((b) => w.deliverNow(b), 60_000);
      for (let i = 1; i <= 5; i++) await outbox.enqueue('b1', 'pn1', [status(`wamid.D${i}`)], 60_000);
      await waitFor(() => w.stats.delivered === 5, 'all five delivered');
      await outbox.settle();
      expect(ep.seen.filter((x) => x.status === 200).flatMap((x) => statusesOf(x.body))).toEqual([1, 2, 3, 4, 5].map((i) => `wamid.D${i}:sent`));
      expect(await queue.getJobCounts('delayed', 'completed', 'active', 'wait')).toEqual({ delayed: 1, completed: 0, active: 0, wait: 0 });
      // Nothing waits, and the delivery lock is given back.
      expect(await redis.llen(keys.webhookOutbox('b1'))).toBe(0);
      expect(await redis.exists(keys.webhookLock('b1'))).toBe(0);
    });

    it('a holder that died: its lock lapses, and the safety job delivers what it left, once', async () => {
      const ep = await scriptedEndpoint([]);
      stop.push(ep.close);
      const w = worker(ep.url);
      outbox.deliverDirectly((b) => w.deliverNow(b), 200);
      // Another process took the lock and died (it is never released, only lapses).
      await redis.set(keys.webhookLock('b1'), 'a-process-that-died', 'PX', 1500);
      await outbox.enqueue('b1', 'pn1', [status('wamid.ORPHAN')], 60_000);
      await outbox.settle();
      expect(ep.seen).toEqual([]); // the direct delivery found the lock held and left it to its holder
      await waitFor(() => w.stats.delivered === 1, 'delivered by the job once the lock lapsed', 10_000);
      await waitFor(async () => (await queue.getJobCounts('completed')).completed === 1, 'the job completed');
      expect(ep.seen.flatMap((x) => statusesOf(x.body))).toEqual(['wamid.ORPHAN:sent']);
    });

    it('a failed attempt is retried by the job: everything arrives once, in order', async () => {
      const ep = await scriptedEndpoint([503, 503]);
      stop.push(ep.close);
      const w = worker(ep.url);
      outbox.deliverDirectly((b) => w.deliverNow(b), 100);
      await outbox.enqueue('b1', 'pn1', [status('wamid.R1')], 60_000);
      await outbox.enqueue('b1', 'pn1', [status('wamid.R2'), status('wamid.R2', 'delivered')], 60_000);
      await waitFor(() => w.stats.delivered === 3, 'all three', 10_000);
      expect(ep.seen.filter((x) => x.status === 200).flatMap((x) => statusesOf(x.body))).toEqual(['wamid.R1:sent', 'wamid.R2:sent', 'wamid.R2:delivered']);
      expect(await redis.exists(keys.webhookLock('b1'))).toBe(0);
    });

    it('a process with no room for another direct delivery hands the business to the queue at once, not after the safety delay', async () => {
      const slow = await scriptedEndpoint([], { hangMs: 3000 });
      const fast = await startWebhookReceiver({ appSecret: SECRET, verifyToken: 'v' });
      stop.push(slow.close, fast.close);
      // One direct delivery at a time in this process, and a safety delay far past the test.
      const w = worker((b) => ({ url: b === 'slow' ? slow.url : fast.url, appSecret: SECRET, wabaId: 'w', displayPhoneNumber: '1555' }), { concurrency: 1, timeoutMs: 10_000 });
      outbox.deliverDirectly((b) => w.deliverNow(b), 60_000);
      await outbox.enqueue('slow', 'pn', [status('wamid.S')], 60_000);
      await slow.requests(1);
      await outbox.enqueue('fast', 'pn', [status('wamid.F')], 60_000);
      await waitFor(() => fast.statuses().length === 1, 'the other business delivered by its job', 10_000);
      expect(slow.state.answered).toBe(0);
      await slow.close();
    });

    it('two processes appending for one business at once: one delivers at a time, each update once, each process\'s in its order', async () => {
      const ep = await scriptedEndpoint([]);
      stop.push(ep.close);
      const [w1, w2] = [worker(ep.url), worker(ep.url)];
      const other = new WebhookOutbox(async () => redis, keys, queue, dataKeyOf);
      outbox.deliverDirectly((b) => w1.deliverNow(b), 60_000);
      other.deliverDirectly((b) => w2.deliverNow(b), 60_000);
      await Promise.all([
        (async () => { for (let i = 0; i < 20; i++) await outbox.enqueue('b1', 'pn1', [status(`wamid.A${i}`)], 60_000); })(),
        (async () => { for (let i = 0; i < 20; i++) await other.enqueue('b1', 'pn1', [status(`wamid.B${i}`)], 60_000); })(),
      ]);
      await waitFor(() => w1.stats.delivered + w2.stats.delivered === 40, 'all forty', 10_000);
      await Promise.all([outbox.settle(), other.settle()]);
      const got = ep.seen.filter((x) => x.status === 200).flatMap((x) => statusesOf(x.body));
      expect(got).toHaveLength(40);
      expect(new Set(got).size).toBe(40);
      for (const tag of ['A', 'B']) expect(got.filter((x) => x.startsWith(`wamid.${tag}`))).toEqual(Array.from({ length: 20 }, (_, i) => `wamid.${tag}${i}:sent`));
    });
  });
});

describe('webhook backoff', () => {
  it('grows exponentially with jitter in [d/2, d] and stops growing at the cap', () => {
    const b = { baseMs: 1000, maxMs: 3_600_000 };
    expect([1, 2, 3, 4].map((n) => webhookDelay(n, b, () => 1))).toEqual([1000, 2000, 4000, 8000]);
    expect([1, 2, 3, 4].map((n) => webhookDelay(n, b, () => 0))).toEqual([500, 1000, 2000, 4000]);
    expect(webhookDelay(40, b, () => 1)).toBe(3_600_000);
  });

  it('never waits past the age limit of the failed attempt', () => {
    const strategy = webhookBackoffStrategy({ baseMs: 60_000, maxMs: 60_000 });
    const retryBy = Date.now() + 5_000;
    expect(strategy(1, 'webhook', new WebhookAttemptError('x', retryBy))).toBeLessThanOrEqual(5_000);
    expect(strategy(1, 'webhook', new WebhookAttemptError('x', Date.now() - 1))).toBe(0);
    expect(strategy(1, 'webhook', new Error('other'))).toBeGreaterThanOrEqual(30_000);
  });
});
