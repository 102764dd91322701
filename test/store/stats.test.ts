import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectRedis } from '../../src/redis/connect.ts';
import { Stats } from '../../src/store/stats.ts';
import { Keys } from '../../src/store/keys.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

describe('statistics counters', () => {
  const prefix = testPrefix('stats');
  const keys = new Keys(prefix);
  let redis: Redis;
  beforeAll(() => { redis = connectRedis(testRedisUrl()); });
  afterAll(async () => {
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });
  const at = Date.parse('2026-12-08T10:00:00Z');
  const dayKey = (b: string) => keys.stats(b, '2026-12-08');

  it('sums counts made together and apart, and the day key expires (about 400 days) from its first count', async () => {
    const stats = new Stats(redis, keys);
    await Promise.all([stats.count('b1', { sent: 1 }, at), stats.count('b1', { sent: 2, delivered: 1 }, at), stats.count('b1', { failed: 0 }, at)]);
    await stats.count('b1', { delivered: 1 }, at);
    await stats.count('b1', { read: 1, 'billable:marketing': 1 }, at);
    expect(await redis.hgetall(dayKey('b1'))).toEqual({ sent: '3', delivered: '2', read: '1', 'billable:marketing': '1' });
    const ttl = await redis.pttl(dayKey('b1'));
    expect(ttl).toBeGreaterThan(399 * 86_400_000);
    expect((await stats.days('b1', '2026-12-08', '2026-12-08'))[0]).toMatchObject({ sent: 3, delivered: 2, read: 1 });
  });

  it('a day key lost and made again by a count gets its TTL back once the process renews it (hourly)', async () => {
    let now = at;
    const stats = new Stats(redis, keys, () => now);
    await stats.count('b2', { sent: 1 }, at);
    expect(await redis.pttl(dayKey('b2'))).toBeGreaterThan(0);
    // Lost (a Redis that kept nothing): the next count within the hour makes it again without a TTL...
    await redis.del(dayKey('b2'));
    await stats.count('b2', { sent: 1 }, at);
    expect(await redis.pttl(dayKey('b2'))).toBe(-1);
    // ...and the first count after the hour sets it again.
    now += 3_600_000;
    await stats.count('b2', { delivered: 1 }, at);
    expect(await redis.pttl(dayKey('b2'))).toBeGreaterThan(399 * 86_400_000);
    expect(await redis.hgetall(dayKey('b2'))).toEqual({ sent: '1', delivered: '1' });
  });
});
