import { Queue, QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SealpostQueue, type OutboundJobData } from '../../src/index.ts';
import { createDevice, deviceMessages, openWindows, sendText, startSystem, waitFor, type TestSystem } from '../helpers/system.ts';
import { dumpPrefix, keysContaining } from '../helpers/scan.ts';

describe('direct enqueue: backends add jobs to the outbound queue with plain BullMQ', () => {
  let sys: TestSystem;
  let queue: Queue;
  let events: QueueEvents;
  let typed: SealpostQueue;

  beforeAll(async () => {
    sys = await startSystem();
    // Exactly what a backend writes: the queue name and prefix from docs/direct-enqueue.md, nothing of ours.
    queue = new Queue('{outbound}', { connection: { url: sys.redisUrl }, prefix: `${sys.prefix}:q` });
    events = new QueueEvents('{outbound}', { connection: { url: sys.redisUrl }, prefix: `${sys.prefix}:q` });
    await events.waitUntilReady();
    typed = new SealpostQueue({ connection: { url: sys.redisUrl } as never, prefix: sys.prefix });
  });
  afterAll(async () => {
    await typed?.close();
    await events?.close();
    await queue?.close();
    await sys?.close();
  });

  const text = (to: string, body: string, extra: Record<string, unknown> = {}) =>
    ({ messaging_product: 'whatsapp' as const, recipient_type: 'individual', to, type: 'text', text: { body }, ...extra });
  const statusesOf = (wamid: string) => sys.receiver.statuses().filter((s) => s.id === wamid);

  it('a plain BullMQ job reaches the device and produces the same webhooks as the HTTP path', async () => {
    const waId = await createDevice(sys.platformUrl, '+15557300001');
    await openWindows(sys, [waId]);
    const viaHttp = await sendText(sys, waId, 'over http', { biz_opaque_callback_data: 'twin-http' });
    const job = await queue.add('message', { phone_number_id: sys.business.phone_number_id, message: text(waId, 'over the queue', { biz_opaque_callback_data: 'twin-queue' }) });
    const answer = (await job.waitUntilFinished(events, 60_000)) as { messaging_product: string; messages: { id: string }[] };
    // Only the message id: the finished job (kept in Redis, shown on the board) names no user.
    expect(Object.keys(answer).sort()).toEqual(['messages', 'messaging_product']);
    expect(answer.messaging_product).toBe('whatsapp');
    const finished = await queue.getJob(job.id!);
    const stored = JSON.stringify({ data: finished!.data, returnvalue: finished!.returnvalue });
    expect(stored).not.toContain(waId);
    expect(stored).not.toContain(waId.slice(-7));
    const viaQueue = answer.messages[0]!.id;
    expect(viaQueue).toMatch(/^wamid\./);
    await waitFor(async () => (await deviceMessages(sys.platformUrl, waId)).length === 2, 'both messages shown');
    expect((await deviceMessages(sys.platformUrl, waId)).map((m) => [m.id, m.text?.body])).toEqual([[viaHttp, 'over http'], [viaQueue, 'over the queue']]);
    await waitFor(() => statusesOf(viaQueue).some((s) => s.status === 'delivered') && statusesOf(viaHttp).some((s) => s.status === 'delivered'), 'delivered webhooks for both');
    const shape = (wamid: string) => statusesOf(wamid).map((s) => ({ ...s, id: 'X', timestamp: 'T', biz_opaque_callback_data: (s.biz_opaque_callback_data as string | undefined)?.replace(/http|queue/, 'via') }));
    expect(shape(viaQueue)).toEqual(shape(viaHttp));
    expect(statusesOf(viaQueue).map((s) => s.status)).toEqual(['sent', 'delivered']);
    // The finished job keeps its outcome but not the content.
    const done = (await queue.getJob(job.id!))!;
    expect(done.data).toEqual({ phone_number_id: sys.business.phone_number_id, wamid: viaQueue });
  });

  it('fails a malformed job visibly with a clear reason, keeps it in the failed set, without its content', async () => {
    const bad: [unknown, RegExp][] = [
      ['not an object', /job data must be an object/],
      [{ phone_number_id: sys.business.phone_number_id }, /must have a message/],
      [{ phone_number_id: 'abc', message: text('15551230000', 'x') }, /phone_number_id must be a string of digits/],
      [{ phone_number_id: '999999999999', message: text('15551230000', 'x') }, /unknown phone_number_id/],
      [{ phone_number_id: sys.business.phone_number_id, message: { messaging_product: 'whatsapp', type: 'text', text: { body: 'no recipient' } } }, /^\(#100\) Invalid parameter/],
      [{ phone_number_id: sys.business.phone_number_id, message: { messaging_product: 'whatsapp', to: '15551230000', type: 'hologram' } }, /^\(#100\) Invalid parameter: Parameter type is invalid/],
      [{ phone_number_id: sys.business.phone_number_id, message: text('15551239999', 'outside the window') }, /^\(#131047\)/],
    ];
    for (const [data, reason] of bad) {
      const job = await queue.add('message', data as OutboundJobData);
      await expect(job.waitUntilFinished(events, 30_000)).rejects.toThrow(reason);
      const kept = (await queue.getJob(job.id!))!;
      expect(await kept.getState()).toBe('failed');
      expect(kept.failedReason).toMatch(reason);
      expect(kept.attemptsMade).toBe(1);
      expect(JSON.stringify(kept.data)).not.toMatch(/outside the window|no recipient/);
    }
  });

  it('is idempotent by the client-chosen id: the same key sends once and answers with the same wamid, even after the job was removed', async () => {
    const waId = await createDevice(sys.platformUrl, '+15557300002');
    await openWindows(sys, [waId]);
    const body = text(waId, 'exactly once');
    const id1 = await typed.send(sys.business.phone_number_id, body, { idempotencyKey: 'order-42-shipped' });
    const id2 = await typed.send(sys.business.phone_number_id, body, { idempotencyKey: 'order-42-shipped' });
    expect(id1).toBe('order-42-shipped');
    expect(id2).toBe(id1);
    const first = (await typed.result(id1)) as { messages: { id: string }[] };
    await (await queue.getJob(id1))!.remove();
    await typed.send(sys.business.phone_number_id, body, { idempotencyKey: 'order-42-shipped' });
    const again = (await typed.result('order-42-shipped')) as { messages: { id: string }[] };
    expect(again.messages[0]!.id).toBe(first.messages[0]!.id);
    await waitFor(() => statusesOf(first.messages[0]!.id).some((s) => s.status === 'delivered'), 'the delivered webhook');
    const shown = await deviceMessages(sys.platformUrl, waId);
    expect(shown.filter((m) => m.text?.body === 'exactly once')).toHaveLength(1);
    await expect(typed.send(sys.business.phone_number_id, body, { idempotencyKey: '12345' })).rejects.toThrow(/not only digits/);
  });

  it('delays jobs refused by the pair limit (45 in a burst, then one per 6 s) instead of failing them: every one is delivered', async () => {
    const waId = await createDevice(sys.platformUrl, '+15557300003');
    await openWindows(sys, [waId]);
    const ids: string[] = [];
    for (let i = 0; i < 47; i++) ids.push(await typed.send(sys.business.phone_number_id, text(waId, `burst ${i}`)));
    const answers = await Promise.all(ids.map((id) => typed.result(id, 120_000) as Promise<{ messages: { id: string }[] }>));
    expect(new Set(answers.map((a) => a.messages[0]!.id)).size).toBe(47);
    const jobs = await Promise.all(ids.map((id) => queue.getJob(id)));
    // The pair limit (45 in a burst) held some back: they were delayed, not failed, and no attempt was spent.
    expect(jobs.every((j) => j!.attemptsMade <= 1)).toBe(true);
    await waitFor(async () => (await deviceMessages(sys.platformUrl, waId)).filter((m) => m.text?.body?.startsWith('burst')).length === 47, 'all 47 shown', 120_000);
  }, 180_000);

  it('leaves no message content in Redis once jobs are done or refused', async () => {
    const waId = await createDevice(sys.platformUrl, '+15557300004');
    await openWindows(sys, [waId]);
    const canary = `canary-${Date.now()}-queue`;
    const ok = await queue.add('message', { phone_number_id: sys.business.phone_number_id, message: text(waId, `${canary} ok`) });
    const refused = await queue.add('message', { phone_number_id: sys.business.phone_number_id, message: text('15551230001', `${canary} refused`) });
    await ok.waitUntilFinished(events, 60_000);
    await expect(refused.waitUntilFinished(events, 60_000)).rejects.toThrow(/131047/);
    await waitFor(async () => (await deviceMessages(sys.platformUrl, waId)).some((m) => m.text?.body === `${canary} ok`), 'the message shown');
    await waitFor(() => sys.receiver.statuses().some((s) => s.status === 'delivered' && s.recipient_id === waId), 'delivered');
    expect(keysContaining(await dumpPrefix(sys.redisUrl, sys.prefix), canary)).toEqual([]);
  });
});
