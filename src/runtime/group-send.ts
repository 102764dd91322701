import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { BusinessStore, PhoneNumber } from '../store/businesses.ts';
import { GROUP_ID } from '../store/groups.ts';
import type { Keys } from '../store/keys.ts';
import { seal, type DataKeys } from '../store/sealer.ts';
import type { Stores } from '../store/stores.ts';
import { metrics } from '../ops/metrics.ts';
import { GroupRateLimitError, SingleMemberGroupError, UnknownGroupGraphError, UnsupportedTypeError } from './graph-errors.ts';
import type { GroupHost } from './group-host.ts';
import type { GroupService } from './groups.ts';
import { payloadOf } from './message-body.ts';
import { MessageType, parseOr100, SEND_REQUESTS } from './message-schemas.ts';
import type { OutboundService } from './outbound-service.ts';
import { NumberBlockedError } from './ports.ts';
import { RateLimitedError } from './rate-limits.ts';

/** The kinds the Cloud API allows in groups: text, media, and text or media templates. */
export const GROUP_MESSAGE_TYPES = ['text', 'image', 'video', 'audio', 'document', 'template'] as const;

const GroupTo = z.string({ error: 'Parameter to must be a group id' }).regex(GROUP_ID, { error: 'Parameter to must be a group id' })
  .meta({ description: 'The group id (G and 24 base64url characters), from the group_lifecycle_update webhook.', pattern: GROUP_ID.source });

/** The send request of each kind groups take (the one-to-one request with `recipient_type: "group"` and a group id in `to`). */
export const GROUP_SEND_REQUESTS = Object.fromEntries(GROUP_MESSAGE_TYPES.map((t) => [t, SEND_REQUESTS[t].extend({
  recipient_type: z.literal('group', { error: 'Parameter recipient_type must be "group"' }),
  to: GroupTo,
}).meta({ description: `Sends a ${t} message to a group (encrypted once with the business's sender key, relayed to every member device).` })])) as unknown as Record<(typeof GROUP_MESSAGE_TYPES)[number], z.ZodObject>;

const GroupHead = z.looseObject({
  recipient_type: z.literal('group'),
  to: GroupTo,
  type: MessageType.nullish(),
});

/**
 * A message id for a group message: `wamid.` and base64url of the group id's 18 bytes and 9 random ones (27
 * bytes: never the 24 of a conversation's wamid, so receipts cannot be taken for a conversation's).
 */
export function newGroupWamid(groupId: string): string {
  return `wamid.${Buffer.concat([Buffer.from(groupId.slice(1), 'base64url'), randomBytes(9)]).toString('base64url')}`;
}

/** True for a body that sends to a group (`"recipient_type":"group"`). */
export function isGroupSend(body: unknown): boolean {
  return typeof body === 'object' && body !== null && (body as Record<string, unknown>).recipient_type === 'group';
}

export interface GroupSendDeps {
  stores: Stores;
  keys: Keys;
  dataKeys: DataKeys;
  businesses: BusinessStore;
  groups: GroupService;
  groupHost: GroupHost;
  outbound: OutboundService;
}

/**
 * `POST /{phone_number_id}/messages` with `"recipient_type":"group"`: checked, stored sealed with the group,
 * handed to the group's actor (encrypted once with the business's sender key, relayed to every member
 * device). Refusals leave nothing behind.
 */
export async function acceptGroupSend(d: GroupSendDeps, pn: PhoneNumber, body: unknown): Promise<{ wamid: string; groupId: string }> {
  const head = parseOr100(GroupHead, body);
  const type = head.type ?? 'text';
  if (!(GROUP_MESSAGE_TYPES as readonly string[]).includes(type)) throw new UnsupportedTypeError(`${type} (in a group)`);
  const parsed = parseOr100(GROUP_SEND_REQUESTS[type as (typeof GROUP_MESSAGE_TYPES)[number]], body) as Record<string, unknown> & { biz_opaque_callback_data?: string };
  if (pn.blocked) throw new NumberBlockedError();
  const g = await d.groups.groupOf(pn.business_id, head.to);
  if (!g || g.phone_number_id !== pn.phone_number_id) throw new UnknownGroupGraphError();
  if (!g.participants.length) throw new SingleMemberGroupError();
  // The number's throughput (130429) and, per group, the pair limit's burst (131208), before anything is stored.
  try {
    await d.outbound.checkLimits(pn.phone_number_id, pn.messages_per_second, `group:${g.id}`);
  } catch (e) {
    if (e instanceof RateLimitedError && e.limit === 'pair') throw new GroupRateLimitError();
    throw e;
  }
  let message = { type, [type]: payloadOf(type, (body as Record<string, unknown>)[type] as Record<string, unknown>) } as Record<string, unknown> & { type: string };
  message = await d.outbound.withAttachments(pn.business_id, message);
  const redis = await d.stores.forBusiness(d.businesses, pn.business_id);
  const dk = await d.dataKeys.get(pn.business_id);
  const retention = await d.outbound.retentionOf(pn.business_id);
  const wamid = newGroupWamid(g.id);
  const now = Date.now();
  const rowKey = d.keys.groupMessage(pn.business_id, g.id, wamid);
  const row: Record<string, string> = {
    c: seal(dk, JSON.stringify({ message, ts: String(Math.floor(now / 1000)) }), `${rowKey}:c`),
    at: String(now),
    k: type === 'template' ? 'template' : 'service',
  };
  if (parsed.biz_opaque_callback_data !== undefined) row.bo = seal(dk, parsed.biz_opaque_callback_data, `${rowKey}:bo`);
  await redis.multi().hset(rowKey, row).pexpire(rowKey, retention + 3_600_000).exec();
  await d.groupHost.post(pn.business_id, g.id, [{ type: 'SEND', wamid, at: now, ttlMs: retention }]);
  metrics.accepted.inc();
  return { wamid, groupId: g.id };
}
