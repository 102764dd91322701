import type { FastifyInstance } from 'fastify';
import { maskPhone } from '../log.ts';
import { unixSeconds } from './events.ts';
import { maskNumbers } from './mask.ts';
import { InviteCodeInUseError, inviteCodeOf, type Group } from './groups.ts';
import {
  HttpError,
  groupMessageBatchSchema,
  groupMessageSchema,
  groupParamsSchema,
  groupSchema,
  groupTextSchema,
  joinSchema,
  deviceQuerySchema,
  parseOr400,
} from './schemas.ts';
import type { PlatformState } from './state.ts';

function groupOf(state: PlatformState, params: unknown): Group {
  const group = state.groups.get(parseOr400(groupParamsSchema, params).group_id);
  if (!group) throw new HttpError(404, 'unknown_group');
  return group;
}

/** The registered account of the path's wa_id (404 `unknown_device`). */
function waIdOf(state: PlatformState, params: unknown): string {
  const waId = String((params as { wa_id?: string }).wa_id ?? '').replace(/^\+/, '');
  if (!state.account(waId)) throw new HttpError(404, 'unknown_device');
  return waId;
}

/** The path's wa_id, which must be on the group's registered list (403 `not_a_member`). */
function memberOf(state: PlatformState, params: unknown, group: Group): string {
  const waId = waIdOf(state, params);
  if (!group.members.includes(waId)) throw new HttpError(403, 'not_a_member');
  return waId;
}

/**
 * Groups on the transport (docs/platform.md, "Groups on the transport"): the router registers each group's
 * members and posts one SenderKeyMessage per group message, which the transport relays to every device of
 * every member; users join by link, write to the group and leave through `/sim`. The transport sees member
 * lists and ciphertext, never content.
 */
export function groupApi(state: PlatformState) {
  return async (app: FastifyInstance): Promise<void> => {
    // The router, authoritative for membership, registers or replaces a group. 409 when another group holds the code.
    app.put('/v1/groups/:group_id', async (req, reply) => {
      const { group_id } = parseOr400(groupParamsSchema, req.params);
      const body = parseOr400(groupSchema, req.body);
      if (body.members.includes(body.owner)) throw new HttpError(400, 'members: the owner is not a member of its own group');
      try {
        state.groups.put({ id: group_id, owner: body.owner, inviteCode: body.invite_code, joinApproval: body.join_approval, members: body.members });
      } catch (err) {
        if (err instanceof InviteCodeInUseError) return reply.code(409).send({ error: err.code });
        throw err;
      }
      state.log.info({ group: maskNumbers(group_id), owner: maskPhone(body.owner), members: body.members.length }, 'group registered');
      return { group_id };
    });

    app.get('/v1/groups/:group_id', async (req) => {
      const g = groupOf(state, req.params);
      return { group_id: g.id, owner: g.owner, invite_code: g.inviteCode, join_approval: g.joinApproval, members: g.members };
    });

    app.delete('/v1/groups/:group_id', async (req) => {
      const g = groupOf(state, req.params);
      state.groups.delete(g.id);
      return { success: true };
    });

    /*
     * The business's group message: `{"id","from","type":7,"body"}` or `{"messages":[...]}` (all for this group),
     * 202 `{"accepted":n,"devices":{"<wa_id>":[device ids]}}` (the devices of each member it copies to). Each
     * message goes, the same bytes, to every current device of every member, each copy across the faulty
     * transport on its own. 404 unknown_group, 403 not_owner (nothing relayed).
     */
    app.post('/v1/groups/:group_id/messages', async (req, reply) => {
      if (state.faults.isDown()) throw new HttpError(503, 'platform_down');
      const group = groupOf(state, req.params);
      const body = req.body as Record<string, unknown> | undefined;
      const isBatch = body !== null && typeof body === 'object' && 'messages' in body;
      const messages = isBatch ? parseOr400(groupMessageBatchSchema, body).messages : [parseOr400(groupMessageSchema, body)];
      if (messages.some((m) => m.from !== group.owner)) return reply.code(403).send({ error: 'not_owner' });
      for (const m of messages) state.toGroupDevices(group, { id: m.id, from: m.from, body: new Uint8Array(Buffer.from(m.body, 'base64')) });
      return reply.code(202).send({ accepted: messages.length, devices: state.groupDevices(group) });
    });

    // A user opens an invite link: the transport tells the owner (`group_join`); the router decides and PUTs.
    app.post('/sim/devices/:wa_id/groups/join', async (req) => {
      const waId = waIdOf(state, req.params);
      const code = inviteCodeOf(parseOr400(joinSchema, req.body).invite_link);
      if (code === null) throw new HttpError(400, 'invite_link: not a https://chat.whatsapp.com/<code> link');
      const group = state.groups.byInviteCode(code);
      if (!group) throw new HttpError(404, 'unknown_invite_link');
      const pending = group.joinApproval === 'approval_required';
      state.queue.push({ kind: 'group_join', group_id: group.id, from: waId, to: group.owner, invite_code: code, pending, timestamp: unixSeconds(state.clock()) });
      return pending ? { group_id: group.id, pending: true } : { group_id: group.id };
    });

    // The user's phone writes to a group (device 1): its sender key first (pairwise), then one SenderKeyMessage.
    app.post('/sim/devices/:wa_id/groups/:group_id/messages', async (req) => {
      const group = groupOf(state, req.params);
      const waId = memberOf(state, req.params, group);
      const { text } = parseOr400(groupTextSchema, req.body);
      const id = await state.device(waId)!.sendGroup({ groupId: group.id, owner: group.owner, peers: state.groupPeers(group, waId) }, text);
      return { id };
    });

    // The user leaves: every device of theirs stops showing the group; the owner is told (`group_leave`).
    app.post('/sim/devices/:wa_id/groups/:group_id/leave', async (req) => {
      const group = groupOf(state, req.params);
      const waId = memberOf(state, req.params, group);
      await Promise.all(state.account(waId)!.devices().map((d) => d.leaveGroup(group.id)));
      state.queue.push({ kind: 'group_leave', group_id: group.id, from: waId, to: group.owner, timestamp: unixSeconds(state.clock()) });
      return { success: true };
    });

    // `?device=N` (default 1): the groups that device holds sender keys for, and whether the user left them.
    app.get('/sim/devices/:wa_id/groups', async (req) => {
      const { device } = parseOr400(deviceQuerySchema, req.query);
      const d = state.account(waIdOf(state, req.params))!.view(device);
      if (!d) throw new HttpError(404, 'unknown_device');
      return { groups: d.groupsView() };
    });
  };
}
