import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import type { TimersQueueJob } from '../../src/queues/timers.ts';
import { defineCommitScript } from '../../src/runtime/actor-host.ts';
import { Mailboxes, type WakeJob } from '../../src/runtime/mailbox.ts';
import { ShardTimers, tickBucket } from '../../src/runtime/shard-timers.ts';
import { shardOf } from '../../src/runtime/shards.ts';
import { Keys } from '../../src/store/keys.ts';
import { Stores } from '../../src/store/stores.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

describe('tick buckets', () => {
  it('tick a timer at most a tenth of its delay late (100 ms to 2 s), never before it is due', () => {
    const now = 1_000_000_000_000;
    expect(tickBucket(now + 5000, now)).toBe(now + 5000);
    expect(tickBucket(now + 5001, now)).toBe(now + 5500);
    expect(tickBucket(now + 60_001, now)).toBe(now + 62_000);
    expect(tickBucket(now + 150, now)).toBe(now + 200);
  });

  it('put a timer already due (a slow step) in a bucket still to come, whose tick has not run', () => {
    const now = 1_000_000_000_050;
    for (const at of [now - 5000, now - 1, now]) {
      const b = tickBucket(at, now);
      expect(b).toBeGreaterThan(now);
      expect(b - now).toBeLessThanOrEqual(100);
    }
  });
});

describe('shard timers on real Redis and BullMQ', () => {
  const prefix = testPrefix('stimers');
  const keys = new Keys(prefix);
  const redis = new Redis(testRedisUrl());
  const connection = { url: testRedisUrl() } as never;
  const timersQueue = new Queue<TimersQueueJob>(keys.queueName('timers'), { connection, prefix: keys.bullPrefix });
  const stores = new Stores(redis, keys, {}, defineCommitScript);
  const mailboxes = new Mailboxes(stores, keys);
  const timers = new ShardTimers(stores, keys, timersQueue, mailboxes, 60_000, createLogger('test', 'silent'));
  afterAll(async () => {
    await Promise.all([timersQueue.close()]);
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  it('a tick per shard and bucket: its due timers go to their mailboxes and leave; cancelled ones never fire', async () => {
    const [a, b, c] = ['conv-a', 'conv-b', 'conv-c'];
    const at = Date.now() + 60_000;
    await timers.schedule(a, 'rt:1', at, { type: 'RETRANSMIT_DUE', at, timerId: 'rt:1' });
    await timers.schedule(b, 'rt:2', at, { type: 'RETRANSMIT_DUE', at, timerId: 'rt:2' });
    await timers.schedule(c, 'rt:3', at, { type: 'RETRANSMIT_DUE', at, timerId: 'rt:3' });
    await timers.cancel(c, 'rt:3');
    const ticks = (await timersQueue.getDelayed()).map((j) => j.id);
    expect(new Set(ticks).size).toBe(new Set([a, b, c].map(shardOf)).size);
    // Fired as the tick would at its time.
    for (const conv of [a, b, c]) await timers.fire(shardOf(conv), null, at + 1);
    expect((await redis.lrange(keys.mailbox(a), 0, -1)).map((e) => JSON.parse(e).timerId)).toEqual(['rt:1']);
    expect((await redis.lrange(keys.mailbox(b), 0, -1)).map((e) => JSON.parse(e).timerId)).toEqual(['rt:2']);
    expect(await redis.llen(keys.mailbox(c))).toBe(0);
    for (const conv of [a, b]) expect(await redis.zcard(keys.shardTimers(shardOf(conv)))).toBe(0);
  });

  it('a timer scheduled already due gets a tick still to run, also when its bucket\'s tick already ran', async () => {
    const conv = 'conv-late';
    const shard = shardOf(conv);
    const past = Date.now() - 2000;
    // The tick of the bucket `past` falls in has come and gone (as after a slow step).
    await timersQueue.obliterate({ force: true });
    const before = Date.now();
    await timers.schedule(conv, 'rt:late', past, { type: 'RETRANSMIT_DUE', at: past, timerId: 'rt:late' });
    const jobs = await timersQueue.getJobs(['delayed', 'waiting']);
    const tick = jobs.find((j) => (j.data as { shard?: number }).shard === shard);
    expect(tick).toBeDefined();
    expect(Number(tick!.id!.split('-')[2])).toBeGreaterThan(before);
  });
});
