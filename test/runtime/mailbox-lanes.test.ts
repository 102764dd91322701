import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import { Mailboxes } from '../../src/runtime/mailbox.ts';
import { ShardRunner } from '../../src/runtime/shard-runner.ts';
import { shardOf } from '../../src/runtime/shards.ts';
import { decodeWake } from '../../src/runtime/wake-list.ts';
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
 * order; a shard holding only sends waits behind every other shard's wake (the wake list's sends lane). Real
 * Redis; the drain itself is recorded, not run (the order is what is under test).
 */
describe('wake-up lanes', () => {
  const prefix = testPrefix('lanes');
  const keys = new Keys(prefix);
  const redis = new Redis(testRedisUrl());
  const stores = new Stores(redis, keys, {}, defineCommitScript);
  const mailboxes = new Mailboxes(stores, keys);
  /** The shards whose wake-ups wait in a lane of the wake list, first to pop first. */
  const waiting = async (lane: 'events' | 'sends') => (await redis.lrange(keys.wakeList(lane), 0, -1)).map((e) => decodeWake(e)?.shard);
  const clearLists = () => redis.del(keys.wakeList('events'), keys.wakeList('sends'));
  afterAll(async () => {
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  it('drains event wakes before a backlog of send wakes, each lane in order, with one wake-up per shard and lane', async () => {
    const campaign = idsInShard('campaign', 5, 30);
    const [reply, receipt] = idsInShard('answer', 5, 2) as [string, string];
    for (const c of campaign) await mailboxes.wake(c, 'sends');
    await mailboxes.wake(reply);
    await mailboxes.wake(receipt);
    // A conversation waiting in the sends lane moves up when an event of another kind arrives for it.
    await mailboxes.wake(campaign[3]!);
    await mailboxes.wake(campaign[3]!, 'sends');
    // Another shard holding only sends: its wake-up waits in the sends lane, behind every event wake-up.
    const [other] = idsInShard('later', 9, 1) as [string];
    await mailboxes.wake(other, 'sends');

    // Shard 5 was woken in the sends lane for the campaign, then once more in the events lane for the reply.
    expect(await waiting('events')).toEqual([5]);
    expect(await waiting('sends')).toEqual([5, 9]);
    await clearLists();

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

  it('an event wake of a shard goes in the events lane, so it runs before shards holding only sends', async () => {
    const [a] = idsInShard('event', 11, 1) as [string];
    await mailboxes.wake(a);
    expect(await waiting('events')).toEqual([11]);
    expect(await waiting('sends')).toEqual([]);
    await clearLists();
  });

  it('marks into a shard whose wake-up waits push no other; once its loop runs, the next mark pushes one more', async () => {
    const pushes = async () => (await waiting('events')).length + (await waiting('sends')).length;
    const [a, b, c, during, during2] = idsInShard('awake', 17, 5) as [string, string, string, string, string];
    await mailboxes.wake(a);
    expect(await pushes()).toBe(1);
    await mailboxes.wake(b);
    await mailboxes.wake(c, 'sends');
    expect(await pushes()).toBe(1);
    expect(await redis.get(keys.shardAwake(17))).toBe('e');
    await clearLists();

    const order: string[] = [];
    const runner = new ShardRunner(stores, keys, {
      async drainAndCheck(conv) {
        order.push(conv);
        // The loop runs now (its first claim cleared the flag): a mark pushes the shard's next wake-up, once.
        if (conv === a) {
          expect(await redis.exists(keys.shardAwake(17))).toBe(0);
          await mailboxes.wake(during);
          await mailboxes.wake(during2);
        }
        return { handled: 1, pending: false };
      },
    }, mailboxes, createLogger('test', 'silent'), { perShard: 1 });
    await runner.run(17, null);
    expect(await waiting('events')).toEqual([17]);
    // This loop claimed them anyway: the wake-up it pushed finds nothing to do.
    expect(order).toEqual([a, b, during, during2, c]);
    expect(await redis.zcard(keys.shardReady(17))).toBe(0);
    await runner.close();
  });
});
