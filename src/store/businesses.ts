import { createHash, randomBytes, randomInt } from 'node:crypto';
import type { Redis } from 'ioredis';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import { LRUCache } from 'lru-cache';
import type { Keys } from './keys.ts';
import { DATA_KEY_RECHECK_MS, open, openBytes, seal, type DataKeys } from './sealer.ts';

/** What `business create` prints (CONTRACT.md). */
export interface CreatedBusiness {
  business_id: string;
  waba_id: string;
  phone_number_id: string;
  display_phone_number: string;
  access_token: string;
}

/** Settings given when a business is provisioned. */
export interface BusinessInput {
  name: string;
  webhookUrl: string;
  appSecret: string;
  verifyToken: string;
  region?: string;
  retentionMs?: number;
  /** `none`: the Cloud API's no-storage mode, content kept at most 60 minutes. */
  storage?: 'default' | 'none';
  /** The number's throughput, messages per second (Cloud API: 80 by default, up to 1,000). */
  throughputMps?: number;
}

/** The Cloud API's no-storage mode keeps message content at most this long. */
export const NO_STORAGE_RETENTION_MS = 3_600_000;

/** A business phone number as the API and the runtime see it. */
export interface PhoneNumber {
  phone_number_id: string;
  business_id: string;
  waba_id: string;
  display_phone_number: string;
  verified_name: string;
  quality_rating: 'GREEN' | 'YELLOW' | 'RED';
  throughput: { level: string };
  /** Messages per second the number may send (the 130429 limit). */
  messages_per_second: number;
  /** Unique users it may reach outside the service window per 24 h, as the transport last said (`TIER_250`...). */
  messaging_limit_tier: string;
  /** Blocked by the transport for policy violations: sends are refused with 368. */
  blocked: boolean;
}

/** Where a business's webhooks go, with the secret to sign them. */
export interface WebhookTarget {
  url: string;
  appSecret: string;
  wabaId: string;
  displayPhoneNumber: string;
}

/** The Signal identity of one business phone number (private key unsealed, in memory only). */
export interface NumberIdentity {
  identity: IdentityKeyPair;
  registrationId: number;
}

/** The business's non-secret settings. */
export interface BusinessInfo {
  business_id: string;
  name: string;
  waba_id: string;
  retention_ms: number | null;
  region: string | null;
  storage: 'default' | 'none';
}

const digits = (n: number) => Array.from({ length: n }, (_, i) => (i === 0 ? randomInt(1, 10) : randomInt(0, 10))).join('');

/** SHA-256 of an access token: the only form in which tokens are stored. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/**
 * Businesses, their phone numbers and access tokens on Redis. Secrets (app secret, verify token, Signal
 * private keys) are sealed with the business's data key; tokens are stored only as hashes.
 */
/** No business keeps a message longer than 30 days. */
export const MAX_RETENTION_MS = 30 * 86_400_000;

export class BusinessStore {
  /** Entries each cache below holds at most (read when a store is made). */
  static cacheMax = 100_000;
  // The caches below are bounded (least recently used go first) so a process serving many numbers keeps its
  // working set instead of growing without end or dropping everything at once.
  /** Phone numbers read recently: their standing (quality, tier, policy block) changes, so entries expire. */
  private readonly numbers = new LRUCache<string, { pn: PhoneNumber; at: number }>({ max: BusinessStore.cacheMax });
  /** How long a process trusts a phone number it read (a change made by another process shows within it). */
  static numberCacheMs = 5_000;
  /**
   * Numbers' Signal identities (private keys unsealed), each re-checked against Redis after
   * {@link BusinessStore.identityCheckMs}: a number removed or a business deleted by another process is forgotten here then.
   */
  private readonly identities = new LRUCache<string, { id: NumberIdentity; sealed: string; checkedAt: number }>({ max: BusinessStore.cacheMax });
  /** How long a process uses an identity before checking its number and its business's data key still exist. */
  static identityCheckMs = DATA_KEY_RECHECK_MS;
  /** Each business's own retention setting (null: the default), read recently, expiring like `numbers`. */
  private readonly retentions = new LRUCache<string, { ms: number | null; at: number }>({ max: BusinessStore.cacheMax });
  /** Display numbers (digits) read recently → their phone_number_id, expiring like `numbers`. */
  private readonly displays = new LRUCache<string, { id: string; at: number }>({ max: BusinessStore.cacheMax });

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly dataKeys: DataKeys,
  ) {}

  /** Claims a free display number (1555 and 7 digits) for a new phone number id. */
  private async allocateDisplay(phoneNumberId: string): Promise<string> {
    for (let i = 0; i < 20; i++) {
      const candidate = `1555${digits(7)}`;
      if (await this.redis.set(this.keys.displayNumber(candidate), phoneNumberId, 'NX')) return candidate;
    }
    throw new Error('could not allocate a display phone number');
  }

  /** Provisions a business with one phone number, a Signal identity for it, and an access token. */
  async create(input: BusinessInput): Promise<CreatedBusiness> {
    const businessId = digits(15);
    const wabaId = digits(15);
    const phoneNumberId = digits(15);
    const display = await this.allocateDisplay(phoneNumberId);
    const dk = await this.dataKeys.create(businessId);
    const identity = IdentityKeyPair.generate();
    const registrationId = randomInt(1, 16381);
    const token = `EAAS${randomBytes(32).toString('base64url')}`;
    const bizKey = this.keys.business(businessId);
    const pnKey = this.keys.phoneNumber(phoneNumberId);
    // Keys in several cluster slots, written in an order that leaves nothing usable half-made: the business
    // and its number first, then the token, then the indexes that make them visible (a crash in between leaves
    // unreachable rows, never a listed business without its number or a token without its business).
    await Promise.all([
      this.redis.hset(bizKey, {
        name: input.name,
        waba_id: wabaId,
        webhook_url: input.webhookUrl,
        app_secret: seal(dk, input.appSecret, `${bizKey}:app_secret`),
        verify_token: seal(dk, input.verifyToken, `${bizKey}:verify_token`),
        region: input.region ?? '',
        retention_ms: String(input.storage === 'none' ? Math.min(input.retentionMs ?? NO_STORAGE_RETENTION_MS, NO_STORAGE_RETENTION_MS) : input.retentionMs ?? ''),
        storage: input.storage ?? 'default',
        numbers: phoneNumberId,
        created_at: String(Date.now()),
      }),
      this.redis.hset(pnKey, {
        business_id: businessId,
        waba_id: wabaId,
        display_phone_number: display,
        verified_name: input.name,
        quality_rating: 'GREEN',
        mps: String(Math.min(1000, Math.max(1, input.throughputMps ?? 80))),
        registration_id: String(registrationId),
        identity: seal(dk, identity.serialize(), `${pnKey}:identity`),
      }),
    ]);
    await this.redis.sadd(this.keys.businessTokens(businessId), hashToken(token));
    await this.redis.hset(this.keys.token(hashToken(token)), { business_id: businessId, created_at: String(Date.now()) });
    await Promise.all([this.redis.sadd(this.keys.businesses, businessId), this.redis.sadd(this.keys.phoneNumbers, phoneNumberId)]);
    return { business_id: businessId, waba_id: wabaId, phone_number_id: phoneNumberId, display_phone_number: display, access_token: token };
  }

  /**
   * Issues another access token for a business; returned once, stored only as its SHA-256. Its id (the start
   * of that hash) names it for listing and revoking.
   */
  async issueToken(businessId: string, expiresInMs?: number): Promise<{ access_token: string; token_id: string; expires_at: number | null }> {
    const token = `EAAS${randomBytes(32).toString('base64url')}`;
    const hash = hashToken(token);
    const expiresAt = expiresInMs ? Date.now() + expiresInMs : null;
    // Listed first, then made valid (two slots): a crash in between leaves a listed id that authenticates nothing.
    await this.redis.sadd(this.keys.businessTokens(businessId), hash);
    await this.redis.hset(this.keys.token(hash), { business_id: businessId, created_at: String(Date.now()), ...(expiresAt ? { expires_at: String(expiresAt) } : {}) });
    return { access_token: token, token_id: hash.slice(0, 16), expires_at: expiresAt };
  }

  /** The business's tokens (ids and state only; tokens themselves are never stored). */
  async tokens(businessId: string): Promise<{ token_id: string; created_at: number; expires_at: number | null; revoked: boolean }[]> {
    const out = [];
    for (const hash of await this.redis.smembers(this.keys.businessTokens(businessId))) {
      const row = await this.redis.hgetall(this.keys.token(hash));
      if (!row.business_id) continue; // listed by an issue that did not finish: it authenticates nothing
      out.push({ token_id: hash.slice(0, 16), created_at: Number(row.created_at ?? 0), expires_at: row.expires_at ? Number(row.expires_at) : null, revoked: !!row.revoked_at });
    }
    return out.sort((a, b) => a.created_at - b.created_at);
  }

  /** Revokes one of the business's tokens by id; false when it has none with that id. */
  async revokeToken(businessId: string, tokenId: string): Promise<boolean> {
    if (!/^[0-9a-f]{16}$/.test(tokenId)) return false;
    const hash = (await this.redis.smembers(this.keys.businessTokens(businessId))).find((h) => h.startsWith(tokenId));
    if (!hash) return false;
    await this.redis.hset(this.keys.token(hash), 'revoked_at', String(Date.now()));
    return true;
  }

  /** The business a valid access token belongs to, or null (unknown or revoked token). */
  async authenticate(token: string): Promise<string | null> {
    const row = await this.redis.hgetall(this.keys.token(hashToken(token)));
    if (!row.business_id) return null;
    if (row.revoked_at) return null;
    if (row.expires_at && Number(row.expires_at) <= Date.now()) return null;
    return row.business_id;
  }

  /** A business phone number, or null. Cached: its routing data does not change. */
  async phoneNumber(phoneNumberId: string): Promise<PhoneNumber | null> {
    const hit = this.numbers.get(phoneNumberId);
    if (hit && Date.now() - hit.at < BusinessStore.numberCacheMs) return hit.pn;
    if (!/^\d{1,20}$/.test(phoneNumberId)) return null;
    const row = await this.redis.hgetall(this.keys.phoneNumber(phoneNumberId));
    if (!row.business_id) return null;
    const pn: PhoneNumber = {
      phone_number_id: phoneNumberId,
      business_id: row.business_id,
      waba_id: row.waba_id ?? '',
      display_phone_number: row.display_phone_number ?? '',
      verified_name: row.verified_name ?? '',
      quality_rating: (row.quality_rating as PhoneNumber['quality_rating']) ?? 'GREEN',
      throughput: { level: Number(row.mps ?? 80) > 80 ? 'HIGH' : 'STANDARD' },
      messages_per_second: Number(row.mps ?? 80),
      messaging_limit_tier: row.tier ?? 'TIER_250',
      blocked: row.blocked === '1',
    };
    this.numbers.set(phoneNumberId, { pn, at: Date.now() });
    return pn;
  }

  /** Records a number's standing at the transport (quality rating, messaging-limit tier, policy block). */
  async setIntegrity(phoneNumberId: string, s: { quality_rating: PhoneNumber['quality_rating']; messaging_limit_tier: string; blocked: boolean }): Promise<void> {
    await this.redis.hset(this.keys.phoneNumber(phoneNumberId), { quality_rating: s.quality_rating, tier: s.messaging_limit_tier, blocked: s.blocked ? '1' : '0' });
    this.numbers.delete(phoneNumberId);
  }

  /** The phone number whose display number (digits) is `display`, or null. */
  async phoneNumberByDisplay(display: string): Promise<PhoneNumber | null> {
    const digits = display.replace(/\D/g, '');
    // Cached as briefly as the numbers themselves: every event from a user is addressed by display number.
    const hit = this.displays.get(digits);
    let id = hit && Date.now() - hit.at < BusinessStore.numberCacheMs ? hit.id : undefined;
    if (id === undefined) {
      id = (await this.redis.get(this.keys.displayNumber(digits))) ?? undefined;
      // Only hits are kept: a number added a moment ago elsewhere must be found at once.
      if (id) {
        this.displays.set(digits, { id, at: Date.now() });
      }
    }
    return id ? this.phoneNumber(id) : null;
  }

  /** The Signal identity of a business phone number. */
  async identity(phoneNumberId: string): Promise<NumberIdentity> {
    const hit = this.identities.get(phoneNumberId);
    if (hit && Date.now() - hit.checkedAt < BusinessStore.identityCheckMs) return hit.id;
    const pnKey = this.keys.phoneNumber(phoneNumberId);
    const [businessId, sealed, reg] = await this.redis.hmget(pnKey, 'business_id', 'identity', 'registration_id');
    if (!businessId || !sealed || !reg) {
      this.identities.delete(phoneNumberId);
      throw new Error(`unknown phone number ${phoneNumberId}`);
    }
    let dk;
    try {
      dk = await this.dataKeys.get(businessId);
    } catch (e) {
      this.identities.delete(phoneNumberId);
      throw e;
    }
    // Still there and unchanged (an identity never changes): kept, no need to unseal it again.
    const id: NumberIdentity = hit && hit.sealed === sealed ? hit.id : { identity: IdentityKeyPair.deserialize(openBytes(dk, sealed, `${pnKey}:identity`)), registrationId: Number(reg) };
    this.identities.set(phoneNumberId, { id, sealed, checkedAt: Date.now() });
    return id;
  }

  /** The business's phone_number_ids. */
  async numbersOf(businessId: string): Promise<string[]> {
    const v = await this.redis.hget(this.keys.business(businessId), 'numbers');
    return v ? v.split(',').filter(Boolean) : [];
  }

  /** Every phone_number_id. */
  async allPhoneNumberIds(): Promise<string[]> {
    return this.redis.smembers(this.keys.phoneNumbers);
  }

  /** Every business's non-secret settings, with its phone numbers. */
  async list(): Promise<(BusinessInfo & { phone_numbers: string[] })[]> {
    const out = [];
    for (const id of (await this.redis.smembers(this.keys.businesses)).sort()) {
      const info = await this.info(id);
      if (info) out.push({ ...info, phone_numbers: await this.numbersOf(id) });
    }
    return out;
  }

  /** Changes a business's name, webhook URL and verify token, or retention (the caller checks the webhook first). */
  async update(businessId: string, patch: { name?: string; webhookUrl?: string; verifyToken?: string; retentionMs?: number | null }): Promise<void> {
    const bizKey = this.keys.business(businessId);
    const dk = await this.dataKeys.get(businessId);
    const fields: Record<string, string> = {};
    if (patch.name !== undefined) fields.name = patch.name;
    if (patch.webhookUrl !== undefined) fields.webhook_url = patch.webhookUrl;
    if (patch.verifyToken !== undefined) fields.verify_token = seal(dk, patch.verifyToken, `${bizKey}:verify_token`);
    if (patch.retentionMs !== undefined) fields.retention_ms = patch.retentionMs === null ? '' : String(patch.retentionMs);
    if (Object.keys(fields).length) await this.redis.hset(bizKey, fields);
    if (patch.retentionMs !== undefined) this.retentions.delete(businessId);
  }

  /**
   * How long the business keeps messages: its own setting, else `defaultMs`, never more than 30 days. Read on
   * every accept and every drain, so cached like numbers: a change made elsewhere applies within seconds.
   */
  async retentionMs(businessId: string, defaultMs: number): Promise<number> {
    const hit = this.retentions.get(businessId);
    let own = hit && Date.now() - hit.at < BusinessStore.numberCacheMs ? hit.ms : undefined;
    if (own === undefined) {
      own = (await this.info(businessId))?.retention_ms ?? null;
      this.retentions.set(businessId, { ms: own, at: Date.now() });
    }
    return Math.min(own ?? defaultMs, MAX_RETENTION_MS);
  }

  /** Replaces the business's app secret (webhooks are signed with it from the next delivery on). */
  async rotateAppSecret(businessId: string, appSecret: string): Promise<void> {
    const bizKey = this.keys.business(businessId);
    await this.redis.hset(bizKey, 'app_secret', seal(await this.dataKeys.get(businessId), appSecret, `${bizKey}:app_secret`));
  }

  /** Adds a phone number (with its own Signal identity) to a business. */
  async addNumber(businessId: string, opts: { verifiedName?: string; throughputMps?: number } = {}): Promise<{ phone_number_id: string; display_phone_number: string }> {
    const info = await this.info(businessId);
    if (!info) throw new Error('no such business');
    const phoneNumberId = digits(15);
    const display = await this.allocateDisplay(phoneNumberId);
    const dk = await this.dataKeys.get(businessId);
    const pnKey = this.keys.phoneNumber(phoneNumberId);
    await this.redis.hset(pnKey, {
      business_id: businessId, waba_id: info.waba_id, display_phone_number: display, verified_name: opts.verifiedName ?? info.name,
      quality_rating: 'GREEN', mps: String(Math.min(1000, Math.max(1, opts.throughputMps ?? 80))), registration_id: String(randomInt(1, 16381)),
      identity: seal(dk, IdentityKeyPair.generate().serialize(), `${pnKey}:identity`),
    });
    // Made visible last (another slot): listed with its business, then among all numbers.
    await this.redis.hset(this.keys.business(businessId), 'numbers', [...(await this.numbersOf(businessId)), phoneNumberId].join(','));
    await this.redis.sadd(this.keys.phoneNumbers, phoneNumberId);
    return { phone_number_id: phoneNumberId, display_phone_number: display };
  }

  /** Removes a phone number from its business (not the last one); false when the business has no such number. */
  async removeNumber(businessId: string, phoneNumberId: string): Promise<boolean> {
    const numbers = await this.numbersOf(businessId);
    if (!numbers.includes(phoneNumberId)) return false;
    if (numbers.length === 1) throw new Error('a business keeps at least one phone number');
    const pn = await this.phoneNumber(phoneNumberId);
    // Hidden first (no new sends can find it), then its rows go.
    await this.redis.hset(this.keys.business(businessId), 'numbers', numbers.filter((n) => n !== phoneNumberId).join(','));
    await this.redis.srem(this.keys.phoneNumbers, phoneNumberId);
    await this.redis.del(this.keys.phoneNumber(phoneNumberId));
    if (pn) await this.redis.del(this.keys.displayNumber(pn.display_phone_number));
    if (pn) this.displays.delete(pn.display_phone_number.replace(/\D/g, ''));
    this.numbers.delete(phoneNumberId);
    this.identities.delete(phoneNumberId);
    return true;
  }

  /** Sets (or clears, with null) a number's own webhook URL and verify token, overriding its business's. */
  async setNumberWebhook(phoneNumberId: string, target: { url: string; verifyToken: string } | null): Promise<void> {
    const pnKey = this.keys.phoneNumber(phoneNumberId);
    if (!target) {
      await this.redis.hdel(pnKey, 'webhook_url', 'verify_token');
      return;
    }
    const businessId = await this.redis.hget(pnKey, 'business_id');
    if (!businessId) throw new Error('no such phone number');
    await this.redis.hset(pnKey, { webhook_url: target.url, verify_token: seal(await this.dataKeys.get(businessId), target.verifyToken, `${pnKey}:verify_token`) });
  }

  /** A number's own webhook URL (its override), or null when it uses its business's. */
  async numberWebhookUrl(phoneNumberId: string): Promise<string | null> {
    return (await this.redis.hget(this.keys.phoneNumber(phoneNumberId), 'webhook_url')) || null;
  }

  /**
   * Deletes a business: its tokens stop working at once, its numbers go, and its data key is destroyed, so
   * whatever it still has in Redis (conversations, messages, outbox) can no longer be opened by anyone and
   * expires with its retention.
   */
  async delete(businessId: string): Promise<boolean> {
    if (!(await this.info(businessId))) return false;
    await this.redis.srem(this.keys.businesses, businessId);
    for (const hash of await this.redis.smembers(this.keys.businessTokens(businessId))) await this.redis.del(this.keys.token(hash));
    for (const pnId of await this.numbersOf(businessId)) {
      const pn = await this.phoneNumber(pnId);
      await this.redis.srem(this.keys.phoneNumbers, pnId);
      await this.redis.del(this.keys.phoneNumber(pnId));
      if (pn) await this.redis.del(this.keys.displayNumber(pn.display_phone_number));
      if (pn) this.displays.delete(pn.display_phone_number.replace(/\D/g, ''));
      this.numbers.delete(pnId);
      this.identities.delete(pnId);
    }
    await this.redis.del(this.keys.businessTokens(businessId));
    await this.redis.del(this.keys.business(businessId));
    await this.dataKeys.destroy(businessId);
    return true;
  }

  /** A business's non-secret settings, or null. */
  async info(businessId: string): Promise<BusinessInfo | null> {
    const row = await this.redis.hgetall(this.keys.business(businessId));
    if (!row.waba_id) return null;
    return {
      business_id: businessId,
      name: row.name ?? '',
      waba_id: row.waba_id,
      retention_ms: row.retention_ms ? Number(row.retention_ms) : null,
      region: row.region || null,
      storage: row.storage === 'none' ? 'none' : 'default',
    };
  }

  /** Where the business's webhooks go, with its app secret unsealed; null if unknown. */
  async webhookTarget(businessId: string, phoneNumberId: string): Promise<WebhookTarget | null> {
    const bizKey = this.keys.business(businessId);
    const row = await this.redis.hgetall(bizKey);
    const pn = await this.phoneNumber(phoneNumberId);
    if (!row.webhook_url || !row.app_secret || !pn) return null;
    const dk = await this.dataKeys.get(businessId);
    // A number's own webhook URL overrides its business's (signed with the business's app secret).
    const override = await this.numberWebhookUrl(phoneNumberId);
    return {
      url: override ?? row.webhook_url,
      appSecret: open(dk, row.app_secret, `${bizKey}:app_secret`).toString(),
      wabaId: row.waba_id ?? '',
      displayPhoneNumber: pn.display_phone_number,
    };
  }

  /** The business's verify token for the subscription check. */
  async verifyToken(businessId: string): Promise<string | null> {
    const bizKey = this.keys.business(businessId);
    const sealed = await this.redis.hget(bizKey, 'verify_token');
    if (!sealed) return null;
    return open(await this.dataKeys.get(businessId), sealed, `${bizKey}:verify_token`).toString();
  }
}
