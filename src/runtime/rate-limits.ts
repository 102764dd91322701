import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keys } from '../store/keys.ts';
import { readLuaScript } from './lua/read-script.ts';

const LUA = readLuaScript('rateLimit-1.lua');

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
 * The Cloud API's send limits as token buckets in Redis (one Lua call each, so every API process shares
 * them): throughput per business number (130429) and the pair limit per (number, user) (131056). The pair
 * bucket is keyed by the opaque conversation id, never by the user's number.
 */
export class RateLimits {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
  ) {
    redis.defineCommand('sealpostRateLimit', { numberOfKeys: 1, lua: LUA });
  }

  private async take(key: string, capacity: number, perMs: number, now: number): Promise<number> {
    return Number(await (this.redis as unknown as { sealpostRateLimit: (...a: unknown[]) => Promise<number> }).sealpostRateLimit(key, capacity, perMs, now));
  }

  /** Takes a send from both buckets or throws {@link RateLimitedError} (the pair bucket is only charged if the number's passed). */
  async check(phoneNumberId: string, throughputPerS: number, conversationId: string, now = Date.now()): Promise<void> {
    const tp = await this.take(this.keys.rateLimit('tp', phoneNumberId), throughputPerS, throughputPerS / 1000, now);
    if (tp > 0) throw new RateLimitedError('throughput', tp);
    // A digest, not the conversation id: the bucket outlives an erased conversation by a few minutes.
    const pairId = createHash('sha256').update(`pair|${conversationId}`).digest('hex').slice(0, 32);
    const pair = await this.take(this.keys.rateLimit('pair', pairId), PAIR_BURST, 1 / PAIR_INTERVAL_MS, now);
    if (pair > 0) throw new RateLimitedError('pair', pair);
  }
}
