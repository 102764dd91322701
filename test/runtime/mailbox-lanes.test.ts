import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import { Mailboxes, SENDS_PRIORITY, type WakeJob } from '../../src/runtime/mailbox.ts';
import { ShardRunner } from '../../src/runtime/shard-runner.ts';
import { shardOf } from '../../src/runtime/shards.ts';
import { Keys } from '../../src/store/keys.ts';
import { Stores } from '../../src/store/stores.ts';
import { defineCommitScript } from '../../src/runtime/actor-host.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

/** `n` conversation ids named `tag-<i>` that all hash into `shard`. */
function idsInShard(tag: string, shard: number, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) if (shardOf(`${tag}-${i}`) === shard) out.push(`${tag}-${i}`);
  return out;
}

/**
 * A burst of new sends must not hold up conversations already under way: in a shard, conversations woken for
 * receipts, users' messages and timers are drained before the backlog of newly accepted sends, each lane in
 * order; a shard holding only sends waits behind every other shard's wake. Real Redis and BullMQ; the drain
 * itself is recorded, not run (the order is what is under test).
 */
describe('wake-up lanes', () => {
  const prefix = testPrefix('lanes');
  const keys = new Keys(prefix);
  const redis = new Redis(testRedisUrl());
  const queue = new Queue<WakeJob>(keys.queueName('conversations'), { connection: { url: testRedisUrl() } as never, prefix: keys.bullPrefix });
  const stores = new Stores(redis, keys, {}, defineCommitScript);
  const mailboxes = new Mailboxes(stores, keys, queue);
  afterAll(async () => {
    await queue.close();
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  it('drains event wakes before a backlog of send wakes, each lane in order, with one wake-up job per shard', async () => {
    const campaign = idsInShard('campaign', 5, 30);
    const [reply, receipt] = idsInShard('answer', 5, 2) as [string, string];
    for (const c of campaign) await mailboxes.wake(c, 'sends');
    await mailboxes.wake(reply);
    await mailboxes.wake(receipt);
    // A conversation waiting in the sends lane moves up when an event of another kind arrives for it.
    await mailboxes.wake(campaign[3]!);
    await mailboxes.wake(campaign[3]!, 'sends');
    // Another shard holding only sends: its job is prioritized (after every un-prioritized job).
    const [other] = idsInShard('later', 9, 1) as [string];
    await mailboxes.wake(other, 'sends');

    const jobs = await queue.getJobs(['waiting', 'prioritized']);
    expect(jobs.map((j) => j.data.shard).sort((a, b) => a - b)).toEqual([5, 9]);
    expect(jobs.find((j) => j.data.shard === 5)!.opts.priority ?? 0).toBe(SENDS_PRIORITY);
    expect(jobs.find((j) => j.data.shard === 9)!.opts.priority).toBe(SENDS_PRIORITY);

    const order: string[] = [];
    const runner = new ShardRunner(stores, keys, {
      async drainAndCheck(conv) {
        order.push(conv);
        return { handled: 1, pending: false };
      },
    }, mailboxes, createLogger('test', 'silent'), { perShard: 1 });
    await runner.run(5, null);
    expect(order).toEqual([reply, receipt, campaign[3], ...campaign.filter((_, i) => i !== 3)]);
    // Everything was claimed and settled: nothing ready, nothing claimed is left.
    expect(await redis.zcard(keys.shardReady(5))).toBe(0);
    expect(await redis.zcard(keys.shardClaimed(5))).toBe(0);
    await runner.close();
  });

  it('an event wake of a shard is not prioritized, so it runs before shards holding only sends', async () => {
    const [a] = idsInShard('event', 11, 1) as [string];
    await mailboxes.wake(a);
    const job = (await queue.getJobs(['waiting', 'prioritized'])).find((j) => j.data.shard === 11)!;
    expect(job.opts.priority ?? 0).toBe(0);
  });

  it('marks into a shard whose wake-up job waits in the queue add no job; once it runs, the next mark queues one more', async () => {
    let adds = 0;
    const counting = new Proxy(queue, {
      get(target, prop, receiver) {
        if (prop === 'add') return (...args: Parameters<typeof queue.add>) => { adds++; return target.add(...args); };
        return Reflect.get(target, prop, receiver) as unknown;
      },
    });
    const boxes = new Mailboxes(stores, keys, counting);
    const [a, b, c, during, during2] = idsInShard('awake', 17, 5) as [string, string, string, string, string];
    await boxes.wake(a);
    expect(adds).toBe(1);
    await boxes.wake(b);
    await boxes.wake(c, 'sends');
    expect(adds).toBe(1);
    expect(await redis.get(keys.shardAwake(17))).toBe('e');

    const order: string[] = [];
    const runner = new ShardRunner(stores, keys, {
      async drainAndCheck(conv) {
        order.push(conv);
        // The job runs now (its first claim cleared the flag): a mark queues the shard's next job, once.
        if (conv === a) {
          expect(await redis.exists(keys.shardAwake(17))).toBe(0);
          await boxes.wake(during);
          await boxes.wake(during2);
        }
        return { handled: 1, pending: false };
      },
    }, boxes, createLogger('test', 'silent'), { perShard: 1 });
    await runner.run(17, null);
    expect(adds).toBe(2);
    // This loop claimed them anyway: the job it queued finds nothing to do.
    expect(order).toEqual([a, b, during, during2, c]);
    expect(await redis.zcard(keys.shardReady(17))).toBe(0);
    await runner.close();
  });
});
