import { randomUUID } from 'node:crypto';
import { SenderKeyMessage } from '@signalapp/libsignal-client';
import type { Redis } from 'ioredis';
import type { AnyMachineSnapshot } from 'xstate';
import type { GroupCommand, GroupContext, GroupEvent } from '../../machines/group.ts';
import { maskNumbers } from '../log.ts';
import { metrics } from '../ops/metrics.ts';
import { classifySignalError } from '../signal/classify.ts';
import { decodeContent, encodeContent } from '../signal/content.ts';
import type { GroupKeys } from '../signal/group-keys.ts';
import type { GroupRecord } from '../store/groups.ts';
import { open, seal } from '../store/sealer.ts';
import { inboundMessageValue, statusValue, type ChangeValue, type StatusInput } from '../webhook/envelope.ts';
import type { GroupHostDeps } from './group-host.ts';
import { TransportUnavailableError, UnknownGroupError } from './transport-client.ts';

/** A group actor as a drain holds it. */
export interface GroupLoaded {
  redis: Redis;
  businessId: string;
  groupId: string;
  token: string;
  dk: Buffer;
  version: number;
  snapshot: AnyMachineSnapshot;
  senderKeys: GroupKeys;
  /** Effects committed and not yet confirmed applied. */
  outbox: GroupCommand[];
  /** The group's record (null: deleted). */
  record: GroupRecord | null;
  /** The business number's display number: the sender of the group's messages. */
  owner: string | null;
  phoneNumberId: string | null;
  /** Members: conversation id → wa_id. */
  members: Map<string, string>;
  /** Members' ciphertexts of this drain, by id. */
  envelopes: Map<string, string>;
  /** Members' sealed sender keys of this drain, by member. */
  memberKeys: Map<string, string>;
  /** Row writes of the step (null: delete the key), committed with it. */
  rowOps: Map<string, Record<string, string> | null>;
  trace: string[];
  /** The seq of the group's last trace line. */
  traceSeq: number;
  retentionMs: number;
}

const ctxOf = (c: GroupLoaded) => c.snapshot.context as GroupContext;
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

function setRow(c: GroupLoaded, key: string, fields: Record<string, string>): void {
  const had = c.rowOps.get(key);
  c.rowOps.set(key, { ...(had ?? {}), ...fields });
}

/** Makes each member's copy of the current key's distribution message (sealed, for the member's conversation). */
async function share(d: GroupHostDeps, c: GroupLoaded, members: string[], dist: string, ifMissing = false): Promise<void> {
  for (const member of members) {
    const key = d.keys.groupMemberKey(c.businessId, c.groupId, member);
    if (ifMissing && !c.rowOps.has(key)) {
      const kept = await c.redis.hget(key, 'd');
      if (kept && (JSON.parse(open(c.dk, kept, `${key}:d`).toString()) as { d: string }).d === dist) continue;
    }
    const skdm = await c.senderKeys.distribution(c.owner!, dist);
    setRow(c, key, { d: seal(c.dk, JSON.stringify({ d: dist, s: skdm }), `${key}:d`) });
  }
}

/**
 * Runs a command that stays inside the drain (cryptography, the group's own rows). Returns its result event,
 * null for none, or undefined when the command is an effect (it leaves after the commit).
 */
export async function runLocal(d: GroupHostDeps, c: GroupLoaded, cmd: GroupCommand, at: number): Promise<GroupEvent | null | undefined> {
  switch (cmd.type) {
    case 'key.rotate': {
      if (!c.owner) return null;
      const dist = randomUUID();
      await c.senderKeys.rotate(c.owner, dist);
      await share(d, c, cmd.members, dist);
      // Members who went take their copies with them.
      for (const gone of ctxOf(c).members.filter((m) => !cmd.members.includes(m))) c.rowOps.set(d.keys.groupMemberKey(c.businessId, c.groupId, gone), null);
      d.log.info({ group_id: c.groupId, members: cmd.members.length }, 'group sender key replaced');
      return { type: 'KEY_ROTATED', at, dist };
    }
    case 'key.share': {
      const dist = ctxOf(c).dist;
      if (c.owner && dist) await share(d, c, cmd.members, dist, !!cmd.ifMissing);
      return null;
    }
    case 'message.encrypt': {
      const dist = ctxOf(c).dist;
      const key = d.keys.groupMessage(c.businessId, c.groupId, cmd.wamid);
      const sealed = await c.redis.hget(key, 'c');
      if (!sealed || !dist || !c.owner) return { type: 'ENCRYPT_FAILED', wamid: cmd.wamid, at, reason: 'message_missing' };
      const body = JSON.parse(open(c.dk, sealed, `${key}:c`).toString()) as { message: Record<string, unknown> & { type: string }; ts: string };
      const ct = await c.senderKeys.encrypt(c.owner, dist, encodeContent({
        v: 1, kind: 'message', id: cmd.wamid, seq: cmd.seq, from: c.owner, timestamp: body.ts, message: body.message, group_id: c.groupId,
      }) as Uint8Array<ArrayBuffer>);
      setRow(c, key, { ct: b64(ct) });
      return { type: 'ENCRYPTED', wamid: cmd.wamid, at };
    }
    case 'envelope.decrypt':
      return decryptEnvelope(d, c, cmd.id, cmd.member, at);
    case 'member_key.store': {
      const sealed = c.memberKeys.get(cmd.member);
      if (!sealed) return null;
      try {
        const skdm = open(c.dk, sealed, `member-key:${c.groupId}:${cmd.member}`).toString();
        const dist = await c.senderKeys.accept(cmd.member, skdm);
        if (dist !== cmd.dist) d.log.warn({ group_id: c.groupId }, 'member sender key names another distribution id');
      } catch (e) {
        d.log.warn({ group_id: c.groupId, failure: classifySignalError(e) }, 'member sender key refused');
      }
      return null;
    }
    default:
      return undefined;
  }
}

/** A member's message: decrypted with the member's sender key, held until it arrives, stored sealed for its webhook. */
async function decryptEnvelope(d: GroupHostDeps, c: GroupLoaded, id: string, member: string, at: number): Promise<GroupEvent> {
  const rowKey = d.keys.groupMessage(c.businessId, c.groupId, id);
  const body = c.envelopes.get(id) ?? (await c.redis.hget(rowKey, 'e'));
  const waId = c.members.get(member);
  if (!body || !waId) return { type: 'DECRYPT_FAILED', id, at, reason: body ? 'not_a_member' : 'envelope_missing' };
  const bytes = new Uint8Array(Buffer.from(body, 'base64'));
  let dist: string;
  try {
    dist = SenderKeyMessage.deserialize(bytes).distributionId();
  } catch {
    return { type: 'DECRYPT_FAILED', id, at, reason: 'malformed' };
  }
  if (!c.senderKeys.has(member, dist)) {
    // The member's key comes over the member's conversation, maybe later than this: kept (ciphertext) until then.
    setRow(c, rowKey, { e: body });
    return { type: 'MESSAGE_HELD', id, at, member };
  }
  try {
    const content = decodeContent(await c.senderKeys.decrypt(member, bytes));
    if (content.kind !== 'message' || content.group_id !== c.groupId || content.from !== waId) return { type: 'DECRYPT_FAILED', id, at, reason: 'mismatch' };
    const row = { message: content.message, timestamp: content.timestamp, from: waId, ...(content.profile_name ? { profileName: content.profile_name } : {}) };
    setRow(c, rowKey, { i: seal(c.dk, JSON.stringify(row), `${rowKey}:i`) });
    return { type: 'MESSAGE_RECEIVED', id, at };
  } catch (e) {
    return { type: 'DECRYPT_FAILED', id, at, reason: classifySignalError(e) };
  }
}

/** Executes committed effects (idempotent: a replay after a crash is safe); returns the result events. */
export async function executeGroupEffects(d: GroupHostDeps, c: GroupLoaded, effects: GroupCommand[]): Promise<GroupEvent[]> {
  const results: GroupEvent[] = [];
  const now = Date.now();
  const statuses: StatusInput[] = [];
  const values: ChangeValue[] = [];
  const counts: Record<string, number> = {};
  const relays: { id: string; body: string }[] = [];
  const forget: string[] = [];
  for (const cmd of effects) {
    if (cmd.type === 'key.distribute') {
      if (!c.phoneNumberId) continue;
      for (const member of cmd.members) {
        const waId = c.members.get(member);
        if (!waId) continue;
        await d.ensure(member, c.businessId, c.phoneNumberId, waId);
        await d.mailboxes.post(member, [{ type: 'SENDER_KEY', group: c.groupId, dist: cmd.dist, at: now }], c.retentionMs + 86_400_000);
      }
    } else if (cmd.type === 'transport.relay') {
      const ct = await c.redis.hget(d.keys.groupMessage(c.businessId, c.groupId, cmd.wamid), 'ct');
      if (ct) relays.push({ id: cmd.wamid, body: ct });
    } else if (cmd.type === 'webhook.status') {
      const rowKey = d.keys.groupMessage(c.businessId, c.groupId, cmd.wamid);
      const [bo, kind] = await c.redis.hmget(rowKey, 'bo', 'k');
      statuses.push({
        wamid: cmd.wamid, status: cmd.status, at: cmd.at, recipientId: c.groupId, recipientType: 'group',
        ...(bo ? { bizOpaqueCallbackData: open(c.dk, bo, `${rowKey}:bo`).toString() } : {}), ...(cmd.errorCode ? { errorCode: cmd.errorCode } : {}),
      });
      const f = cmd.status === 'failed' ? `failed:${cmd.errorCode ?? 0}` : cmd.status;
      counts[f] = (counts[f] ?? 0) + 1;
      if (cmd.status === 'delivered') {
        const billing = kind === 'template' ? 'billable:template' : 'free:service';
        counts[billing] = (counts[billing] ?? 0) + 1;
      }
      metrics.statuses.inc({ status: cmd.status });
    } else if (cmd.type === 'webhook.message') {
      const rowKey = d.keys.groupMessage(c.businessId, c.groupId, cmd.id);
      const sealed = await c.redis.hget(rowKey, 'i');
      if (sealed) {
        const row = JSON.parse(open(c.dk, sealed, `${rowKey}:i`).toString()) as { message: Record<string, unknown> & { type: string }; timestamp: string; from: string; profileName?: string };
        const v = inboundMessageValue(row.from, cmd.id, row);
        values.push({ ...v, messages: v.messages!.map((m) => ({ ...m, group_id: c.groupId })) });
        counts.inbound = (counts.inbound ?? 0) + 1;
      }
      // Forwarded: the router keeps nothing of it (the webhook outbox holds it, sealed, until delivered).
      forget.push(rowKey);
    } else if (cmd.type === 'message.forget' || cmd.type === 'envelope.forget') {
      forget.push(d.keys.groupMessage(c.businessId, c.groupId, cmd.type === 'message.forget' ? cmd.wamid : cmd.id));
    } else if (cmd.type === 'timer.schedule') {
      await d.queue.add('timer', { b: c.businessId, g: c.groupId, timer: { id: cmd.id, at: cmd.at } }, {
        jobId: timerJobId(c.groupId, cmd.id), delay: Math.max(0, cmd.at - Date.now()), removeOnComplete: true, removeOnFail: 1000, attempts: 10, backoff: { type: 'exponential', delay: 500 },
      });
    } else if (cmd.type === 'timer.cancel') {
      await d.queue.remove(timerJobId(c.groupId, cmd.id)).catch(() => 0);
    } else if (cmd.type === 'group.delete') {
      await deleteGroupActor(d, c);
    }
  }
  if (statuses.length) values.push(statusValue(statuses));
  if (values.length && c.phoneNumberId) await d.webhook(c.businessId, c.phoneNumberId, values);
  if (Object.keys(counts).length) await d.count(c.businessId, counts);
  if (relays.length && c.owner) {
    try {
      const devices = await d.transport.relayGroup(c.groupId, relays.map((r) => ({ id: r.id, from: c.owner!, type: 7, body: r.body })));
      // What the transport says each member has: a device it no longer knows (unlinked) owes nothing.
      const convOf = new Map([...c.members].map(([conv, wa]) => [wa, conv]));
      const present = Object.fromEntries(Object.entries(devices).flatMap(([wa, list]) => (convOf.has(wa) ? [[convOf.get(wa)!, [...list].sort((a, b) => a - b)]] : [])));
      for (const r of relays) results.push({ type: 'RELAYED', wamid: r.id, at: now, ...(Object.keys(present).length ? { present } : {}) });
      metrics.groupRelays.inc(relays.length);
    } catch (e) {
      const reason = e instanceof UnknownGroupError ? 'unknown_group' : 'unavailable';
      if (!(e instanceof TransportUnavailableError) && !(e instanceof UnknownGroupError)) d.log.warn({ group_id: c.groupId, err: maskNumbers((e as Error).message) }, 'group relay failed');
      for (const r of relays) results.push({ type: 'RELAY_FAILED', wamid: r.id, at: now, reason });
    }
  }
  if (forget.length) await c.redis.del(...forget);
  return results;
}

const timerJobId = (groupId: string, timerId: string) => `gt-${groupId}-${timerId.replace(/[^A-Za-z0-9_-]/g, '-')}`;

/** The group is gone: its actor, mailbox, trace, message rows and members' key copies go too. */
async function deleteGroupActor(d: GroupHostDeps, c: GroupLoaded): Promise<void> {
  const ctx = ctxOf(c);
  const k = d.keys;
  await c.redis.del(
    k.groupActor(c.businessId, c.groupId), k.groupMailbox(c.businessId, c.groupId), k.groupTrace(c.businessId, c.groupId),
    ...ctx.messages.map((m) => k.groupMessage(c.businessId, c.groupId, m.wamid)),
    ...ctx.held.map((h) => k.groupMessage(c.businessId, c.groupId, h.id)),
    ...[...new Set([...ctx.members, ...c.members.keys()])].map((m) => k.groupMemberKey(c.businessId, c.groupId, m)),
  );
  d.log.info({ group_id: c.groupId }, 'group actor deleted');
}
