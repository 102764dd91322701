import type { Command } from '../../../machines/commands.ts';
import type { ConversationEvent } from '../../../machines/conversation.ts';
import { metrics } from '../../ops/metrics.ts';
import { open } from '../../store/sealer.ts';
import { identityChangedValue, inboundMessageValue, statusValue, type ChangeValue } from '../../webhook/envelope.ts';
import type { MailboxEvent } from '../mailbox.ts';
import { messageTrace, noteState, traceFailure, tracedSend } from '../trace-context.ts';
import { TransportUnavailableError, type OutgoingDeviceMessage } from '../transport-client.ts';
import { outgoing, readCiphertexts } from './device-envelopes.ts';
import type { InboundRow, Loaded, StatusCommand } from './loaded.ts';
import type { HostParts, StatusUpdate } from './parts.ts';

/** Executes committed effects; returns the result events. Effects are idempotent: a replay after a crash is safe. */
export async function executeEffects(h: HostParts, c: Loaded, effects: Command[]): Promise<ConversationEvent[]> {
  noteState(c);
  if (!effects.length) return [];
  const results: ConversationEvent[] = [];
  const now = Date.now();
  const sends: OutgoingDeviceMessage[] = [];
  const statuses: StatusUpdate[] = [];
  const values: ChangeValue[] = [];
  const opaque = new Map<string, string | undefined>();
  const kinds = new Map<string, string>();
  // The traces of the messages the webhook values report on (tracing on: trace-context.ts).
  const traces = new Set<string | undefined>();
  const messageTraces = new Map<string, string | undefined>();
  for (const cmd of effects) {
    if (cmd.type === 'transport.send') {
      const fresh = c.ciphertexts.get(cmd.wamid);
      const cts = fresh ?? (await readCiphertexts(h, c, cmd.wamid))?.cts;
      if (!cts) continue;
      // A ciphertext made in an earlier drain is going out again: a retransmission.
      if (!fresh) {
        metrics.retransmissions.inc();
        h.log.debug({ conversation_id: c.id, wamid: cmd.wamid }, 'retransmission');
      }
      metrics.sent.inc();
      const message = outgoing(c, cmd.wamid, cts);
      metrics.deviceEnvelopes.inc(message.envelopes.length);
      sends.push(message);
    } else if (cmd.type === 'webhook.status') {
      if (!opaque.has(cmd.wamid)) {
        const { bo, kind, acceptedAt, tp } = await readOpaque(h, c, cmd.wamid, (cmd as StatusCommand).row);
        messageTraces.set(cmd.wamid, messageTrace(cmd.wamid, tp));
        traces.add(messageTraces.get(cmd.wamid));
        opaque.set(cmd.wamid, bo);
        kinds.set(cmd.wamid, kind);
        if (cmd.status === 'delivered' && acceptedAt) metrics.acceptToDelivered.observe(Math.max(0, cmd.at - acceptedAt) / 1000);
      }
      metrics.statuses.inc({ status: cmd.status });
      if (cmd.status === 'failed') {
        metrics.failures.inc({ code: String(cmd.errorCode ?? 0) });
        traceFailure(cmd.wamid, messageTraces.get(cmd.wamid), cmd.errorCode);
        h.log.info({ conversation_id: c.id, wamid: cmd.wamid, code: cmd.errorCode ?? 0 }, 'message failed');
      } else h.log.debug({ conversation_id: c.id, wamid: cmd.wamid, status: cmd.status }, 'message status');
      const bo = opaque.get(cmd.wamid);
      statuses.push({
        wamid: cmd.wamid, status: cmd.status, at: cmd.at, recipientId: c.meta.waId,
        ...(bo ? { bizOpaqueCallbackData: bo } : {}), ...(cmd.errorCode ? { errorCode: cmd.errorCode } : {}),
      });
    } else if (cmd.type === 'timer.schedule') {
      c.timerOps = [...c.timerOps.filter((o) => !(o.type === 'timer.schedule' && o.id === cmd.id)), cmd];
    } else if (cmd.type === 'webhook.message') {
      const row = c.inbound.get(cmd.id) ?? (await readInbound(h, c, cmd.id));
      if (row) values.push(inboundMessageValue(c.meta.waId, cmd.id, row));
      traces.add(messageTrace(cmd.id));
    } else if (cmd.type === 'group.key_sent') {
      await h.sinks.group?.(c.meta.businessId, cmd.group, { type: 'KEY_SENT', at: now, member: c.id, devices: cmd.devices, dist: cmd.dist });
    } else if (cmd.type === 'group.key_held') {
      await h.sinks.group?.(c.meta.businessId, cmd.group, { type: 'KEY_HELD', at: now, member: c.id, device: cmd.device, dist: cmd.dist });
    } else if (cmd.type === 'webhook.identity_changed') {
      values.push(identityChangedValue(c.meta.waId, c.crypto.remoteIdentityHash() ?? '', cmd.at, c.id));
    } else if (cmd.type === 'timer.cancel') {
      // A timer scheduled earlier in this drain was never added: dropping the schedule is the cancel.
      const scheduledHere = c.timerOps.some((o) => o.type === 'timer.schedule' && o.id === cmd.id);
      c.timerOps = c.timerOps.filter((o) => o.id !== cmd.id);
      if (!scheduledHere) c.timerOps.push(cmd);
    }
  }
  if (statuses.length) {
    values.push(statusValue(statuses));
    const fields: Record<string, number> = {};
    for (const st of statuses) {
      const f = st.status === 'failed' ? `failed:${st.errorCode ?? 0}` : st.status;
      fields[f] = (fields[f] ?? 0) + 1;
      if (st.status === 'delivered') {
        const kind = kinds.get(st.wamid) ?? 'service';
        const f2 = kind === 'template' ? 'billable:template' : 'free:service';
        fields[f2] = (fields[f2] ?? 0) + 1;
      }
    }
    await h.sinks.count(c.meta.businessId, fields);
  }
  const inboundCount = effects.filter((e) => e.type === 'webhook.message').length;
  if (inboundCount) {
    metrics.inbound.inc(inboundCount);
    await h.sinks.count(c.meta.businessId, { inbound: inboundCount });
  }
  if (values.length) await h.sinks.webhook(c.meta.businessId, c.meta.phoneNumberId, values, [...traces].filter((t) => t !== undefined));
  if (sends.length) {
    try {
      const outcomes = await tracedSend(sends, (sendTraces) => h.transport.send(sends, sendTraces));
      for (const r of outcomes) {
        const wamid = r.id;
        if (r.outcome === 'accepted') results.push({ type: 'TRANSPORT_ACCEPTED', wamid, at: now });
        else if (r.outcome === 'unknown_recipient') results.push({ type: 'TRANSPORT_REJECTED', wamid, at: now, reason: 'unknown_recipient' });
        else if (r.outcome === 'refused') results.push({ type: 'TRANSPORT_REJECTED', wamid, at: now, reason: 'refused', code: r.code });
        else {
          // The user's devices are not the ones the message was encrypted for (409) or a session is stale (410).
          metrics.deviceMismatches.inc({ kind: r.outcome });
          h.log.info({ conversation_id: c.id, wamid, ...(r.outcome === 'stale' ? { stale: r.stale } : { missing: r.missing, extra: r.extra }) }, 'devices changed');
          results.push({
            type: 'TRANSPORT_REJECTED', wamid, at: now, reason: 'devices',
            ...(r.outcome === 'stale' ? { stale: r.stale } : { missing: r.missing, extra: r.extra }),
          });
        }
      }
    } catch (e) {
      if (!(e instanceof TransportUnavailableError)) throw e;
      for (const s of sends) results.push({ type: 'TRANSPORT_REJECTED', wamid: s.id, at: now, reason: 'unavailable' });
    }
  }
  // (The outbox is cleared when the drain releases the lease, once every effect of it has been applied.)
  return results;
}

/**
 * Applies the drain's netted timer commands to the timers queue, then clears the outbox that kept them
 * (a crash before this replays them from the outbox; schedules and cancels are idempotent by job id).
 */
export async function applyTimers(h: HostParts, c: Loaded): Promise<void> {
  if (!c.timerOps.length) return;
  for (const cmd of c.timerOps) {
    if (cmd.type === 'timer.schedule') {
      const event: MailboxEvent = cmd.event === 'RETRANSMIT_DUE'
        ? { type: 'RETRANSMIT_DUE', at: cmd.at, timerId: cmd.id }
        : { type: 'BUNDLE_RETRY_DUE', at: cmd.at };
      await h.sinks.timer(c.id, cmd.id, cmd.at, event);
    } else if (cmd.type === 'timer.cancel') {
      await h.sinks.cancelTimer(c.id, cmd.id);
    }
  }
  c.timerOps = [];
  c.outbox = [];
}

/** An inbound message stored in an earlier drain (its webhook effect replayed from the outbox). */
async function readInbound(h: HostParts, c: Loaded, id: string): Promise<InboundRow | null> {
  const rowKey = h.keys.message(c.id, id);
  const sealed = await c.redis.hget(rowKey, 'c');
  return sealed ? (JSON.parse(open(c.dk, sealed, `${rowKey}:c`).toString()) as InboundRow) : null;
}

/** What a status reports from its message row: the callback data, the kind (billing) and the accept time. */
async function readOpaque(h: HostParts, c: Loaded, wamid: string, kept?: StatusCommand['row']): Promise<{ bo: string | undefined; kind: string; acceptedAt: number | null; tp: string | null }> {
  const rowKey = h.keys.message(c.id, wamid);
  // `tp`: the trace context the message was accepted in (kept in its row while tracing is on).
  const known = c.rowInfo.get(wamid);
  const [sealed, kind, at, tp] = kept ? [kept.bo ?? null, kept.k ?? null, kept.at ?? null, null]
    : known ? [known.bo, known.k, known.at, known.tp] : await c.redis.hmget(rowKey, 'bo', 'k', 'at', 'tp');
  return { bo: sealed ? open(c.dk, sealed, `${rowKey}:bo`).toString() : undefined, kind: kind ?? 'service', acceptedAt: at ? Number(at) : null, tp: tp ?? null };
}
