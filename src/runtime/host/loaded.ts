import type { Redis } from 'ioredis';
import type { AnyMachineSnapshot } from 'xstate';
import type { Command } from '../../../machines/commands.ts';
import type { DeviceSessions } from '../../signal/device-sessions.ts';
import type { NumberIdentity } from '../../store/businesses.ts';
import type { DeviceCiphertexts } from './device-envelopes.ts';

/** Who a conversation is between, as its meta hash says (the user's number opened). */
export interface Meta {
  businessId: string;
  phoneNumberId: string;
  waId: string;
  display: string;
}

/** A timer command, as a drain nets them before they reach the timers queue. */
export type TimerCommand = Extract<Command, { type: 'timer.schedule' | 'timer.cancel' }>;

/** An outbound row's fields that statuses report (see Loaded.rowInfo). */
export interface RowInfo {
  bo: string | null;
  k: string | null;
  at: string | null;
  tp: string | null;
}

/** How long an outbound message's row outlives its retention (a backstop behind its deletion job). */
export const ROW_BACKSTOP_MS = 3_600_000;

/** Most messages a conversation keeps {@link RowInfo} for. */
export const ROW_INFO_MAX = 64;

/** Keeps a message's {@link RowInfo}, the oldest out beyond the bound. */
export function keepRowInfo(c: Pick<Loaded, 'rowInfo'>, wamid: string, info: RowInfo): void {
  c.rowInfo.delete(wamid);
  c.rowInfo.set(wamid, info);
  if (c.rowInfo.size > ROW_INFO_MAX) c.rowInfo.delete(c.rowInfo.keys().next().value!);
}

/** What a step does to one message row (commit.lua's row operation). */
export interface RowOp {
  wamid: string;
  set?: Record<string, string>;
  del?: string[];
  drop?: boolean;
  /** The row is made by this step (a user's message): it gets its TTL backstop here. */
  made?: boolean;
  /**
   * The whole row as it is to be, with when it expires (ms): written afresh instead of deleting fields and
   * reading back the rest (a delivered message's row, whose remaining fields the drain knows: RowInfo).
   */
  rewrite?: { fields: Record<string, string>; expireAt: number };
}

/** An inbound message as stored (sealed) and forwarded to the business. */
export interface InboundRow {
  message: Record<string, unknown> & { type: string };
  timestamp: string;
  profileName?: string;
}

/** A status command as the outbox may keep it: with its message row's fields when the row goes in the same step. */
export type StatusCommand = Extract<Command, { type: 'webhook.status' }> & { row?: { bo?: string; k?: string; at?: string } };

/** The state of one conversation while a worker runs it. */
export interface Loaded {
  id: string;
  /** The conversation's store. */
  redis: Redis;
  meta: Meta;
  dk: Buffer;
  snapshot: AnyMachineSnapshot;
  version: string;
  traceSeq: number;
  crypto: DeviceSessions;
  /** The sealed snapshot as stored now (read at load, then what each commit wrote); null before the first. */
  stored: Buffer | null;
  /** The meta hash's sealed user number (what `meta.waId` was opened from). */
  waSealed: string;
  /** The business number's identity the crypto state was made with. */
  identity: NumberIdentity;
  /** True when this drain started from the process's warm state (warm.ts) instead of opening the stored one. */
  warm: boolean;
  /** The effects of the last commit not yet known to be applied (the outbox key; a crash replays them). */
  outbox: Command[];
  /** Whether an outbox may be stored now (read at load, or written by a commit): a commit with none deletes it. */
  outboxStored: boolean;
  /**
   * What statuses report from outbound message rows (callback data, sealed; kind; accept time; trace context),
   * read once with the content at encryption and kept while the conversation stays warm (warm.ts): the
   * `sent` and `delivered` statuses then read nothing. Bounded: {@link ROW_INFO_MAX} messages, oldest out.
   */
  rowInfo: Map<string, RowInfo>;
  /** Ciphertexts made in this drain (one per device), so a send needs no read-back. */
  ciphertexts: Map<string, DeviceCiphertexts>;
  /** Envelope bodies of this drain's ENVELOPE events, kept out of the machine and the trace. */
  envelopes: Map<string, { messageType: number; body: string; device?: number }>;
  /** Inbound messages decrypted in this drain, until stored and forwarded. */
  inbound: Map<string, InboundRow>;
  /** Prekey consumption to apply after the next commit (PreKey messages from the user). */
  afterCommit: (() => Promise<void>)[];
  /** The business's retention, fixed for this drain. */
  retentionMs: number;
  /** When the conversation's key TTLs were last renewed (the meta hash's `x`; 0: never). */
  ttlRenewedAt: number;
  /** Set once the conversation was deleted (its retention ended). */
  deleted: boolean;
  /**
   * Timer commands executed in this drain but not yet applied to the timers queue, netted (a timer scheduled
   * and cancelled within the drain never reaches BullMQ). Applied when the drain ends; until then every
   * commit keeps them in the outbox, so a crash replays them.
   */
  timerOps: TimerCommand[];
}

/**
 * The TTL backstop of a conversation's keys: its business's retention and a day. Deletion jobs remove data
 * when retention ends; the TTL catches whatever they miss, and must never end before them (a process
 * default shorter than the business's retention would lose a message still being retransmitted).
 */
export function keyTtlMs(c: Loaded): number {
  return c.retentionMs + 86_400_000;
}
