import type { Redis } from 'ioredis';
import { initialTransition, type AnyMachineSnapshot } from 'xstate';
import type { Command } from '../../../machines/commands.ts';
import { conversationMachine, type ConversationInput } from '../../../machines/conversation.ts';
import { DeviceSessions } from '../../signal/device-sessions.ts';
import { decodeDeviceSessions } from '../../signal/device-sessions-codec.ts';
import { open, openBinary } from '../../store/sealer.ts';
import { decodeSnapshot } from '../snapshot-codec.ts';
import type { Loaded, Meta } from './loaded.ts';
import type { HostParts } from './parts.ts';
import type { WarmState } from './warm.ts';

/** A conversation's keys as read at the start of a drain. */
export interface StoredState {
  metaRow: Record<string, string>;
  snapRow: Buffer | Record<string, string> | null;
  /** undefined when not read with the rest (a warm state was at hand): read later if it is not used. */
  sess: Buffer | null | undefined;
  /** The outbox's commands (none when the key is absent). */
  outbox: Command[];
}

/** The machine's input for a conversation: the host's timings and the business's retention. */
export function inputOf(h: HostParts, conversationId: string, retentionMs: number): ConversationInput {
  return {
    conversationId,
    retryBaseMs: h.opts.bundleRetryMs,
    retransmitBaseMs: h.opts.retransmitBaseMs,
    retransmitMaxMs: h.opts.retransmitMaxMs,
    ttlMs: retentionMs,
    retentionMs,
  };
}

/** The business's retention (its own setting, else the default; never more than 30 days). */
async function retentionOf(h: HostParts, businessId: string): Promise<number> {
  return h.businesses.retentionMs(businessId, h.opts.retentionMs);
}

/**
 * Reads a conversation's stored state. Issued together with the lease (see drainAndCheck in drain.ts): every
 * command here must go out before the first await, so the reads share the lease's round trip.
 */
export async function readState(h: HostParts, redis: Redis, id: string, withSession = true): Promise<StoredState> {
  const [metaRow, snapRow, sess, outbox] = await Promise.all([
    redis.hgetall(h.keys.meta(id)),
    readStoredSnapshot(redis, h.keys.snapshot(id)),
    withSession ? redis.getBuffer(h.keys.session(id)) : undefined,
    readOutbox(redis, h.keys.outbox(id)),
  ]);
  return { metaRow, snapRow, sess, outbox };
}

/**
 * The outbox: a string holding the commands as a JSON array, or the list of JSON commands versions before
 * 2026-12-03 kept (a commit's SET or a release's DEL replaces it).
 */
async function readOutbox(redis: Redis, key: string): Promise<Command[]> {
  try {
    const raw = await redis.get(key);
    return raw ? (JSON.parse(raw) as Command[]) : [];
  } catch (e) {
    if (!String((e as Error).message).startsWith('WRONGTYPE')) throw e;
    return (await redis.lrange(key, 0, -1)).map((o) => JSON.parse(o) as Command);
  }
}

/**
 * The stored snapshot: the sealed, deflated bytes of a string key (see snapshot-codec.ts), or the fields of
 * the hash it was before (v, s, t); null when there is none.
 */
async function readStoredSnapshot(redis: Redis, key: string): Promise<Buffer | Record<string, string> | null> {
  try {
    return await redis.getBuffer(key);
  } catch (e) {
    if (!String((e as Error).message).startsWith('WRONGTYPE')) throw e;
    const row = await redis.hgetall(key);
    return row.s ? row : null;
  }
}

/**
 * Hydrates a conversation from its stored state; null when there is no such conversation (any more). `warm`,
 * this process's state of the conversation after its last drain here, stands in for opening the snapshot
 * and the session when the stored snapshot is exactly the one it holds (see warm.ts).
 */
export async function load(h: HostParts, redis: Redis, id: string, state: StoredState, warm?: WarmState): Promise<Loaded | null> {
  const { metaRow, snapRow, outbox } = state;
  if (!metaRow.business_id || !metaRow.phone_number_id || !metaRow.wa) return null;
  const dk = await h.dataKeys.get(metaRow.business_id);
  const pn = await h.businesses.phoneNumber(metaRow.phone_number_id);
  if (!pn) return null;
  const identity = await h.businesses.identity(metaRow.phone_number_id);
  const version = metaRow.v ?? (snapRow && !Buffer.isBuffer(snapRow) ? snapRow.v : undefined) ?? '0';
  const hit = warm !== undefined && Buffer.isBuffer(snapRow) && warm.stored.equals(snapRow) && warm.version === version
    && warm.waSealed === metaRow.wa && warm.identity === identity && warm.display === pn.display_phone_number;
  const waId = hit ? warm.waId : open(dk, metaRow.wa, `${h.keys.meta(id)}:wa`).toString();
  const meta: Meta = { businessId: metaRow.business_id, phoneNumberId: metaRow.phone_number_id, waId, display: pn.display_phone_number };
  const retentionMs = await retentionOf(h, meta.businessId);
  let snapshot: AnyMachineSnapshot;
  let crypto: DeviceSessions;
  if (hit) {
    snapshot = warm.snapshot;
    crypto = warm.crypto;
  } else {
    if (snapRow) {
      const aad = `${h.keys.snapshot(id)}:s`;
      const persisted = Buffer.isBuffer(snapRow) ? decodeSnapshot(dk, id, snapRow, aad) : JSON.parse(open(dk, snapRow.s!, aad).toString());
      snapshot = conversationMachine.resolveState(persisted as never) as AnyMachineSnapshot;
    } else {
      [snapshot] = initialTransition(conversationMachine, inputOf(h, id, retentionMs)) as unknown as [AnyMachineSnapshot];
    }
    // Not read with the lease when a warm state was expected to serve: read now, still under the lease.
    const sess = state.sess === undefined ? await redis.getBuffer(h.keys.session(id)) : state.sess;
    // The stored Signal state of every device of the user (the single-device form written before reads as device 1).
    crypto = new DeviceSessions(identity, meta.display, waId, sess ? decodeDeviceSessions(openBinary(dk, sess, `${h.keys.session(id)}:s`)) : undefined);
  }
  return {
    id,
    redis,
    meta,
    dk,
    snapshot,
    version,
    retentionMs,
    deleted: false,
    ttlRenewedAt: Number(metaRow.x ?? 0),
    traceSeq: Number(metaRow.t ?? (snapRow && !Buffer.isBuffer(snapRow) ? snapRow.t : undefined) ?? 0),
    crypto,
    stored: Buffer.isBuffer(snapRow) ? snapRow : null,
    waSealed: metaRow.wa,
    identity,
    warm: hit,
    outbox,
    outboxStored: outbox.length > 0,
    rowInfo: hit ? warm.rowInfo : new Map(),
    ciphertexts: new Map(),
    envelopes: new Map(),
    inbound: new Map(),
    afterCommit: [],
    timerOps: [],
  };
}
