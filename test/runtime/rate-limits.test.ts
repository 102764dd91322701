import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { PAIR_BURST, RateLimitedError, RateLimits } from '../../src/runtime/rate-limits.ts';
import { Keys } from '../../src/store/keys.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

/** The send limits' buckets on real Redis (limits-2.lua): both taken together, or neither. */
describe('rate limits', () => {
  const prefix = testPrefix('limits');
  const keys = new Keys(prefix);
  const redis = new Redis(testRedisUrl());
  const limits = new RateLimits(redis, keys);
  afterAll(async () => {
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  const refusal = async (p: Promise<void>) => p.then(() => null, (e: unknown) => e as RateLimitedError);

  it('refuses the pair burst past its size and the throughput past its rate, each naming when to try again', async () => {
    const now = 1_000_000;
    for (let i = 0; i < PAIR_BURST; i++) await limits.check('pn-a', 1000, 'conv-1', now);
    const pair = await refusal(limits.check('pn-a', 1000, 'conv-1', now));
    expect(pair?.limit).toBe('pair');
    expect(pair?.retryAfterMs).toBe(6000);
    for (let i = 0; i < 3; i++) await limits.check('pn-b', 3, `conv-${i}`, now);
    const tp = await refusal(limits.check('pn-b', 3, 'conv-9', now));
    expect(tp?.limit).toBe('throughput');
    expect(tp?.retryAfterMs).toBe(334);
    // Refilled with time.
    await limits.check('pn-b', 3, 'conv-9', now + 334);
  });

  it("a send the pair limit refuses takes nothing from the number's throughput", async () => {
    const now = 2_000_000;
    for (let i = 0; i < PAIR_BURST; i++) await limits.check('pn-c', 1000, 'busy', now);
    const before = await redis.get(keys.throughputBucket('pn-c'));
    for (let i = 0; i < 10; i++) expect((await refusal(limits.check('pn-c', 1000, 'busy', now)))?.limit).toBe('pair');
    expect(await redis.get(keys.throughputBucket('pn-c'))).toBe(before);
    // Both buckets of a number in one hash slot (one script in a Redis Cluster).
    const tag = (k: string) => /\{[^}]+\}/.exec(k)?.[0];
    expect(tag(keys.pairBucket('pn-c', 'x'))).toBe(tag(keys.throughputBucket('pn-c')));
  });
});
