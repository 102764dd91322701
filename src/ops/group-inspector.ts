import type { GroupContext } from '../../machines/group.ts';
import type { BusinessStore } from '../store/businesses.ts';
import { GROUP_ID } from '../store/groups.ts';
import type { Keys } from '../store/keys.ts';
import { open, type DataKeys } from '../store/sealer.ts';
import type { Stores } from '../store/stores.ts';

/** What the group inspector reads. */
export interface GroupInspectorDeps {
  stores: Stores;
  keys: Keys;
  dataKeys: DataKeys;
  businesses: BusinessStore;
}

/**
 * A group actor as an operator sees it (`GET /admin/groups/{group_id}`): its state, members by conversation id
 * (never numbers), the sender key's distribution id, what each message still waits for, the mailbox and the
 * trace's tail. No content, no keys. Null for an unknown group or one whose actor never ran.
 */
export async function inspectGroup(d: GroupInspectorDeps, groupId: string): Promise<Record<string, unknown> | null> {
  if (!GROUP_ID.test(groupId)) return null;
  const owner = await d.stores.shared.get(d.keys.groupOwner(groupId));
  const businessId = owner?.split(' ')[0];
  if (!businessId) return null;
  const redis = await d.stores.forBusiness(d.businesses, businessId);
  const actorKey = d.keys.groupActor(businessId, groupId);
  const [v, s, q] = await redis.hmget(actorKey, 'v', 's', 'q');
  if (!s) return null;
  const persisted = JSON.parse(open(await d.dataKeys.get(businessId), s, `${actorKey}:s`).toString()) as { value: string; context: GroupContext };
  const c = persisted.context;
  const [mailbox, lease, trace] = await Promise.all([
    redis.llen(d.keys.groupMailbox(businessId, groupId)),
    redis.pttl(d.keys.groupLease(businessId, groupId)),
    redis.lrange(d.keys.groupTrace(businessId, groupId), -20, -1),
  ]);
  return {
    group_id: groupId, business_id: businessId, phone_number_id: owner!.split(' ')[1] ?? null,
    state: persisted.value, version: Number(v ?? 0), trace_seq: Number(q ?? 0),
    members: c.members, distribution_id: c.dist,
    devices_holding_key: c.keyed, devices_expected: c.expected ?? {},
    member_keys: c.memberKeys,
    messages: c.messages.map((m) => ({
      wamid: m.wamid, seq: m.seq, state: m.state, attempts: m.attempts, accepted_at: m.acceptedAt, expires_at: m.expiresAt,
      next_attempt_at: m.nextAttemptAt, delivered: !!m.delivered,
      awaiting_devices: Object.fromEntries(Object.entries(m.owed).filter(([, ds]) => ds.length)),
    })),
    held_member_messages: c.held.length,
    timer: c.timer,
    mailbox_events: mailbox,
    lease_ms_left: lease > 0 ? lease : null,
    trace_tail: trace.map((l) => JSON.parse(l) as unknown),
  };
}
