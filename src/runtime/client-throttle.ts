import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keys } from '../store/keys.ts';

/**
 * Throttles clients that abuse the API itself: each request refused for a bad or missing token (190) or an
 * oversized body (413) is a strike against the client's address; past `limit` strikes in `windowMs` the
 * address gets 429 (Graph code 4) until the window ends, before its token is even looked at. Valid traffic is
 * never counted, so a flood from one address does not slow other clients or businesses.
 *
 * Strikes are counted in Redis (one INCR per refused request; every API process sees the same count);
 * whether an address is throttled is remembered in the process, so a throttled flood costs no Redis call at
 * all. Addresses are stored only as a hash, for at most one window.
 */
export class ClientThrottle {
  private readonly until = new Map<string, number>();

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly opts: { limit: number; windowMs: number },
  ) {}

  /** Milliseconds until `client` may call again; 0 when it may now. No Redis call. */
  retryAfter(client: string): number {
    const t = this.until.get(client);
    if (t === undefined) return 0;
    const left = t - Date.now();
    if (left > 0) return left;
    this.until.delete(client);
    return 0;
  }

  /** Counts a refused request against `client`; true when it is throttled from now on. */
  async strike(client: string): Promise<boolean> {
    const key = this.keys.abuse(createHash('sha256').update(`abuse|${client}`).digest('hex').slice(0, 32));
    const n = await this.redis.incr(key);
    if (n === 1) await this.redis.pexpire(key, this.opts.windowMs);
    if (n < this.opts.limit) return false;
    const ttl = await this.redis.pttl(key);
    if (this.until.size > 100_000) this.until.clear();
    this.until.set(client, Date.now() + (ttl > 0 ? ttl : this.opts.windowMs));
    return true;
  }
}
