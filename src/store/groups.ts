import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keys } from './keys.ts';
import { open, seal } from './sealer.ts';

/**
 * A business's groups (the Cloud API's Groups API), in Redis under the business's keys. The record names
 * users (participants' and requesters' numbers) and carries the subject, the description and the invite
 * code: it is sealed whole with the business's data key, under its key name. Updates are compare-and-set on
 * a version, so a join from the transport and an API update never overwrite each other.
 */

/** A user waiting for the business to approve their join (an `approval_required` group). */
export interface JoinRequest {
  id: string;
  wa_id: string;
  /** ms */
  at: number;
}

/** One group as stored (sealed). */
export interface GroupRecord {
  id: string;
  business_id: string;
  phone_number_id: string;
  subject: string;
  description: string;
  join_approval_mode: 'auto_approve' | 'approval_required';
  invite_code: string;
  /** wa_ids, in the order they joined (the business is not one). */
  participants: string[];
  join_requests: JoinRequest[];
  /** ms */
  created: number;
}

/** A group id: `G` and 24 base64url characters (144 random bits). Never shaped like a phone number or media id. */
export const GROUP_ID = /^G[A-Za-z0-9_-]{24}$/;

export function newGroupId(): string {
  return `G${randomBytes(18).toString('base64url')}`;
}

/** An invite code (the tail of `https://chat.whatsapp.com/<code>`): 22 base64url characters. */
export function newInviteCode(): string {
  return randomBytes(16).toString('base64url');
}

export function newJoinRequestId(): string {
  return randomBytes(12).toString('base64url');
}

// Sets the record if its version is still the one read (0: the record must not exist yet).
const CAS = `
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', v + 1, 'd', ARGV[2])
return 1`;

/** The record changed under a compare-and-set too many times in a row. */
export class GroupBusyError extends Error {
  constructor() {
    super('group record busy');
    this.name = 'GroupBusyError';
  }
}

export class GroupStore {
  constructor(
    /** The shared store (the owner index). */
    private readonly shared: Redis,
    /** The store of a business (its region's, when pinned). */
    private readonly storeOf: (businessId: string) => Promise<Redis>,
    private readonly keys: Keys,
    private readonly dataKeyOf: (businessId: string) => Promise<Buffer>,
  ) {}

  /** Which business and number own a group; null for an unknown id. */
  async owner(groupId: string): Promise<{ business_id: string; phone_number_id: string } | null> {
    if (!GROUP_ID.test(groupId)) return null;
    const v = await this.shared.get(this.keys.groupOwner(groupId));
    if (!v) return null;
    const [business_id, phone_number_id] = v.split(' ');
    return { business_id: business_id!, phone_number_id: phone_number_id! };
  }

  /** How many groups the number has. */
  async count(businessId: string, phoneNumberId: string): Promise<number> {
    return (await this.storeOf(businessId)).zcard(this.keys.numberGroups(businessId, phoneNumberId));
  }

  /** The number's group ids with their creation times, oldest first. */
  async ids(businessId: string, phoneNumberId: string): Promise<{ id: string; created: number }[]> {
    const flat = await (await this.storeOf(businessId)).zrange(this.keys.numberGroups(businessId, phoneNumberId), '0', '-1', 'WITHSCORES');
    const out: { id: string; created: number }[] = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i]!, created: Number(flat[i + 1]) });
    return out;
  }

  /** Stores a new group and indexes it. */
  async create(g: GroupRecord): Promise<void> {
    const redis = await this.storeOf(g.business_id);
    const key = this.keys.group(g.business_id, g.id);
    const ok = await redis.eval(CAS, 1, key, '0', await this.sealed(g, key));
    if (ok !== 1) throw new Error('group id collision');
    await redis.zadd(this.keys.numberGroups(g.business_id, g.phone_number_id), g.created, g.id);
    await this.shared.set(this.keys.groupOwner(g.id), `${g.business_id} ${g.phone_number_id}`);
  }

  /** A business's group, opened; null when it has none by that id. */
  async get(businessId: string, groupId: string): Promise<GroupRecord | null> {
    return (await this.read(businessId, groupId))?.record ?? null;
  }

  private async read(businessId: string, groupId: string): Promise<{ version: string; record: GroupRecord } | null> {
    const key = this.keys.group(businessId, groupId);
    const [v, d] = await (await this.storeOf(businessId)).hmget(key, 'v', 'd');
    if (!v || !d) return null;
    const record = JSON.parse(open(await this.dataKeyOf(businessId), d, key).toString('utf8')) as GroupRecord;
    return { version: v, record };
  }

  /**
   * Changes a group: `change` gets the current record and answers the new one (or null to leave it as it
   * is); retried on a concurrent change. `beforeCommit` runs with the new record before it is written (the
   * transport is told first: each writer's last PUT completes before its write, so the transport ends with
   * the list of the last write). Answers what `change` answered with the record it saw, or null for an
   * unknown group.
   */
  async update<T>(businessId: string, groupId: string, change: (g: GroupRecord) => { next: GroupRecord | null; result: T }, beforeCommit?: (before: GroupRecord, next: GroupRecord) => Promise<void>): Promise<{ result: T; before: GroupRecord } | null> {
    const key = this.keys.group(businessId, groupId);
    const redis = await this.storeOf(businessId);
    for (let attempt = 0; attempt < 20; attempt++) {
      const cur = await this.read(businessId, groupId);
      if (!cur) return null;
      const before = structuredClone(cur.record);
      const { next, result } = change(cur.record);
      if (!next) return { result, before };
      await beforeCommit?.(before, next);
      if ((await redis.eval(CAS, 1, key, cur.version, await this.sealed(next, key))) === 1) return { result, before };
    }
    throw new GroupBusyError();
  }

  /** Deletes a group, its index entry and its owner entry. */
  async delete(businessId: string, phoneNumberId: string, groupId: string): Promise<void> {
    const redis = await this.storeOf(businessId);
    await redis.del(this.keys.group(businessId, groupId));
    await redis.zrem(this.keys.numberGroups(businessId, phoneNumberId), groupId);
    await this.shared.del(this.keys.groupOwner(groupId));
  }

  private async sealed(g: GroupRecord, key: string): Promise<string> {
    return seal(await this.dataKeyOf(g.business_id), JSON.stringify(g), key);
  }
}
