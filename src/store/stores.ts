import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { connectRedis } from '../redis/connect.ts';
import type { BusinessStore } from './businesses.ts';
import type { Keys } from './keys.ts';

/**
 * Where data lives: the shared store (routing: businesses, numbers, tokens, queues, statistics) and, for
 * businesses pinned to a region, that region's store (their conversations, messages, sessions, webhook
 * outbox). Conversation ids are opaque, so which region a conversation lives in is kept in the shared store
 * as routing data (`conversation → region`), written before the conversation's first key.
 */
export class Stores {
  private readonly regions = new Map<string, Redis>();
  /** Entries each cache below holds at most (read when a Stores is made). */
  static cacheMax = 100_000;
  /** Where conversations live, read recently (bounded: least recently used go first; a miss is one HGET). */
  private readonly convCache = new LRUCache<string, { region: string | null; at: number }>({ max: Stores.cacheMax });
  /** Businesses' regions (a region never changes), bounded like `convCache`. */
  private readonly bizCache = new LRUCache<string, { region: string | null }>({ max: Stores.cacheMax });

  constructor(
    readonly shared: Redis,
    private readonly keys: Keys,
    regionUrls: Record<string, string>,
    private readonly setup: (r: Redis) => void = () => {},
  ) {
    for (const [name, url] of Object.entries(regionUrls)) {
      const r = connectRedis(url, { maxRetriesPerRequest: 20, enableAutoPipelining: true });
      r.on('error', () => {});
      setup(r);
      this.regions.set(name, r);
    }
    setup(shared);
  }

  /** True when any region is configured (otherwise everything is in the shared store, with no look-ups). */
  get regional(): boolean {
    return this.regions.size > 0;
  }

  /** The configured region names. */
  get regionNames(): string[] {
    return [...this.regions.keys()];
  }

  /** The store of a region; the shared store for none. Throws for a region that is not configured. */
  forRegion(region: string | null | undefined): Redis {
    if (!region) return this.shared;
    const r = this.regions.get(region);
    if (!r) throw new Error(`region ${region} is not configured (SEALPOST_REGIONS)`);
    return r;
  }

  /** The store a business's data lives in. */
  async forBusiness(businesses: BusinessStore, businessId: string): Promise<Redis> {
    if (!this.regional) return this.shared;
    let hit = this.bizCache.get(businessId);
    if (!hit) this.bizCache.set(businessId, (hit = { region: (await businesses.info(businessId))?.region ?? null }));
    return this.forRegion(hit.region);
  }

  /** Records that a conversation lives in `region` (before its first key is written there). */
  async pin(conversationId: string, region: string | null): Promise<void> {
    if (!this.regional) return;
    if (region) await this.shared.hset(this.keys.conversationRegions, conversationId, region);
    this.convCache.set(conversationId, { region, at: Date.now() });
  }

  /** Forgets where a deleted conversation lived. */
  async unpin(conversationId: string): Promise<void> {
    if (!this.regional) return;
    await this.shared.hdel(this.keys.conversationRegions, conversationId);
    this.convCache.delete(conversationId);
  }

  /** The store a conversation lives in. */
  async forConversation(conversationId: string): Promise<Redis> {
    if (!this.regional) return this.shared;
    return this.forRegion(await this.regionOf(conversationId));
  }

  /** The region a conversation lives in; null for the shared store. */
  async regionOf(conversationId: string): Promise<string | null> {
    if (!this.regional) return null;
    const hit = this.convCache.get(conversationId);
    // A region, once known, never changes; "shared" is re-checked after a minute in case it was cached early.
    if (hit && (hit.region || Date.now() - hit.at < 60_000)) return hit.region;
    const region = await this.shared.hget(this.keys.conversationRegions, conversationId);
    this.convCache.set(conversationId, { region, at: Date.now() });
    return region;
  }

  /** Every store: the shared one first. */
  all(): Redis[] {
    return [this.shared, ...this.regions.values()];
  }

  /** Closes the region connections (the shared one belongs to the caller). */
  close(): void {
    for (const r of this.regions.values()) r.disconnect();
  }
}
