import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { Mailboxes, type WakeJob } from '../../src/runtime/mailbox.ts';
import { Keys } from '../../src/store/keys.ts';
import { Stores } from '../../src/store/stores.ts';
import { defineCommitScript } from '../../src/runtime/actor-host.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

/**
 * A burst of new sends must not hold up conversations already under way: wakes for receipts, users' messages
 * and timers run before the backlog of newly accepted sends, on real Redis and BullMQ.
 */
describe('wake-up lanes', () => {
  const prefix = testPrefix('lanes');
  const keys = new Keys(prefix);
  const redis = new Redis(testRedisUrl());
  const queue = new Queue<WakeJob>(keys.queueName('conversations'), { connection: { url: testRedisUrl() } as never, prefix: keys.bullPrefix });
  const mailboxes = new Mailboxes(new Stores(redis, keys, {}, defineCommitScript), keys, queue);
  afterAll(async () => {
    await queue.close();
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  it('runs event wakes before a backlog of send wakes, each lane in order, one waiting job per conversation', async () => {
    for (let i = 0; i < 30; i++) await mailboxes.wake(`campaign-${i}`, 'sends');
    await mailboxes.wake('reply-1');
    await mailboxes.wake('receipt-2');
    // A conversation that already waits in the sends lane gets no second job: its events ride on that wake.
    await mailboxes.wake('campaign-3');
    await mailboxes.wake('campaign-3', 'sends');
    expect(await queue.count()).toBe(32);

    const order: string[] = [];
    const done = new Promise<void>((resolve) => {
      const worker = new Worker<WakeJob>(keys.queueName('conversations'), async (job) => {
        order.push(job.data.conversationId);
        if (order.length === 32) setImmediate(() => void worker.close().then(resolve));
      }, { connection: { url: testRedisUrl() } as never, prefix: keys.bullPrefix, concurrency: 1 });
    });
    await done;
    expect(order.slice(0, 2)).toEqual(['reply-1', 'receipt-2']);
    expect(order.slice(2)).toEqual(Array.from({ length: 30 }, (_, i) => `campaign-${i}`));
  });
});
