import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { BusinessPreKeys } from '../signal/business-prekeys.ts';
import type { BusinessStore } from '../store/businesses.ts';
import type { Keys } from '../store/keys.ts';
import { DATA_KEY_RECHECK_MS, type DataKeys } from '../store/sealer.ts';
import { TransportUnavailableError, type TransportClient } from './transport-client.ts';

/**
 * Keeps every business number's bundle in the transport's directory, so users can open a conversation:
 * publishes it the first time, tops up one-time prekeys, rotates signed and last-resort keys. Any number of
 * processes may run it; a short Redis lock per number keeps two from generating keys at once.
 */
export class KeyPublisher {
  private timer: NodeJS.Timeout | null = null;
  /**
   * Prekey stores by number. They hold the business's identity and data key, so entries live no longer than
   * a data key's re-check period: a business deleted in another process is forgotten here as its keys are.
   */
  private readonly cache = new LRUCache<string, Promise<BusinessPreKeys>>({ max: 100_000, ttl: DATA_KEY_RECHECK_MS });

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly dataKeys: DataKeys,
    private readonly businesses: BusinessStore,
    private readonly transport: TransportClient,
    private readonly log: Logger,
    private readonly retentionMs: number,
  ) {}

  /** The prekey store of one number (for publishing and for decryption); cached per process. */
  preKeysOf(phoneNumberId: string): Promise<BusinessPreKeys> {
    let hit = this.cache.get(phoneNumberId);
    if (!hit) {
      hit = this.load(phoneNumberId);
      hit.catch(() => this.cache.delete(phoneNumberId));
      this.cache.set(phoneNumberId, hit);
    }
    return hit;
  }

  private async load(phoneNumberId: string): Promise<BusinessPreKeys> {
    const pn = await this.businesses.phoneNumber(phoneNumberId);
    if (!pn) throw new Error(`unknown phone number ${phoneNumberId}`);
    return new BusinessPreKeys(
      this.redis,
      { hash: this.keys.preKeys(phoneNumberId), lastResortUsed: this.keys.lastResortUsed(phoneNumberId) },
      await this.dataKeys.get(pn.business_id),
      await this.businesses.identity(phoneNumberId),
      // The business's own retention (capped at 30 days), not this process's default, which may be shorter.
      await this.businesses.retentionMs(pn.business_id, this.retentionMs),
    );
  }

  /** Makes sure the number's bundle is published and stocked; true when it is. */
  async ensure(phoneNumberId: string): Promise<boolean> {
    const pn = await this.businesses.phoneNumber(phoneNumberId);
    if (!pn) return false;
    const lock = this.keys.publishLock(phoneNumberId);
    const token = randomUUID();
    if (!(await this.redis.set(lock, token, 'PX', 30_000, 'NX'))) return false;
    try {
      const counts = await this.transport.keyCounts(pn.display_phone_number);
      const upload = await (await this.preKeysOf(phoneNumberId)).plan(counts);
      if (upload) {
        await this.transport.publishKeys(pn.display_phone_number, upload);
        this.log.info({ phone_number_id: phoneNumberId, one_time: (upload as { prekeys: unknown[] }).prekeys.length }, 'business prekeys published');
      }
      return true;
    } catch (e) {
      if (!(e instanceof TransportUnavailableError)) this.log.error({ phone_number_id: phoneNumberId, err: (e as Error).message }, 'prekey publishing failed');
      return false;
    } finally {
      await this.redis.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0", 1, lock, token);
    }
  }

  /** Checks every number now and then every `everyMs` (the directory may have been restarted or drained). */
  start(everyMs = 30_000): void {
    const tick = async () => {
      for (const id of await this.businesses.allPhoneNumberIds().catch(() => [] as string[])) await this.ensure(id);
    };
    void tick();
    this.timer = setInterval(() => void tick(), everyMs);
  }

  /** Stops the periodic check. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
