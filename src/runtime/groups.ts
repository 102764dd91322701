import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { BusinessStore, PhoneNumber } from '../store/businesses.ts';
import { GroupStore, newGroupId, newInviteCode, newJoinRequestId, type GroupRecord } from '../store/groups.ts';
import type { ChangeValue } from '../webhook/envelope.ts';
import { GroupCreateLimitError, InvalidCursorError, InvalidParameterError, NotGroupParticipantError } from './graph-errors.ts';
import { parseOr100 } from './message-schemas.ts';
import type { TransportClient, TransportEvent } from './transport-client.ts';
import { maskPhone } from '../log.ts';

/**
 * Group management (the Cloud API's Groups API, first slice: no sending to groups yet). The router is
 * authoritative for membership: every change is stored (sealed), then the whole list is PUT to the transport,
 * then the business is told with a webhook through the signed, retried outbox. docs/groups.md.
 */

export const MAX_GROUPS_PER_NUMBER = 10_000;
export const MAX_PARTICIPANTS = 8;
export const INVITE_PREFIX = 'https://chat.whatsapp.com/';

export const CreateGroupRequest = z.strictObject({
  messaging_product: z.literal('whatsapp', { error: 'messaging_product must be "whatsapp"' }),
  subject: z.string({ error: 'subject is required' }).trim().min(1, 'subject is required').max(128, 'subject is at most 128 characters'),
  description: z.string().max(2048, 'description is at most 2048 characters').optional(),
  join_approval_mode: z.enum(['auto_approve', 'approval_required'], { error: 'join_approval_mode is auto_approve or approval_required' }).optional(),
});

export const UpdateGroupRequest = z.strictObject({
  messaging_product: z.literal('whatsapp', { error: 'messaging_product must be "whatsapp"' }),
  subject: z.string().trim().min(1, 'subject may not be empty').max(128, 'subject is at most 128 characters').optional(),
  description: z.string().max(2048, 'description is at most 2048 characters').optional(),
  join_approval_mode: z.enum(['auto_approve', 'approval_required'], { error: 'join_approval_mode is auto_approve or approval_required' }).optional(),
});

export const RemoveParticipantsRequest = z.strictObject({
  messaging_product: z.literal('whatsapp', { error: 'messaging_product must be "whatsapp"' }),
  participants: z.array(z.strictObject({ user: z.string().regex(/^\+?[1-9]\d{6,14}$/, 'participants[].user is a wa_id') }), { error: 'participants is required' })
    .min(1, 'participants may not be empty').max(MAX_PARTICIPANTS, `at most ${MAX_PARTICIPANTS} participants at a time`),
});

export const JoinRequestsRequest = z.strictObject({
  messaging_product: z.literal('whatsapp', { error: 'messaging_product must be "whatsapp"' }),
  join_requests: z.array(z.string().min(1).max(64), { error: 'join_requests is required' }).min(1, 'join_requests may not be empty').max(MAX_PARTICIPANTS, `at most ${MAX_PARTICIPANTS} join requests at a time`),
});

export const ListGroupsQuery = z.object({
  limit: z.coerce.number({ error: 'limit is 1..1024' }).int('limit is 1..1024').min(1, 'limit is 1..1024').max(1024, 'limit is 1..1024').optional(),
  after: z.string().max(200).optional(),
  before: z.string().max(200).optional(),
});

export const GROUP_FIELDS = ['subject', 'description', 'join_approval_mode', 'participants', 'total_participant_count', 'creation_timestamp', 'suspended'] as const;

const digits = (waId: string) => waId.replace(/^\+/, '');
const ts = (ms: number) => String(Math.floor(ms / 1000));

/** A cursor: the position (creation time, id) of an item, opaque to clients, checked when given back. */
function cursorOf(g: { id: string; created: number }): string {
  return Buffer.from(`${g.created}.${g.id}`).toString('base64url');
}
function parseCursor(c: string): { created: number; id: string } {
  const m = /^(\d{1,16})\.(G[A-Za-z0-9_-]{24})$/.exec(Buffer.from(c, 'base64url').toString('utf8'));
  if (!m || cursorOf({ created: Number(m[1]), id: m[2]! }) !== c) throw new InvalidCursorError();
  return { created: Number(m[1]), id: m[2]! };
}
const before = (a: { created: number; id: string }, b: { created: number; id: string }) => a.created < b.created || (a.created === b.created && a.id < b.id);

/** An `errors[]` entry of a group webhook. */
function webhookError(code: number, title: string, details: string): Record<string, unknown> {
  return { code, title, message: title, error_data: { details } };
}

export class GroupService {
  constructor(
    readonly store: GroupStore,
    private readonly businesses: BusinessStore,
    private readonly transport: Pick<TransportClient, 'putGroup' | 'deleteGroup'>,
    private readonly webhook: (businessId: string, phoneNumberId: string, values: ChangeValue[]) => Promise<void>,
    private readonly log: Logger,
  ) {}

  /** The business's group by id, or null (unknown, or another business's: the same to the caller). */
  async groupOf(businessId: string, groupId: string): Promise<GroupRecord | null> {
    const owner = await this.store.owner(groupId);
    if (!owner || owner.business_id !== businessId) return null;
    return this.store.get(businessId, groupId);
  }

  private async tell(g: { business_id: string; phone_number_id: string }, field: string, entry: Record<string, unknown>): Promise<void> {
    const pn = await this.businesses.phoneNumber(g.phone_number_id);
    if (!pn) return;
    const value = {
      messaging_product: 'whatsapp',
      metadata: { display_phone_number: pn.display_phone_number, phone_number_id: pn.phone_number_id },
      groups: [{ timestamp: ts(Date.now()), ...entry }],
    };
    await this.webhook(g.business_id, g.phone_number_id, [{ other: { field, value } }]);
  }

  private async register(g: GroupRecord): Promise<void> {
    const pn = await this.businesses.phoneNumber(g.phone_number_id);
    if (!pn) throw new Error('the group\'s number is gone');
    await this.transport.putGroup(g.id, { owner: pn.display_phone_number, invite_code: g.invite_code, join_approval: g.join_approval_mode, members: g.participants });
  }

  /**
   * Changes a group in the store, telling the transport first when what it holds (members, invite code, join
   * approval) changes. A failed PUT leaves the store as it was (the API answers an error; an event from the
   * transport is not acknowledged and comes back).
   */
  private async change<T>(businessId: string, groupId: string, fn: (g: GroupRecord) => { next: GroupRecord | null; result: T }): Promise<{ result: T; before: GroupRecord } | null> {
    let members = false;
    const r = await this.store.update(businessId, groupId, fn, async (before, next) => {
      members = before.participants.join() !== next.participants.join();
      if (before.invite_code !== next.invite_code || before.join_approval_mode !== next.join_approval_mode || members) await this.register(next);
    });
    // The group's actor follows the record (a new member gets the key; a member gone, a new key).
    if (r && members) await this.onMembersChanged?.(businessId, groupId);
    return r;
  }

  /** Told after the members of a group changed or the group was deleted (the router wakes the group's actor). */
  onMembersChanged?: (businessId: string, groupId: string) => Promise<void>;

  /** `POST /{phone_number_id}/groups`: answers the request id; the group id and link follow by webhook. */
  async create(pn: PhoneNumber, body: unknown): Promise<{ request_id: string }> {
    const req = parseOr100(CreateGroupRequest, body);
    if ((await this.store.count(pn.business_id, pn.phone_number_id)) >= MAX_GROUPS_PER_NUMBER) throw new GroupCreateLimitError(MAX_GROUPS_PER_NUMBER);
    const requestId = randomBytes(16).toString('hex');
    const g: GroupRecord = {
      id: newGroupId(), business_id: pn.business_id, phone_number_id: pn.phone_number_id, subject: req.subject, description: req.description ?? '',
      join_approval_mode: req.join_approval_mode ?? 'auto_approve', invite_code: newInviteCode(), participants: [], join_requests: [], created: Date.now(),
    };
    await this.store.create(g);
    try {
      await this.register(g);
    } catch (e) {
      // Not registered: no group. The business learns it from the webhook, as from Meta's.
      this.log.warn({ group_id: g.id, err: (e as Error).message }, 'group could not be registered with the transport');
      await this.store.delete(g.business_id, g.phone_number_id, g.id);
      await this.tell(g, 'group_lifecycle_update', { type: 'group_create', request_id: requestId, errors: [webhookError(131000, 'Something went wrong', 'The group could not be created; try again.')] });
      return { request_id: requestId };
    }
    this.log.info({ group_id: g.id, phone_number_id: g.phone_number_id }, 'group created');
    await this.tell(g, 'group_lifecycle_update', {
      type: 'group_create', request_id: requestId, group_id: g.id, subject: g.subject, ...(g.description ? { description: g.description } : {}),
      join_approval_mode: g.join_approval_mode, invite_link: INVITE_PREFIX + g.invite_code,
    });
    return { request_id: requestId };
  }

  /** `GET /{phone_number_id}/groups`: the number's groups, oldest first, paged. */
  async list(pn: PhoneNumber, query: unknown): Promise<Record<string, unknown>> {
    const q = parseOr100(ListGroupsQuery, query);
    if (q.after !== undefined && q.before !== undefined) throw new InvalidParameterError('give after or before, not both');
    const limit = q.limit ?? 25;
    const all = await this.store.ids(pn.business_id, pn.phone_number_id);
    let page: typeof all;
    if (q.after !== undefined) {
      const c = parseCursor(q.after);
      page = all.filter((g) => before(c, g)).slice(0, limit);
    } else if (q.before !== undefined) {
      const c = parseCursor(q.before);
      page = all.filter((g) => before(g, c)).slice(-limit);
    } else page = all.slice(0, limit);
    const data = [];
    for (const { id } of page) {
      const g = await this.store.get(pn.business_id, id);
      if (g) data.push({ id: g.id, subject: g.subject, created_at: ts(g.created) });
    }
    const first = page[0];
    const last = page[page.length - 1];
    return {
      data,
      paging: {
        cursors: { ...(first ? { before: cursorOf(first) } : {}), ...(last ? { after: cursorOf(last) } : {}) },
        ...(last && all.some((g) => before(last, g)) ? { next: true } : {}),
        ...(first && all.some((g) => before(g, first)) ? { previous: true } : {}),
      },
    };
  }

  /** `GET /{group_id}?fields=...`: the fields asked for (all of them when none are named). */
  info(g: GroupRecord, fields: unknown): Record<string, unknown> {
    const asked = typeof fields === 'string' && fields.trim() ? fields.split(',').map((f) => f.trim()).filter(Boolean) : [...GROUP_FIELDS];
    const unknown = asked.filter((f) => !(GROUP_FIELDS as readonly string[]).includes(f) && f !== 'id');
    if (unknown.length) throw new InvalidParameterError(`unknown field ${unknown[0]!.slice(0, 40)} (fields: ${GROUP_FIELDS.join(', ')})`);
    const all: Record<string, unknown> = {
      subject: g.subject, description: g.description, join_approval_mode: g.join_approval_mode,
      participants: g.participants.map((wa_id) => ({ wa_id })), total_participant_count: g.participants.length,
      creation_timestamp: ts(g.created), suspended: false,
    };
    return { id: g.id, ...Object.fromEntries(asked.filter((f) => f in all).map((f) => [f, all[f]])) };
  }

  /** `POST /{group_id}`: subject, description, join approval mode. */
  async update(g: GroupRecord, body: unknown): Promise<{ success: true }> {
    const req = parseOr100(UpdateGroupRequest, body);
    if (req.subject === undefined && req.description === undefined && req.join_approval_mode === undefined) throw new InvalidParameterError('give subject, description or join_approval_mode');
    const changed = await this.change(g.business_id, g.id, (cur) => ({
      next: { ...cur, ...(req.subject !== undefined ? { subject: req.subject } : {}), ...(req.description !== undefined ? { description: req.description } : {}), ...(req.join_approval_mode ? { join_approval_mode: req.join_approval_mode } : {}) },
      result: null,
    }));
    if (!changed) throw new InvalidParameterError('unknown group');
    await this.tell(g, 'group_settings_update', {
      type: 'group_settings_update', group_id: g.id,
      ...(req.subject !== undefined ? { group_subject: { text: req.subject, update_successful: true } } : {}),
      ...(req.description !== undefined ? { group_description: { text: req.description, update_successful: true } } : {}),
      ...(req.join_approval_mode ? { join_approval_mode: { mode: req.join_approval_mode, update_successful: true } } : {}),
    });
    return { success: true };
  }

  /** `DELETE /{group_id}`: off the transport, out of the store, then the webhook. */
  async delete(g: GroupRecord): Promise<{ success: true }> {
    await this.transport.deleteGroup(g.id);
    await this.store.delete(g.business_id, g.phone_number_id, g.id);
    this.log.info({ group_id: g.id }, 'group deleted');
    await this.onMembersChanged?.(g.business_id, g.id);
    await this.tell(g, 'group_lifecycle_update', { type: 'group_delete', group_id: g.id });
    return { success: true };
  }

  /** `POST /{group_id}/invite_link`: a new code; the old one is revoked at the transport. */
  async resetInvite(g: GroupRecord): Promise<{ messaging_product: 'whatsapp'; invite_link: string }> {
    const code = newInviteCode();
    const r = await this.change(g.business_id, g.id, (cur) => ({ next: { ...cur, invite_code: code }, result: null }));
    if (!r) throw new InvalidParameterError('unknown group');
    return { messaging_product: 'whatsapp', invite_link: INVITE_PREFIX + code };
  }

  /** `DELETE /{group_id}/invite_link`: the link stops working (the transport is given a fresh code nobody has). */
  async revokeInvite(g: GroupRecord): Promise<{ success: true }> {
    await this.resetInvite(g);
    return { success: true };
  }

  /** `GET /{group_id}/join_requests`. */
  joinRequests(g: GroupRecord): Record<string, unknown> {
    return { data: g.join_requests.map((r) => ({ join_request_id: r.id, wa_id: r.wa_id, creation_timestamp: ts(r.at) })) };
  }

  /** `POST /{group_id}/join_requests`: approves; requests beyond the participant limit fail with 131204. */
  async approve(g: GroupRecord, body: unknown): Promise<Record<string, unknown>> {
    const req = parseOr100(JoinRequestsRequest, body);
    const r = await this.change(g.business_id, g.id, (cur) => {
      const approved: { id: string; wa_id: string }[] = [];
      const failed: { join_request_id: string; errors: Record<string, unknown>[] }[] = [];
      const participants = [...cur.participants];
      let requests = [...cur.join_requests];
      for (const id of req.join_requests) {
        const jr = requests.find((x) => x.id === id);
        if (!jr) failed.push({ join_request_id: id, errors: [webhookError(100, 'Invalid parameter', 'unknown join request')] });
        else if (!participants.includes(jr.wa_id) && participants.length >= MAX_PARTICIPANTS) failed.push({ join_request_id: id, errors: [webhookError(131204, 'Group participant limit reached', `A group has at most ${MAX_PARTICIPANTS} participants.`)] });
        else {
          if (!participants.includes(jr.wa_id)) participants.push(jr.wa_id);
          requests = requests.filter((x) => x.id !== id);
          approved.push({ id, wa_id: jr.wa_id });
        }
      }
      return { next: approved.length ? { ...cur, participants, join_requests: requests } : null, result: { approved, failed, participants } };
    });
    if (!r) throw new InvalidParameterError('unknown group');
    const { approved, failed } = r.result;
    if (approved.length) {
      await this.tell(g, 'group_participants_update', { type: 'group_participants_add', group_id: g.id, reason: 'join_request_approved', added_participants: approved.map((a) => ({ wa_id: a.wa_id })) });
    }
    return { messaging_product: 'whatsapp', approved_join_requests: approved.map((a) => a.id), ...(failed.length ? { failed_join_requests: failed } : {}) };
  }

  /** `DELETE /{group_id}/join_requests`: rejects. */
  async reject(g: GroupRecord, body: unknown): Promise<Record<string, unknown>> {
    const req = parseOr100(JoinRequestsRequest, body);
    const r = await this.change(g.business_id, g.id, (cur) => {
      const hit = cur.join_requests.filter((x) => req.join_requests.includes(x.id));
      return { next: hit.length ? { ...cur, join_requests: cur.join_requests.filter((x) => !req.join_requests.includes(x.id)) } : null, result: hit };
    });
    if (!r) throw new InvalidParameterError('unknown group');
    if (r.result.length) await this.tell(g, 'group_participants_update', { type: 'group_join_request_rejected', group_id: g.id, join_request_ids: r.result.map((x) => x.id), participants: r.result.map((x) => ({ wa_id: x.wa_id })) });
    const unknown = req.join_requests.filter((id) => !r.result.some((x) => x.id === id));
    return { messaging_product: 'whatsapp', rejected_join_requests: r.result.map((x) => x.id), ...(unknown.length ? { failed_join_requests: unknown.map((id) => ({ join_request_id: id, errors: [webhookError(100, 'Invalid parameter', 'unknown join request')] })) } : {}) };
  }

  /** `DELETE /{group_id}/participants`: all named must be participants (131212, nothing changed, otherwise). */
  /**
   * A number (or its whole business) is being deleted: each of its groups goes off the transport (its link
   * with it) and out of the store, without webhooks (nobody is left to tell). The groups' actors find their
   * business gone and delete themselves (src/runtime/group-host.ts). Returns how many groups went.
   */
  async forgetNumber(businessId: string, phoneNumberId: string): Promise<number> {
    const ids = await this.store.ids(businessId, phoneNumberId);
    for (const { id } of ids) {
      await this.transport.deleteGroup(id);
      await this.store.delete(businessId, phoneNumberId, id);
      await this.onMembersChanged?.(businessId, id);
    }
    if (ids.length) this.log.info({ phone_number_id: phoneNumberId, groups: ids.length }, 'groups of a deleted number deleted');
    return ids.length;
  }

  /** The number's groups in which the user is a participant or has a join request (a data-subject export). */
  async membershipsOf(businessId: string, phoneNumberId: string, waId: string): Promise<{ group_id: string; role: 'participant' | 'join_request' }[]> {
    const user = digits(waId);
    const out: { group_id: string; role: 'participant' | 'join_request' }[] = [];
    for (const { id } of await this.store.ids(businessId, phoneNumberId)) {
      const g = await this.store.get(businessId, id);
      if (g?.participants.includes(user)) out.push({ group_id: id, role: 'participant' });
      else if (g?.join_requests.some((r) => r.wa_id === user)) out.push({ group_id: id, role: 'join_request' });
    }
    return out;
  }

  /**
   * A data request erases the user: out of every group of the number (a participant is removed, with the
   * removal webhook as for the API's; a join request is dropped). The groups' actors replace their keys.
   */
  async eraseUser(businessId: string, phoneNumberId: string, waId: string): Promise<number> {
    const user = digits(waId);
    let changed = 0;
    for (const { group_id: id } of await this.membershipsOf(businessId, phoneNumberId, user)) {
      const r = await this.change(businessId, id, (cur) => {
        if (!cur.participants.includes(user) && !cur.join_requests.some((x) => x.wa_id === user)) return { next: null, result: false };
        return { next: { ...cur, participants: cur.participants.filter((p) => p !== user), join_requests: cur.join_requests.filter((x) => x.wa_id !== user) }, result: cur.participants.includes(user) };
      });
      if (!r) continue;
      changed++;
      if (r.result) await this.tell(r.before, 'group_participants_update', { type: 'group_participants_remove', group_id: id, initiated_by: 'business', removed_participants: [{ wa_id: user }] });
    }
    if (changed) this.log.info({ groups: changed, wa_id: maskPhone(user) }, 'user erased from groups');
    return changed;
  }

  async removeParticipants(g: GroupRecord, body: unknown): Promise<{ success: true }> {
    const req = parseOr100(RemoveParticipantsRequest, body);
    const users = [...new Set(req.participants.map((p) => digits(p.user)))];
    const r = await this.change(g.business_id, g.id, (cur) => {
      if (users.some((u) => !cur.participants.includes(u))) return { next: null, result: false };
      return { next: { ...cur, participants: cur.participants.filter((p) => !users.includes(p)) }, result: true };
    });
    if (!r) throw new InvalidParameterError('unknown group');
    if (!r.result) throw new NotGroupParticipantError();
    await this.tell(g, 'group_participants_update', { type: 'group_participants_remove', group_id: g.id, initiated_by: 'business', removed_participants: users.map((wa_id) => ({ wa_id })) });
    return { success: true };
  }

  /** A `group_join` or `group_leave` from the transport. Events for unknown groups, or naming another owner, are dropped. */
  async onTransportEvent(ev: Extract<TransportEvent, { kind: 'group_join' | 'group_leave' }>): Promise<void> {
    const owner = await this.store.owner(ev.group_id);
    const pn = owner ? await this.businesses.phoneNumber(owner.phone_number_id) : null;
    if (!owner || !pn || digits(pn.display_phone_number) !== digits(ev.to) || !/^\d{7,15}$/.test(ev.from)) {
      this.log.warn({ kind: ev.kind, to: maskPhone(ev.to) }, 'group event for an unknown group dropped');
      return;
    }
    const user = ev.from;
    if (ev.kind === 'group_leave') return this.left(owner.business_id, ev.group_id, user);
    const r = await this.change(owner.business_id, ev.group_id, (cur) => {
      if (cur.participants.includes(user)) return { next: null, result: 'member' as const };
      // A link revoked meanwhile (the transport checked the code it had when the user asked).
      if (ev.invite_code !== cur.invite_code) return { next: null, result: 'stale_link' as const };
      if (cur.join_approval_mode === 'approval_required') {
        if (cur.join_requests.some((x) => x.wa_id === user)) return { next: null, result: 'pending' as const };
        return { next: { ...cur, join_requests: [...cur.join_requests, { id: newJoinRequestId(), wa_id: user, at: Date.now() }] }, result: 'requested' as const };
      }
      if (cur.participants.length >= MAX_PARTICIPANTS) return { next: null, result: 'full' as const };
      return { next: { ...cur, participants: [...cur.participants, user] }, result: 'joined' as const };
    });
    if (!r) return;
    const g = r.before;
    this.log.info({ group_id: g.id, from: maskPhone(user), outcome: r.result }, 'group join');
    if (r.result === 'joined') {
      await this.tell(g, 'group_participants_update', { type: 'group_participants_add', group_id: g.id, reason: 'invite_link_joined', added_participants: [{ wa_id: user }] });
    } else if (r.result === 'requested') {
      const jr = (await this.store.get(g.business_id, g.id))?.join_requests.find((x) => x.wa_id === user);
      await this.tell(g, 'group_participants_update', { type: 'group_join_request_created', group_id: g.id, join_request_id: jr?.id, wa_id: user });
    } else if (r.result === 'full') {
      await this.tell(g, 'group_participants_update', {
        type: 'group_participants_add', group_id: g.id, reason: 'invite_link_joined', failed_participants: [{ wa_id: user }],
        errors: [webhookError(131204, 'Group participant limit reached', `A group has at most ${MAX_PARTICIPANTS} participants; the user was not added.`)],
      });
    }
  }

  /** A participant left (or a pending requester withdrew: their request is revoked). */
  private async left(businessId: string, groupId: string, user: string): Promise<void> {
    const r = await this.change(businessId, groupId, (cur) => {
      if (cur.participants.includes(user)) return { next: { ...cur, participants: cur.participants.filter((p) => p !== user) }, result: 'left' as const };
      if (cur.join_requests.some((x) => x.wa_id === user)) return { next: { ...cur, join_requests: cur.join_requests.filter((x) => x.wa_id !== user) }, result: 'revoked' as const };
      return { next: null, result: 'none' as const };
    });
    if (!r || r.result === 'none') return;
    const g = r.before;
    this.log.info({ group_id: g.id, from: maskPhone(user), outcome: r.result }, 'group leave');
    if (r.result === 'left') {
      await this.tell(g, 'group_participants_update', { type: 'group_participants_remove', group_id: g.id, initiated_by: 'participant', removed_participants: [{ wa_id: user }] });
    } else {
      await this.tell(g, 'group_participants_update', { type: 'group_join_request_revoked', group_id: g.id, wa_id: user });
    }
  }
}
