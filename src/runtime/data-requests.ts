import type { Stores } from '../store/stores.ts';
import type { BusinessStore } from '../store/businesses.ts';
import type { Keys } from '../store/keys.ts';
import { open, type DataKeys } from '../store/sealer.ts';
import { conversationId } from './ids.ts';
import type { GroupService } from './groups.ts';
import type { Mailboxes } from './mailbox.ts';

/** Everything Sealpost holds about one user for one business (a data-subject export). */
export interface UserExport {
  business_id: string;
  phone_number_id: string;
  wa_id: string;
  conversation_id: string;
  /** When the user last wrote (ms), if ever: the customer-service window. */
  last_inbound_at: number | null;
  /** The number's groups the user is in (or asked to join). */
  groups: { group_id: string; role: 'participant' | 'join_request' }[];
  messages: { id: string; direction: 'inbound' | 'outbound'; at: number; retained_until: number | null; message?: Record<string, unknown>; biz_opaque_callback_data?: string }[];
}

/**
 * Data requests for one user of one business: export everything held about them, or erase it all now
 * (conversation state, Signal session, the phone number, every stored message and index entry).
 */
export class DataRequests {
  constructor(
    private readonly stores: Stores,
    private readonly businesses: BusinessStore,
    private readonly keys: Keys,
    private readonly dataKeys: DataKeys,
    private readonly mailboxes: Mailboxes,
  ) {}

  /** The business's groups, for memberships in exports and erasure (set by the router context). */
  groups?: Pick<GroupService, 'membershipsOf' | 'eraseUser'>;

  /** The user's data, or null when Sealpost holds nothing about them for this business. */
  async export(businessId: string, phoneNumberId: string, waId: string): Promise<UserExport | null> {
    const conv = await conversationId(this.dataKeys, businessId, phoneNumberId, waId);
    const redis = await this.stores.forBusiness(this.businesses, businessId);
    const meta = await redis.hgetall(this.keys.meta(conv));
    const groups = (await this.groups?.membershipsOf(businessId, phoneNumberId, waId)) ?? [];
    if (meta.business_id !== businessId && !groups.length) return null;
    const dk = await this.dataKeys.get(businessId);
    const ids = await redis.zrange(this.keys.retention(conv), '0', '-1', 'WITHSCORES');
    const messages: UserExport['messages'] = [];
    for (let i = 0; i < ids.length; i += 2) {
      const id = ids[i]!;
      const rowKey = this.keys.message(conv, id);
      const row = await redis.hgetall(rowKey);
      if (!row.at) continue;
      const body = row.c ? (JSON.parse(open(dk, row.c, `${rowKey}:c`).toString()) as { message: Record<string, unknown> }) : null;
      messages.push({
        id,
        direction: row.in ? 'inbound' : 'outbound',
        at: Number(row.at),
        retained_until: Number(ids[i + 1]),
        ...(body ? { message: body.message } : {}),
        ...(row.bo ? { biz_opaque_callback_data: open(dk, row.bo, `${rowKey}:bo`).toString() } : {}),
      });
    }
    return {
      business_id: businessId, phone_number_id: phoneNumberId, wa_id: waId, conversation_id: conv,
      last_inbound_at: meta.li ? Number(meta.li) : null, groups, messages,
    };
  }

  /** Erases everything about the user for this business; resolves once it is gone (false: nothing held). */
  async erase(businessId: string, phoneNumberId: string, waId: string, timeoutMs = 15_000): Promise<boolean> {
    const conv = await conversationId(this.dataKeys, businessId, phoneNumberId, waId);
    const redis = await this.stores.forBusiness(this.businesses, businessId);
    // Out of the business's groups first (their keys are replaced), then the conversation.
    const groups = (await this.groups?.eraseUser(businessId, phoneNumberId, waId)) ?? 0;
    if ((await redis.hget(this.keys.meta(conv), 'business_id')) !== businessId) return groups > 0;
    // The conversation's own actor erases it, so nothing it is doing can write the user back.
    await this.mailboxes.post(conv, [{ type: 'ERASE', at: Date.now() }], 86_400_000);
    const deadline = Date.now() + timeoutMs;
    while (await redis.exists(this.keys.meta(conv))) {
      if (Date.now() > deadline) throw new Error('erase is taking longer than expected; it will complete when the workers run');
      await new Promise((r) => setTimeout(r, 50));
    }
    return true;
  }
}
