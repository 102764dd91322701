import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keys } from '../store/keys.ts';
import { LuaScript } from './lua/read-script.ts';

const LIMITS = new LuaScript('limits-2.lua');

/** The Cloud API's default throughput per business number (messages per second). */
export const DEFAULT_THROUGHPUT = 80;
/** The pair limit: one message per 6 s to one user, bursts of up to 45. */
export const PAIR_BURST = 45;
export const PAIR_INTERVAL_MS = 6000;

/** Which limit refused a send, and when to try again. */
export class RateLimitedError extends Error {
  constructor(readonly limit: 'throughput' | 'pair', readonly retryAfterMs: number) {
    super(limit === 'throughput' ? 'the phone number\'s throughput is reached' : 'too many messages to this user in a short time');
    this.name = 'RateLimitedError';
  }
}

/**
 * The Cloud API's send limits as token buckets in Redis (one script for both, limits-2.lua, so every API
 * process shares them): throughput per business number (130429) and the pair limit per (number, user)
 * (131056), taken together or not at all. The pair bucket is keyed by a digest of the opaque conversation id,
 * never by the user's number.
 */
export class RateLimits {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
  ) {}

  /** Takes a send from both buckets or throws {@link RateLimitedError} (a refused send takes from neither). */
  async check(phoneNumberId: string, throughputPerS: number, conversationId: string, now = Date.now()): Promise<void> {
    // A digest, not the conversation id: the bucket outlives an erased conversation by a few minutes.
    const pairId = createHash('sha256').update(`pair|${conversationId}`).digest('hex').slice(0, 32);
    const [which, wait] = (await LIMITS.run(this.redis, [this.keys.throughputBucket(phoneNumberId), this.keys.pairBucket(phoneNumberId, pairId)],
      [throughputPerS, throughputPerS / 1000, PAIR_BURST, 1 / PAIR_INTERVAL_MS, now])) as [number, number];
    if (which === 1) throw new RateLimitedError('throughput', wait);
    if (which === 2) throw new RateLimitedError('pair', wait);
  }
}
