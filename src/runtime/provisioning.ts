import { randomBytes } from 'node:crypto';
import { parseDuration } from '../config.ts';
import { MAX_RETENTION_MS, type BusinessInfo, type BusinessInput, type BusinessStore, type CreatedBusiness } from '../store/businesses.ts';
import { webhookUrlProblem } from '../webhook/egress.ts';
import { verifySubscription } from '../webhook/subscription.ts';

/**
 * Provisioning: the Business Manager's rules and operations (businesses, their numbers, webhooks, app secrets,
 * data keys), once, for every front end. The admin API and the CLI only translate their input into these calls
 * and a {@link ProvisioningError} into their own words.
 */

/** What a refusal is about: the field as the admin API's JSON names it, or `request` for the ask as a whole. */
export type ProvisioningField =
  | 'name' | 'webhook_url' | 'verify_token' | 'app_secret' | 'retention' | 'region' | 'storage' | 'verified_name'
  | 'business_id' | 'phone_number_id' | 'request';

/** Why, as a stable word that front ends branch on (the message may be reworded, these are not). */
export type ProvisioningCode =
  /** Not of the expected type or form (not a string, not a duration up to 30d, not a known storage mode). */
  | 'invalid'
  /** Empty, or only whitespace. */
  | 'empty'
  | 'too_short'
  | 'too_long'
  /** A webhook URL that is not http(s). */
  | 'not_http'
  /** A webhook URL leading where webhooks may not go (SEALPOST_WEBHOOK_DENY_PRIVATE). */
  | 'refused'
  /** The webhook URL did not pass the subscription check. */
  | 'subscription_failed'
  /** A region that SEALPOST_REGIONS does not name. */
  | 'not_configured'
  /** A webhook URL without its verify token, or the other way round. */
  | 'together'
  /** An update that changes nothing. */
  | 'nothing_to_change'
  /** No such business, or no such number of this business. */
  | 'unknown'
  /** Removing a business's only number. */
  | 'last_number';

/**
 * A provisioning request refused, with the field and a stable code. The message names fields as the admin API's
 * JSON does (`webhook_url refused: ...`); `value` is the input refused, where a front end may quote it.
 */
export class ProvisioningError extends Error {
  constructor(readonly field: ProvisioningField, readonly code: ProvisioningCode, message: string, readonly value?: string) {
    super(message);
    this.name = 'ProvisioningError';
  }
}

/** What provisioning works with. */
export interface ProvisioningDeps {
  businesses: BusinessStore;
  /** Publishes a new number's prekeys on the transport, so users can write to it at once. */
  publisher?: { ensure(phoneNumberId: string): Promise<boolean> };
  /** The business's groups: deleted (off the transport) with their number or their business. */
  groups?: { forgetNumber(businessId: string, phoneNumberId: string): Promise<number> };
  /** Adds data key versions; without it {@link Provisioning.rotateDataKey} is unavailable. */
  dataKeys?: { rotate(businessId: string): Promise<{ version: number; activeAt: number }> };
  /** The webhook subscription check (default: GET hub.challenge against the URL). */
  verify?: (url: string, verifyToken: string) => Promise<{ ok: boolean; reason?: string }>;
  /** SEALPOST_WEBHOOK_DENY_PRIVATE: webhook URLs reaching loopback, private or link-local addresses are refused. */
  denyPrivate?: boolean;
  /** The regions SEALPOST_REGIONS configures (a business may be pinned only to one of them). */
  regions?: readonly string[];
}

/** A new business as asked for; every field is checked here, so front ends pass what they were given. */
export interface NewBusiness {
  name: unknown;
  webhookUrl: unknown;
  appSecret: unknown;
  verifyToken: unknown;
  region?: unknown;
  /** A duration up to 30d (`30d`, `12h`, `10m`); default SEALPOST_RETENTION. */
  retention?: unknown;
  storage?: unknown;
}

/** Changes to a business as asked for (undefined: unchanged); a webhook URL comes with its verify token. */
export interface BusinessChanges {
  name?: unknown;
  retention?: unknown;
  webhookUrl?: unknown;
  verifyToken?: unknown;
}

/** Changes to a business, checked (what {@link BusinessStore.update} takes). */
export interface BusinessPatch {
  name?: string;
  retentionMs?: number;
  webhookUrl?: string;
  verifyToken?: string;
}

/** A phone number as the Business Manager shows it (no secrets). */
export interface NumberDetails {
  phone_number_id: string;
  display_phone_number: string;
  verified_name: string;
  quality_rating: 'GREEN' | 'YELLOW' | 'RED';
  messaging_limit: string;
  blocked: boolean;
  messages_per_second: number;
  /** The number's own webhook URL, or null when it uses its business's. */
  webhook_url: string | null;
}

/** Whether to run the webhook subscription check (where the URL leads is checked regardless). */
export interface WebhookCheckOptions {
  verify?: boolean;
}

const STORAGE_MODES = ['default', 'none'] as const;

/** A string of `min` to `max` characters (at least `min` besides surrounding whitespace). */
function text(v: unknown, field: ProvisioningField, min = 1, max = 200): string {
  const refuse = (code: ProvisioningCode) => new ProvisioningError(field, code, `${field} must be a string of ${min} to ${max} characters`);
  if (typeof v !== 'string') throw refuse('invalid');
  if (!v.trim()) throw refuse('empty');
  if (v.trim().length < min) throw refuse('too_short');
  if (v.length > max) throw refuse('too_long');
  return v;
}

/** An http(s) URL, normalized as the WHATWG parser writes it. */
function httpUrl(v: unknown, field: ProvisioningField): string {
  try {
    const u = new URL(String(v));
    if (u.protocol === 'http:' || u.protocol === 'https:') return u.toString();
  } catch { /* below */ }
  throw new ProvisioningError(field, 'not_http', `${field} must be an http(s) URL`, String(v));
}

/** A retention: a positive duration up to 30 days. */
function retentionOf(v: unknown): number {
  try {
    const ms = parseDuration(String(v));
    if (ms > 0 && ms <= MAX_RETENTION_MS) return ms;
  } catch { /* below */ }
  throw new ProvisioningError('retention', 'invalid', 'retention must be a duration up to 30d (e.g. 30d, 12h, 10m)', String(v));
}

/** Creates, changes and deletes businesses and their numbers, checking every rule first. */
export class Provisioning {
  constructor(private readonly deps: ProvisioningDeps) {}

  /**
   * A new business's settings checked, without the store or the network (front ends may call it before they
   * connect, to refuse bad input at once); {@link Provisioning.create} checks them again.
   */
  static newBusiness(input: NewBusiness, regions: readonly string[] = []): BusinessInput {
    const name = text(input.name, 'name');
    const webhookUrl = httpUrl(input.webhookUrl, 'webhook_url');
    const appSecret = text(input.appSecret, 'app_secret', 8);
    const verifyToken = text(input.verifyToken, 'verify_token');
    const retentionMs = input.retention !== undefined ? retentionOf(input.retention) : undefined;
    let region: string | undefined;
    if (input.region !== undefined) {
      region = String(input.region);
      if (!regions.includes(region)) {
        throw new ProvisioningError('region', 'not_configured', `region ${region} is not configured (SEALPOST_REGIONS has: ${regions.join(', ') || 'none'})`, region);
      }
    }
    const storage = input.storage ?? 'default';
    if (!STORAGE_MODES.includes(storage as never)) throw new ProvisioningError('storage', 'invalid', "storage must be 'default' or 'none'", String(storage));
    return { name, webhookUrl, appSecret, verifyToken, ...(region ? { region } : {}), ...(retentionMs ? { retentionMs } : {}), storage: storage as 'default' | 'none' };
  }

  /** Changes to a business checked, without the store or the network; the webhook URL is checked on update. */
  static businessPatch(changes: BusinessChanges): BusinessPatch {
    const patch: BusinessPatch = {};
    if (changes.name !== undefined) patch.name = text(changes.name, 'name');
    if (changes.retention !== undefined) patch.retentionMs = retentionOf(changes.retention);
    if (changes.webhookUrl !== undefined || changes.verifyToken !== undefined) {
      // The new URL's subscription check needs the token it will be configured with.
      if (changes.webhookUrl === undefined || changes.verifyToken === undefined) {
        throw new ProvisioningError('request', 'together', 'webhook_url and verify_token change together (the new URL is checked with the token)');
      }
      patch.webhookUrl = httpUrl(changes.webhookUrl, 'webhook_url');
      patch.verifyToken = text(changes.verifyToken, 'verify_token');
    }
    if (!Object.keys(patch).length) throw new ProvisioningError('request', 'nothing_to_change', 'nothing to change: name, retention, webhook_url with verify_token');
    return patch;
  }

  /** A number's own webhook checked (an http(s) URL and its verify token), without the network. */
  static webhookTarget(target: { url: unknown; verifyToken: unknown }): { url: string; verifyToken: string } {
    return { url: httpUrl(target.url, 'webhook_url'), verifyToken: text(target.verifyToken, 'verify_token') };
  }

  /** A chosen app secret checked (at least 8 characters). */
  static appSecret(v: unknown): string {
    return text(v, 'app_secret', 8);
  }

  /** The business, or a refusal naming it. */
  async business(businessId: string): Promise<BusinessInfo> {
    const info = await this.deps.businesses.info(businessId);
    if (!info) throw new ProvisioningError('business_id', 'unknown', `no business ${businessId}`, businessId);
    return info;
  }

  /** Every business with its numbers' ids (no secrets). */
  async list(): Promise<(BusinessInfo & { phone_numbers: string[] })[]> {
    return this.deps.businesses.list();
  }

  /**
   * Provisions a business with one phone number: its settings checked, then its webhook URL (where it leads,
   * then the subscription check unless `verify: false`), then the number's prekeys published.
   */
  async create(input: NewBusiness, opts: WebhookCheckOptions = {}): Promise<CreatedBusiness> {
    const b = Provisioning.newBusiness(input, this.deps.regions);
    await this.webhookChecked(b.webhookUrl, b.verifyToken, opts.verify ?? true);
    const created = await this.deps.businesses.create(b);
    // Users can write first only once the number's bundle is in the directory; the workers retry if not.
    await this.deps.publisher?.ensure(created.phone_number_id);
    return created;
  }

  /** Changes a business's name, retention, or webhook URL with its verify token (the URL checked first). */
  async update(businessId: string, changes: BusinessChanges, opts: WebhookCheckOptions = {}): Promise<void> {
    await this.business(businessId);
    const patch = Provisioning.businessPatch(changes);
    if (patch.webhookUrl !== undefined) await this.webhookChecked(patch.webhookUrl, patch.verifyToken!, opts.verify ?? true);
    await this.deps.businesses.update(businessId, patch);
  }

  /** Deletes a business: its tokens, numbers and data key (what it still has in Redis can no longer be read). */
  async delete(businessId: string): Promise<boolean> {
    await this.business(businessId);
    // Its groups first: registered with the transport, they would outlive the business (their records unreadable).
    for (const pn of await this.deps.businesses.numbersOf(businessId)) await this.deps.groups?.forgetNumber(businessId, pn);
    return this.deps.businesses.delete(businessId);
  }

  /** Replaces the app secret with the one given, or with one generated here (then `generated`: shown once). */
  async rotateAppSecret(businessId: string, given?: unknown): Promise<{ appSecret: string; generated: boolean }> {
    await this.business(businessId);
    const appSecret = given === undefined ? randomBytes(24).toString('hex') : Provisioning.appSecret(given);
    await this.deps.businesses.rotateAppSecret(businessId, appSecret);
    return { appSecret, generated: given === undefined };
  }

  /** Adds a data key version; it starts sealing once every process has read it (`activeAt`, ms since the epoch). */
  async rotateDataKey(businessId: string): Promise<{ version: number; activeAt: number }> {
    await this.business(businessId);
    if (!this.deps.dataKeys) throw new Error('data key rotation is not available here');
    return this.deps.dataKeys.rotate(businessId);
  }

  /** The business's phone numbers with their settings. */
  async numbers(businessId: string): Promise<NumberDetails[]> {
    await this.business(businessId);
    const details = await Promise.all((await this.deps.businesses.numbersOf(businessId)).map((pn) => this.numberDetails(pn)));
    return details.filter((d): d is NumberDetails => d !== null);
  }

  /** Adds a phone number (its own Signal identity, prekeys published); its verified name defaults to the business name. */
  async addNumber(businessId: string, opts: { verifiedName?: unknown } = {}): Promise<{ phone_number_id: string; display_phone_number: string }> {
    await this.business(businessId);
    const verifiedName = opts.verifiedName !== undefined ? text(opts.verifiedName, 'verified_name') : undefined;
    const added = await this.deps.businesses.addNumber(businessId, verifiedName !== undefined ? { verifiedName } : {});
    await this.deps.publisher?.ensure(added.phone_number_id);
    return added;
  }

  /** Removes a phone number; a business keeps at least one. */
  async removeNumber(businessId: string, phoneNumberId: string): Promise<void> {
    const numbers = await this.numbersOfOwn(businessId, phoneNumberId);
    if (numbers.length === 1) throw new ProvisioningError('phone_number_id', 'last_number', 'a business keeps at least one phone number', phoneNumberId);
    await this.deps.groups?.forgetNumber(businessId, phoneNumberId);
    // The store refuses the last number too, for a concurrent removal this check did not see.
    await this.deps.businesses.removeNumber(businessId, phoneNumberId);
  }

  /** Gives a number its own webhook URL (checked like a business's), or with null its business's again. */
  async setNumberWebhook(businessId: string, phoneNumberId: string, target: { url: unknown; verifyToken: unknown } | null, opts: WebhookCheckOptions = {}): Promise<void> {
    await this.numbersOfOwn(businessId, phoneNumberId);
    if (!target) {
      await this.deps.businesses.setNumberWebhook(phoneNumberId, null);
      return;
    }
    const { url, verifyToken } = Provisioning.webhookTarget(target);
    await this.webhookChecked(url, verifyToken, opts.verify ?? true);
    await this.deps.businesses.setNumberWebhook(phoneNumberId, { url, verifyToken });
  }

  /** The business's numbers, after checking `phoneNumberId` is one of them. */
  private async numbersOfOwn(businessId: string, phoneNumberId: string): Promise<string[]> {
    await this.business(businessId);
    const numbers = await this.deps.businesses.numbersOf(businessId);
    if (!numbers.includes(phoneNumberId)) throw new ProvisioningError('phone_number_id', 'unknown', `business ${businessId} has no phone number ${phoneNumberId}`, phoneNumberId);
    return numbers;
  }

  private async numberDetails(phoneNumberId: string): Promise<NumberDetails | null> {
    const pn = await this.deps.businesses.phoneNumber(phoneNumberId);
    if (!pn) return null;
    return {
      phone_number_id: pn.phone_number_id, display_phone_number: pn.display_phone_number, verified_name: pn.verified_name,
      quality_rating: pn.quality_rating, messaging_limit: pn.messaging_limit_tier, blocked: pn.blocked, messages_per_second: pn.messages_per_second,
      webhook_url: await this.deps.businesses.numberWebhookUrl(phoneNumberId),
    };
  }

  /** Where a webhook URL leads, then (unless `verify` is false) the subscription check with its verify token. */
  private async webhookChecked(url: string, verifyToken: string, verify: boolean): Promise<void> {
    const denyPrivate = this.deps.denyPrivate ?? false;
    // Where the URL leads is checked before anything is sent there, even when the subscription check is skipped.
    const problem = await webhookUrlProblem(url, denyPrivate);
    if (problem) throw new ProvisioningError('webhook_url', 'refused', `webhook_url refused: ${problem}`, url);
    if (!verify) return;
    const check: { ok: boolean; reason?: string } = this.deps.verify
      ? await this.deps.verify(url, verifyToken)
      : await verifySubscription(url, verifyToken, { timeoutMs: 10_000, denyPrivate });
    if (!check.ok) throw new ProvisioningError('webhook_url', 'subscription_failed', `webhook subscription check failed: ${check.reason ?? 'no challenge echoed'}`, url);
  }
}
