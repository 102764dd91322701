import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defineCommitScript } from '../../src/runtime/actor-host.ts';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { Mailboxes } from '../../src/runtime/mailbox.ts';
import { shardOf } from '../../src/runtime/shards.ts';
import { OutboundService } from '../../src/runtime/outbound-service.ts';
import { BusinessStore } from '../../src/store/businesses.ts';
import { Keys } from '../../src/store/keys.ts';
import { DataKeys } from '../../src/store/sealer.ts';
import { Stores } from '../../src/store/stores.ts';
import { purgeBucket } from '../../src/queues/timers.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

describe('outbound accept: deletion jobs', () => {
  let redis: Redis;
  let prefix: string;
  let keys: Keys;
  let outbound: OutboundService;
  let biz: Awaited<ReturnType<BusinessStore['create']>>;
  const purges: { conv: string; until: number }[] = [];

  beforeEach(async () => {
    prefix = testPrefix('accept');
    redis = new Redis(testRedisUrl());
    keys = new Keys(prefix);
    const dataKeys = new DataKeys(redis, keys, randomBytes(32));
    const businesses = new BusinessStore(redis, keys, dataKeys);
    const stores = new Stores(redis, keys, {}, defineCommitScript);
    purges.length = 0;
    outbound = new OutboundService(stores, keys, dataKeys, businesses, new Mailboxes(stores, keys), 3_600_000,
      async (conv, until) => { purges.push({ conv, until }); });
    biz = await businesses.create({ name: 'Acme', webhookUrl: 'http://127.0.0.1:9/hook', appSecret: 'secret-secret', verifyToken: 'v' });
  });

  afterEach(async () => {
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  const template = (waId: string) => outbound.accept({
    businessId: biz.business_id, phoneNumberId: biz.phone_number_id, waId, message: { type: 'template', template: { name: 'hello', language: { code: 'en' } } },
  });

  it('adds one deletion job per retention bucket of a conversation, and again once the conversation was deleted', async () => {
    const first = await template('15550001111');
    const conv = conversationOfWamid(first.wamid)!;
    await template('15550001111');
    await template('15550001111');
    // Three messages, one job per bucket (a tenth of the retention, at most 60 s): one job, two if the
    // messages happened to straddle a bucket boundary; never two for one bucket.
    const buckets = purges.map((p) => purgeBucket(p.until, 3_600_000));
    expect(purges.every((p) => p.conv === conv)).toBe(true);
    expect(new Set(buckets).size).toBe(buckets.length);
    expect(buckets.length).toBeLessThanOrEqual(2);
    const before = purges.length;
    await template('15550002222');
    expect(purges).toHaveLength(before + 1);
    // The conversation is deleted (its retention ended; its jobs went with it): the next message is a new
    // conversation record and must get its own job even in the same bucket.
    await redis.del(keys.meta(conv));
    await template('15550001111');
    expect(purges).toHaveLength(before + 2);
    expect(purges.at(-1)!.conv).toBe(conv);
  });

  it('marks the conversation ready in the sends lane, unless a drain holds its lease (that drain takes the SEND)', async () => {
    const first = await template('15550003333');
    const conv = conversationOfWamid(first.wamid)!;
    const ready = keys.shardReady(shardOf(conv));
    expect(await redis.zscore(ready, conv)).not.toBeNull();
    expect(await redis.lrange(keys.mailbox(conv), 0, -1)).toHaveLength(1);
    // A drain took the conversation (claimed off the ready set) and holds its lease.
    await redis.zrem(ready, conv);
    await redis.set(keys.lease(conv), 'drain', 'PX', 10_000);
    await template('15550003333');
    expect(await redis.zscore(ready, conv)).toBeNull();
    expect(await redis.lrange(keys.mailbox(conv), 0, -1)).toHaveLength(2);
    await redis.del(keys.lease(conv));
    await template('15550003333');
    expect(await redis.zscore(ready, conv)).not.toBeNull();
  });
});
