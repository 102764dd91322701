import type { Stores } from '../store/stores.ts';
import { MEDIA_LIMITS, type MediaStore } from '../media/store.ts';
import { encryptAttachment, type AttachmentPointer } from '../media/attachment.ts';

const MEDIA_KINDS = new Set(['image', 'audio', 'video', 'document', 'sticker']);
import type { BusinessStore } from '../store/businesses.ts';
import type { Keys } from '../store/keys.ts';
import type { Stats } from '../store/stats.ts';
import type { RateLimits } from './rate-limits.ts';
import { seal, type DataKeys } from '../store/sealer.ts';
import { conversationId, idempotentWamid, newWamid } from './ids.ts';
import type { Mailboxes, MailboxEvent } from './mailbox.ts';
import { purgeBucket } from '../queues/timers.ts';
import { metrics } from '../ops/metrics.ts';
import { traced } from './trace-context.ts';
import { LuaScript } from './lua/read-script.ts';
import { ROW_BACKSTOP_MS } from './host/loaded.ts';

const ACCEPT = new LuaScript('accept-5.lua');
/** How often accepts renew a conversation's key TTL backstops (well under the day they exceed retention by). */
const BACKSTOP_RENEW_MS = 3_600_000;
import { MediaRefusedError, MediaUploadFailedError, NumberBlockedError, SERVICE_WINDOW_MS, WindowClosedError, type Accepted, type OutboundPort, type OutboundRequest } from './ports.ts';


/**
 * The deletion-job buckets this process added recently, per conversation (bounded): messages to a busy
 * conversation share one job per bucket, so only the first of them pays for the BullMQ add.
 */
class PurgeJobsAdded {
  private readonly added = new Map<string, number>();

  constructor(private readonly max = 100_000) {}

  has(conv: string, until: number, retentionMs: number): boolean {
    const at = purgeBucket(until, retentionMs);
    const hit = this.added.get(`${conv}|${at}`);
    return hit !== undefined && hit > Date.now();
  }

  add(conv: string, until: number, retentionMs: number): void {
    const at = purgeBucket(until, retentionMs);
    if (this.added.size >= this.max) this.added.delete(this.added.keys().next().value!);
    this.added.set(`${conv}|${at}`, at);
  }
}

/**
 * Accepts outbound messages: the message row (content sealed with the business's data key), the
 * conversation's metadata and the SEND event are written in one script on keys of one hash slot, then the
 * conversation is woken. The API answers only after that, so an accepted message is durable and the
 * mailbox order is the API's acceptance order.
 */
export class OutboundService implements OutboundPort {
  private readonly purgesAdded = new PurgeJobsAdded();

  constructor(
    private readonly stores: Stores,
    private readonly keys: Keys,
    private readonly dataKeys: DataKeys,
    private readonly businesses: BusinessStore,
    private readonly mailboxes: Mailboxes,
    private readonly defaultRetentionMs: number,
    /** Schedules the deletion job of a message whose retention ends at `until`. */
    private readonly purgeAt: (conversationId: string, until: number, retentionMs: number) => Promise<void> = async () => {},
    private readonly stats?: Stats,
    /** Throughput and pair limits; checked before anything is stored, so a refused send leaves nothing. */
    private readonly limits?: RateLimits,
  ) {}

  /**
   * The store of a business's conversation; for a region-pinned business the conversation is first recorded
   * as living in that region (routing data in the shared store), so every later step finds it.
   */
  private async storeOf(businessId: string, conv: string) {
    const redis = await this.stores.forBusiness(this.businesses, businessId);
    if (redis !== this.stores.shared) await this.stores.pin(conv, (await this.businesses.info(businessId))?.region ?? null);
    return redis;
  }

  /** How long the business keeps messages. */
  async retentionOf(businessId: string): Promise<number> {
    return this.businesses.retentionMs(businessId, this.defaultRetentionMs);
  }

  private attachments?: { media: MediaStore; upload(ciphertext: Buffer): Promise<string> };

  /** Lets messages carry uploaded media by id (the file goes to the transport as an encrypted attachment). */
  useMedia(media: MediaStore, upload: (ciphertext: Buffer) => Promise<string>): void {
    this.attachments = { media, upload };
  }

  /**
   * A message naming an uploaded media `id` carries, instead, an attachment pointer: the file encrypted with
   * a fresh key, only the ciphertext handed to the transport; key and digest travel in the message itself.
   */
  async withAttachments(businessId: string, message: OutboundRequest['message']): Promise<OutboundRequest['message']> {
    const kind = message.type;
    const part = (message as Record<string, unknown>)[kind] as Record<string, unknown> | undefined;
    if (!MEDIA_KINDS.has(kind) || !part || typeof part.id !== 'string') return message;
    if (!this.attachments) throw new MediaRefusedError(`${kind} by uploaded media id is not available on this server`);
    const info = await this.attachments.media.info(businessId, part.id);
    const bytes = info ? await this.attachments.media.bytes(businessId, part.id) : null;
    if (!info || !bytes) throw new MediaRefusedError(`Parameter ${kind}.id is not a media id of this business (uploaded media expire with the retention)`);
    const fits = kind === 'document' || MEDIA_LIMITS[info.mimeType]?.kind === kind || (kind === 'image' && info.mimeType.startsWith('image/') && info.mimeType !== 'image/webp');
    if (!fits) throw new MediaRefusedError(`Parameter ${kind}.id is a ${info.mimeType} file, not ${kind === 'audio' ? 'an' : 'a'} ${kind}`);
    const enc = encryptAttachment(bytes);
    let pointer: string;
    try {
      pointer = await this.attachments.upload(enc.ciphertext);
    } catch (e) {
      throw new MediaUploadFailedError(`the media could not be handed to the transport: ${(e as Error).message}`);
    }
    const { id: _id, ...rest } = part;
    const attachment: AttachmentPointer = {
      pointer, key: enc.key.toString('base64'), iv: enc.iv.toString('base64'), digest: enc.digest, mime_type: info.mimeType, sha256: info.sha256, file_size: info.fileSize,
    };
    return { ...message, [kind]: { ...rest, id: part.id, attachment } } as OutboundRequest['message'];
  }

  /**
   * The number's throughput (130429) and a burst limit per `key` (the pair limit's), for sends that do not go
   * through {@link accept} (groups: the key names the group). Throws RateLimitedError.
   */
  async checkLimits(phoneNumberId: string, messagesPerSecond: number | undefined, key: string): Promise<void> {
    if (this.limits) await this.limits.check(phoneNumberId, messagesPerSecond ?? 80, key);
  }

  async accept(req: OutboundRequest): Promise<Accepted> {
    // Blocked by the transport for policy violations: nothing is accepted (the standing it last reported).
    const number = await this.businesses.phoneNumber(req.phoneNumberId);
    if (number?.blocked) throw new NumberBlockedError();
    const conv = await conversationId(this.dataKeys, req.businessId, req.phoneNumberId, req.waId);
    const redis = await this.storeOf(req.businessId, conv);
    const idempotent = req.idempotencyKey !== undefined ? await idempotentWamid(this.dataKeys, req.businessId, req.phoneNumberId, conv, req.idempotencyKey) : null;
    // The same key again (a re-added job): the message was accepted before; nothing is sent twice. The row
    // lives until the message's retention ends, which bounds the idempotency window.
    if (idempotent && (await redis.exists(this.keys.message(conv, idempotent)))) return { wamid: idempotent, waId: req.waId, conversationId: conv };
    if (req.message.type !== 'template') {
      // Free-form messages only inside the customer-service window the user's last message opened.
      // The conversation's own record (committed atomically with the inbound message), else the marker that
      // outlives a conversation deleted by a short retention.
      const li = (await redis.hget(this.keys.meta(conv), 'li')) ?? (await redis.get(this.keys.window(conv)));
      if (!li || Date.now() - Number(li) > SERVICE_WINDOW_MS) throw new WindowClosedError();
    }
    if (this.limits) await this.limits.check(req.phoneNumberId, number?.messages_per_second ?? 80, conv);
    // Refusals above come first: nothing is uploaded for a message that is not accepted.
    req = { ...req, message: await this.withAttachments(req.businessId, req.message) };
    const dk = await this.dataKeys.get(req.businessId);
    const retention = await this.retentionOf(req.businessId);
    const wamid = idempotent ?? newWamid(conv);
    const now = Date.now();
    const metaKey = this.keys.meta(conv);
    const rowKey = this.keys.message(conv, wamid);
    const row: Record<string, string> = {
      c: seal(dk, JSON.stringify({ message: req.message, ts: String(Math.floor(now / 1000)) }), `${rowKey}:c`),
      at: String(now),
      // Billing category: templates bill when delivered, service messages (inside the window) are free.
      k: req.message.type === 'template' ? 'template' : 'service',
    };
    if (req.bizOpaqueCallbackData) row.bo = seal(dk, req.bizOpaqueCallbackData, `${rowKey}:bo`);
    // Tracing on: the request's trace context rides with the message, in its mailbox entry and its row (for
    // the statuses reported later, from other drains).
    const event: MailboxEvent = traced({ type: 'SEND', wamid, at: now, ...(req.ttlMs ? { ttlMs: Math.min(req.ttlMs, retention) } : {}) });
    if (event.tp) row.tp = event.tp;
    const keepMs = retention + 86_400_000;
    // One script (accept-5.lua): the metadata made if new, the row with its backstop TTL (it must outlive the
    // message's TTL so a failure is reported), the retention entry and the SEND event; backstops hourly. A
    // drain holding the conversation's lease takes the SEND itself: no ready mark then.
    const answer = Number(await ACCEPT.run(redis, [metaKey, rowKey, this.keys.retention(conv), this.keys.mailbox(conv), this.keys.lease(conv)], [
      req.businessId, req.phoneNumberId, seal(dk, req.waId, `${metaKey}:wa`), keepMs, retention + ROW_BACKSTOP_MS, now, BACKSTOP_RENEW_MS,
      now + retention, wamid, JSON.stringify(event), ...Object.entries(row).flat(),
    ]));
    const created = (answer & 1) === 1;
    const draining = (answer & 2) === 2;
    const purge = created || !this.purgesAdded.has(conv, now + retention, retention)
      ? this.purgeAt(conv, now + retention, retention).then(() => this.purgesAdded.add(conv, now + retention, retention))
      : undefined;
    await Promise.all([purge, draining ? undefined : this.mailboxes.wake(conv, 'sends'), this.stats?.count(req.businessId, { accepted: 1 }, now)]);
    metrics.accepted.inc();
    return { wamid, waId: req.waId, conversationId: conv };
  }

  /** Creates the conversation's metadata if it does not exist yet (a user writing first). */
  async ensure(conv: string, businessId: string, phoneNumberId: string, waId: string): Promise<void> {
    const metaKey = this.keys.meta(conv);
    const redis = await this.storeOf(businessId, conv);
    if (await redis.exists(metaKey)) return;
    const dk = await this.dataKeys.get(businessId);
    const keepMs = (await this.retentionOf(businessId)) + 86_400_000;
    await redis
      .multi()
      .hsetnx(metaKey, 'business_id', businessId)
      .hsetnx(metaKey, 'phone_number_id', phoneNumberId)
      .hsetnx(metaKey, 'wa', seal(dk, waId, `${metaKey}:wa`))
      .pexpire(metaKey, keepMs)
      .exec();
  }

  async markRead(businessId: string, _phoneNumberId: string, messageId: string): Promise<boolean> {
    // Inbound messages are indexed by id when they arrive ({c: conversation, b: business}); an id with no
    // entry, or another business's, is answered the same way so ids cannot be probed.
    const raw = await (await this.stores.forBusiness(this.businesses, businessId)).get(this.keys.messageIndex(messageId));
    if (!raw) return false;
    const entry = JSON.parse(raw) as { c: string; b: string };
    if (entry.b !== businessId) return false;
    await this.mailboxes.post(entry.c, [traced({ type: 'MARK_READ', id: messageId, at: Date.now() })], (await this.retentionOf(businessId)) + 86_400_000);
    return true;
  }
}
