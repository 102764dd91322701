import { and, assign, setup } from 'xstate';
import type { Command, CommandBatch } from './commands.ts';
import { derivedWamid } from './ids.ts';
import { afterFired, backoff, replanned, timerPlan } from './retransmit.ts';

/** Where one outbound message is in its life. */
export type OutboundState = 'queued' | 'encrypting' | 'encrypted' | 'sent';

/** An outbound message the conversation still owes its user (removed once delivered, read or failed). */
export interface OutboundMessage {
  wamid: string;
  seq: number;
  state: OutboundState;
  acceptedAt: number;
  /** When its TTL ends: not delivered by then, it fails with 131026. */
  expiresAt: number;
  /** How many times its ciphertext was handed to the transport. */
  attempts: number;
  /** When to hand it over again if no receipt came (null while waiting for the transport's answer). */
  nextAttemptAt: number | null;
  /** Reported `sent` to the business already (statuses are monotonic). */
  sentReported: boolean;
  /** Session repairs done for it (a device's retry request re-encrypts it, at most {@link MAX_REPAIRS} times). */
  repairs?: number;
  /** The error it fails with when it ends undelivered, when not 131026 (the transport refused it). */
  failCode?: number;
  /** A notice that seq `seq` failed, so the device stops holding later messages for it; no webhooks. */
  skip?: true;
  /** A read receipt for these inbound message ids (the business read them); seq 0; no webhooks. */
  read?: string[];
  /** The business's sender key for a group (docs/groups.md): seq 0, no webhooks; each device's receipt is told to the group. */
  senderKey?: { group: string; dist: string };
  /**
   * The user's devices it was encrypted for that have not acknowledged it yet (docs/multi-device.md): it is
   * handed over again until this is empty, the TTL ends or they leave the list. Absent before the first
   * encryption (and in state made before linked devices: then one receipt settles it).
   */
  owed?: number[];
  /** The sequence number each companion got for it (device 1 shows `seq`); keys are device ids. */
  dseq?: Record<string, number>;
  /** Reported `delivered` already (the first device's receipt); kept while other devices still owe a receipt. */
  delivered?: true;
  /** Devices to encrypt it for afresh at its next encryption (a device asked for it again). */
  redo?: number[];
}

/** Timing settings, fixed when the conversation is created (they travel in the trace's input). */
export interface ConversationSettings {
  /** Base delay of the bundle-fetch backoff. */
  retryBaseMs: number;
  /** First retransmission delay; doubles per attempt, with ±20 % deterministic jitter. */
  retransmitBaseMs: number;
  retransmitMaxMs: number;
  /** Default message TTL (the Cloud API's is 30 days). */
  ttlMs: number;
  /** How long every message is kept (the business's retention, 30 days at most). */
  retentionMs: number;
}

/** The conversation's context: ids, times and counters only, never content or phone numbers. */
export interface ConversationContext {
  conversationId: string;
  /** Sequence number the next accepted outbound message gets (the device shows messages in seq order). */
  nextSeq: number;
  messages: OutboundMessage[];
  bundleFailures: number;
  /** The one pending retransmit/expiry timer of the conversation. */
  timer: { id: string; at: number } | null;
  /** When the user last wrote (opens the 24-hour customer-service window); null if never. */
  lastInboundAt: number | null;
  /** When the retention of the newest message ends: then the conversation (and the user's number) is deleted. */
  retentionUntil: number | null;
  settings: ConversationSettings;
  /**
   * The most recent messages reported `failed` (at most {@link FAILED_KEPT}): a read receipt arriving for
   * one later is not reported (statuses never go from failed to read). Absent until the first failure.
   */
  failed?: string[];
  /** The most recent messages reported `read` (at most {@link FAILED_KEPT}): a second device's read is not reported again. */
  readDone?: string[];
  /**
   * Sends refused in a row because the devices did not match the user's (409/410), each answered by fetching
   * the list and keys again; past {@link MAX_DEVICE_MISMATCHES} the fetch backs off like a failed one.
   */
  deviceMismatches?: number;
}

/** Device-mismatch refusals in a row answered at once; then the key fetch backs off. */
export const MAX_DEVICE_MISMATCHES = 3;

/** How many recent failures a conversation remembers to ignore late read receipts for them. */
export const FAILED_KEPT = 32;

/** Input when a conversation is created. */
export interface ConversationInput {
  conversationId: string;
  retryBaseMs?: number;
  retransmitBaseMs?: number;
  retransmitMaxMs?: number;
  ttlMs?: number;
  retentionMs?: number;
}

/** Events delivered to a conversation; `at` is the time (ms) the host observed it. */
export type ConversationEvent =
  | { type: 'SEND'; wamid: string; at: number; ttlMs?: number }
  | { type: 'BUNDLE_FETCHED'; at: number; identityChanged?: boolean }
  | { type: 'BUNDLE_FAILED'; at: number; reason: 'unknown_recipient' | 'unavailable' | 'bad_bundle' }
  | { type: 'BUNDLE_RETRY_DUE'; at: number }
  /**
   * `devices`: every device the message now has a ciphertext for; `added`: those that had none before;
   * `seqs`: companions' sequence numbers given in this encryption. Absent (state before linked devices): device 1.
   */
  | { type: 'ENCRYPTED'; wamid: string; at: number; messageType: number; devices?: number[]; added?: number[]; seqs?: Record<string, number> }
  /** `seqs`: companions' sequence numbers taken before it failed (the message keeps them). */
  | { type: 'ENCRYPT_FAILED'; wamid: string; at: number; reason: string; seqs?: Record<string, number> }
  | { type: 'TRANSPORT_ACCEPTED'; wamid: string; at: number }
  | { type: 'TRANSPORT_REJECTED'; wamid: string; at: number; reason: 'unknown_recipient' | 'unavailable' }
  /** The transport refused the message under its integrity rules (limits, blocks, policy): `code` is the Cloud API error. */
  | { type: 'TRANSPORT_REJECTED'; wamid: string; at: number; reason: 'refused'; code: number }
  /** The envelopes did not match the user's devices (409 `missing`/`extra`, 410 `stale`): nothing was delivered. */
  | { type: 'TRANSPORT_REJECTED'; wamid: string; at: number; reason: 'devices'; missing?: number[]; extra?: number[]; stale?: number[] }
  | { type: 'RETRANSMIT_DUE'; at: number; timerId?: string }
  /** `device`: which of the user's devices acknowledged (absent: device 1). */
  | { type: 'DELIVERED'; wamid: string; at: number; device?: number }
  | { type: 'READ'; wamid: string; at: number; device?: number }
  | { type: 'ENVELOPE'; id: string; at: number; messageType: number }
  | { type: 'SESSION_ACK'; at: number }
  | { type: 'RETRY_REQUESTED'; wamid: string; at: number; ratchetMatches: boolean; device?: number }
  | { type: 'MESSAGE_RECEIVED'; id: string; at: number; seq: number; messageType: string }
  | { type: 'MESSAGE_DUPLICATE'; id: string; at: number }
  | { type: 'MARK_READ'; id: string; at: number }
  /** The group actor asks for its sender key `dist` to reach every device of this user. */
  | { type: 'SENDER_KEY'; group: string; dist: string; at: number }
  /** The user's phone sent its own sender key for a group (the host handed it to the group). */
  | { type: 'SENDER_KEY_RECEIVED'; id: string; at: number }
  | { type: 'PURGE_DUE'; at: number }
  | { type: 'ERASE'; at: number }
  | { type: 'DECRYPT_FAILED'; id: string; at: number; reason: string };

/** Cloud API code for an undeliverable message. */
export const UNDELIVERABLE = 131026;

/** Session repairs per message, as Signal and Baileys allow. */
export const MAX_REPAIRS = 5;

const DAY = 86_400_000;
const MAX_BUNDLE_BACKOFF_MS = 10 * 60_000;

type Ctx = ConversationContext;
type Ev = ConversationEvent;
type Args = { context: Ctx; event: Ev };
type Msg = OutboundMessage;

const wamidOf = (e: Ev): string => ('wamid' in e ? e.wamid : '');
/** The device an event comes from (receipts, retry requests): 1, the phone, when it names none. */
const deviceOf = (e: Ev): number => ('device' in e && e.device) || 1;
/**
 * The devices still owing a receipt for `m` once `device` acknowledged it; null when none does (the message
 * is done). A message without `owed` (encrypted before linked devices) is done at its first receipt.
 */
function owedAfter(m: Msg, device: number): number[] | null {
  if (!m.owed) return null;
  const left = m.owed.filter((d) => d !== device);
  return left.length ? left : null;
}
const isControl = (m: Msg) => !!m.skip || !!m.read || !!m.senderKey;
const find = (c: Ctx, wamid: string) => c.messages.find((m) => m.wamid === wamid);
const update = (c: Ctx, pred: (m: Msg) => boolean, patch: (m: Msg) => Partial<Msg>) =>
  c.messages.map((m) => (pred(m) ? { ...m, ...patch(m) } : m));
const isExpired = (m: Msg, at: number) => at >= m.expiresAt;
/** `failed` with these wamids added, the oldest dropped beyond {@link FAILED_KEPT}. */
function withFailed(c: Ctx, wamids: string[]): string[] | undefined {
  if (!wamids.length) return c.failed;
  return [...(c.failed ?? []), ...wamids].slice(-FAILED_KEPT);
}
/** After an encryption: the devices still owing a receipt (those that left the list no longer do). */
function owedAfterEncryption(m: Msg, e: Ev): number[] | undefined {
  if (e.type !== 'ENCRYPTED' || !e.devices) return m.owed;
  if (!m.owed) return [...e.devices];
  const added = (e.added ?? []).filter((d) => !m.owed!.includes(d));
  return [...m.owed.filter((d) => e.devices!.includes(d)), ...added].sort((a, b) => a - b);
}

const isInFlight = (m: Msg | undefined) => m?.state === 'encrypted' || m?.state === 'sent';


// ---- command builders (pure functions of context and event) -----------------------------------

const encrypt = (m: Msg): Command => ({
  type: 'message.encrypt', wamid: m.wamid, seq: m.seq, ...(m.skip ? { skip: true as const } : {}), ...(m.read ? { read: m.read } : {}),
  ...(m.senderKey ? { senderKey: m.senderKey } : {}),
});

function encryptQueued({ context }: Args): CommandBatch {
  return { list: context.messages.filter((m) => m.state === 'queued').map(encrypt) };
}

function sendOne({ event }: Args): CommandBatch {
  return { list: [{ type: 'transport.send', wamid: wamidOf(event) }] };
}

function reportSent({ context, event }: Args): CommandBatch {
  const m = find(context, wamidOf(event));
  if (!m || m.sentReported || isControl(m)) return { list: [] };
  return { list: [{ type: 'webhook.status', wamid: m.wamid, status: 'sent', at: event.at }] };
}

/**
 * A device acknowledged a message: `delivered` at the first device (WhatsApp's double tick), the content
 * forgotten once every device it was encrypted for has acknowledged it.
 */
function reportDelivered({ context, event }: Args): CommandBatch {
  const m = find(context, wamidOf(event));
  if (!m) return { list: [] };
  const list: Command[] = [];
  if (!isControl(m) && !m.delivered) {
    if (!m.sentReported) list.push({ type: 'webhook.status', wamid: m.wamid, status: 'sent', at: event.at });
    list.push({ type: 'webhook.status', wamid: m.wamid, status: 'delivered', at: event.at });
  }
  if (m.senderKey && (!m.owed || m.owed.includes(deviceOf(event)))) list.push({ type: 'group.key_held', ...m.senderKey, device: deviceOf(event) });
  if (!owedAfter(m, deviceOf(event))) list.push({ type: 'message.forget', wamid: m.wamid });
  return { list };
}

/** A group's sender key was encrypted: the group learns which devices of the user it is for. */
function reportKeySent({ context, event }: Args): CommandBatch {
  const m = find(context, wamidOf(event));
  if (!m?.senderKey || event.type !== 'ENCRYPTED') return { list: [] };
  return { list: [{ type: 'group.key_sent', ...m.senderKey, devices: event.devices ?? [1] }] };
}

/** An encryption left no device owing a receipt (the rest acknowledged, the others left the list): done. */
function forgetSettled({ event }: Args): CommandBatch {
  return { list: [{ type: 'message.forget', wamid: wamidOf(event) }] };
}

function reportRead({ context, event }: Args): CommandBatch {
  // Read implies delivered: an outstanding message is reported delivered first, so statuses stay monotonic.
  const list = reportDelivered({ context, event }).list;
  list.push({ type: 'webhook.status', wamid: wamidOf(event), status: 'read', at: event.at });
  return { list };
}

const failure = (m: Msg, at: number): Command[] => [
  // Delivered to a device already: no `failed` after `delivered`; the devices still owing it get a skip notice.
  ...(isControl(m) || m.delivered ? [] : [{ type: 'webhook.status', wamid: m.wamid, status: 'failed', at, errorCode: m.failCode ?? UNDELIVERABLE } as Command]),
  { type: 'message.forget', wamid: m.wamid },
];

function failQueued({ context, event }: Args): CommandBatch {
  return { list: context.messages.filter((m) => m.state === 'queued').flatMap((m) => failure(m, event.at)) };
}

function failOne({ context, event }: Args): CommandBatch {
  const m = find(context, wamidOf(event));
  return { list: m ? failure(m, event.at) : [] };
}

/** On a retransmit/expiry wake: fail what expired, hand over again what is due. */
function retransmitDue({ context, event }: Args): CommandBatch {
  const list: Command[] = [];
  for (const m of context.messages) {
    if (isExpired(m, event.at)) list.push(...failure(m, event.at));
    else if (m.state === 'sent' && m.nextAttemptAt !== null && m.nextAttemptAt <= event.at) list.push({ type: 'transport.send', wamid: m.wamid });
    else if (m.state === 'encrypted' && m.nextAttemptAt !== null && m.nextAttemptAt <= event.at) list.push({ type: 'transport.send', wamid: m.wamid });
  }
  return { list };
}

function planTimer({ context }: Args): CommandBatch {
  const plan = timerPlan(context.timer, context.messages);
  return {
    list: [
      ...(plan.cancel ? [{ type: 'timer.cancel', id: plan.cancel } as Command] : []),
      ...(plan.schedule ? [{ type: 'timer.schedule', ...plan.schedule, event: 'RETRANSMIT_DUE' } as Command] : []),
    ],
  };
}

function scheduleBundleRetry({ context, event }: Args): CommandBatch {
  const delay = Math.min(context.settings.retryBaseMs * 2 ** Math.max(0, context.bundleFailures - 1), MAX_BUNDLE_BACKOFF_MS);
  return { list: [{ type: 'timer.schedule', id: `bundle:${event.at}`, at: event.at + delay, event: 'BUNDLE_RETRY_DUE' }] };
}

function decryptEnvelope({ event }: Args): CommandBatch {
  return { list: event.type === 'ENVELOPE' ? [{ type: 'envelope.decrypt', id: event.id }] : [] };
}

function receiveInbound({ event }: Args): CommandBatch {
  if (event.type !== 'MESSAGE_RECEIVED') return { list: [] };
  return { list: [{ type: 'inbound.store', id: event.id, at: event.at }, { type: 'webhook.message', id: event.id }] };
}

function purge({ event }: Args): CommandBatch {
  return { list: [{ type: 'store.purge', upTo: event.at }] };
}

function endConversation({ context, event }: Args): CommandBatch {
  return {
    list: [
      { type: 'store.purge', upTo: event.at },
      ...(context.timer ? [{ type: 'timer.cancel', id: context.timer.id } as Command] : []),
      { type: 'conversation.delete' },
    ],
  };
}

function eraseConversation({ context }: Args): CommandBatch {
  return {
    list: [
      ...(context.timer ? [{ type: 'timer.cancel', id: context.timer.id } as Command] : []),
      { type: 'conversation.delete', erase: true },
    ],
  };
}

function identityNotice({ event }: Args): CommandBatch {
  return { list: event.type === 'BUNDLE_FETCHED' && event.identityChanged ? [{ type: 'webhook.identity_changed', at: event.at }] : [] };
}

const FETCH: CommandBatch = { list: [{ type: 'bundle.fetch' }] };

function archiveSession({ event }: Args): CommandBatch {
  const device = deviceOf(event);
  return { list: [{ type: 'session.archive', ...(device !== 1 ? { device } : {}) }] };
}

/**
 * One conversation (business phone number × user device): key negotiation, send, retransmission until the
 * device acknowledges, TTL expiry. Pure: time and ids arrive in events; side effects leave as commands (the
 * `emitCommands` action's params), timers included: nothing here uses XState's in-memory `after`.
 *
 * @example
 * const [s0] = initialTransition(conversationMachine, { conversationId: 'c1' });
 * const [s1, actions] = transition(conversationMachine, s0, { type: 'SEND', wamid: 'wamid.1', at: 0 });
 * // s1.value === 'negotiating'; actions carry [{ type: 'bundle.fetch' }, { type: 'timer.schedule', ... }]
 */
export const conversationMachine = setup({
  types: {
    context: {} as Ctx,
    events: {} as Ev,
    input: {} as ConversationInput,
  },
  guards: {
    isNewMessage: ({ context, event }) => !find(context, wamidOf(event)),
    isEncrypting: ({ context, event }) => find(context, wamidOf(event))?.state === 'encrypting',
    isInFlight: ({ context, event }) => isInFlight(find(context, wamidOf(event))),
    isOutstanding: ({ context, event }) => !!find(context, wamidOf(event)),
    // The encryption left no device owing a receipt (see owedAfterEncryption).
    settledByEncryption: ({ context, event }) => {
      const m = find(context, wamidOf(event));
      return m?.state === 'encrypting' && !!m.owed && owedAfterEncryption(m, event)?.length === 0;
    },
    deviceMismatch: ({ event }) => event.type === 'TRANSPORT_REJECTED' && event.reason === 'devices',
    mismatchesLeft: ({ context }) => (context.deviceMismatches ?? 0) < MAX_DEVICE_MISMATCHES,
    // Over when the newest message's retention has ended and nothing is owed but notices about expired ones.
    conversationOver: ({ context, event }) =>
      context.retentionUntil !== null && event.at >= context.retentionUntil && context.messages.every(isControl),
    recipientUnknown: ({ event }) => 'reason' in event && event.reason === 'unknown_recipient',
    // A refused message fails; a refused notice (skip, read receipt) is retried like a lost one instead: the
    // device may be waiting for it, and the transport may take it later (once the user is reached today).
    refusedInFlight: ({ context, event }) => {
      const m = find(context, wamidOf(event));
      return 'reason' in event && event.reason === 'refused' && isInFlight(m) && !isControl(m!);
    },
    repairsExhausted: ({ context, event }) => (find(context, wamidOf(event))?.repairs ?? 0) >= MAX_REPAIRS,
    // The group replaced the sender key this message carried (or is gone): it is dropped, not retried.
    senderKeyGone: ({ event }) => event.type === 'ENCRYPT_FAILED' && event.reason === 'sender_key_replaced',
    ratchetMatches: ({ event }) => event.type === 'RETRY_REQUESTED' && event.ratchetMatches,
    hasQueued: ({ context }) => context.messages.some((m) => m.state === 'queued'),
    notFailed: ({ context, event }) => !(context.failed ?? []).includes(wamidOf(event)),
    // Not failed, and not reported read already (the user read it on another device before).
    readNotReported: ({ context, event }) => !(context.failed ?? []).includes(wamidOf(event)) && !(context.readDone ?? []).includes(wamidOf(event)),
  },
  actions: {
    /** The transition's commands; the host executes them (a no-op inside the machine). */
    emitCommands: (_args, _params: CommandBatch) => {},
    enqueue: assign({
      nextSeq: ({ context }) => context.nextSeq + 1,
      retentionUntil: ({ context, event }) => Math.max(context.retentionUntil ?? 0, event.at + context.settings.retentionMs),
      messages: ({ context, event }) => [
        ...context.messages,
        {
          wamid: wamidOf(event), seq: context.nextSeq, state: 'queued' as const, acceptedAt: event.at,
          expiresAt: event.at + (event.type === 'SEND' && event.ttlMs ? event.ttlMs : context.settings.ttlMs),
          attempts: 0, nextAttemptAt: null, sentReported: false,
        },
      ],
    }),
    markQueuedEncrypting: assign({ messages: ({ context }) => update(context, (m) => m.state === 'queued', () => ({ state: 'encrypting' })) }),
    markEncrypted: assign({
      messages: ({ context, event }) => update(context, (m) => m.wamid === wamidOf(event), (m) => {
        const seqs = event.type === 'ENCRYPTED' && event.seqs && Object.keys(event.seqs).length ? { dseq: { ...m.dseq, ...event.seqs } } : {};
        const owed = owedAfterEncryption(m, event);
        return { state: 'encrypted' as const, redo: undefined, ...(owed ? { owed } : {}), ...seqs };
      }),
    }),
    /** A device acknowledged the event's message: it owes no receipt now; the message goes when none does. */
    acknowledge: assign({
      messages: ({ context, event }) => context.messages.flatMap((m) => {
        if (m.wamid !== wamidOf(event)) return [m];
        const left = owedAfter(m, deviceOf(event));
        return left ? [{ ...m, owed: left, ...(isControl(m) ? {} : { delivered: true as const, sentReported: true }) }] : [];
      }),
    }),
    noteRead: assign({ readDone: ({ context, event }) => [...(context.readDone ?? []), wamidOf(event)].slice(-FAILED_KEPT) }),
    /** Refused for mismatched devices: everything handed over is encrypted again (for the devices the list names now). */
    requeueInFlight: assign({
      messages: ({ context }) => update(context, (m) => isInFlight(m), () => ({ state: 'queued', nextAttemptAt: null })),
      deviceMismatches: ({ context }) => (context.deviceMismatches ?? 0) + 1,
    }),
    resetMismatches: assign({ deviceMismatches: () => undefined }),
    markSent: assign({
      messages: ({ context, event }) => update(context, (m) => m.wamid === wamidOf(event), (m) => {
        const sent = { ...m, state: 'sent' as const, sentReported: !isControl(m), attempts: m.attempts + 1 };
        return { ...sent, nextAttemptAt: event.at + backoff(context.settings, sent) };
      }),
    }),
    /** Refused by the transport: it fails now with the refusal's code (then `expire` replaces it with a skip notice). */
    markRefused: assign({
      messages: ({ context, event }) => update(context, (m) => m.wamid === wamidOf(event), () => ({
        expiresAt: event.at, ...(event.type === 'TRANSPORT_REJECTED' && event.reason === 'refused' ? { failCode: event.code } : {}),
      })),
    }),
    markRetryLater: assign({
      messages: ({ context, event }) => update(context, (m) => m.wamid === wamidOf(event), (m) => ({
        attempts: m.attempts + 1, nextAttemptAt: event.at + backoff(context.settings, { ...m, attempts: m.attempts + 1 }),
      })),
    }),
    markDueInFlight: assign({
      // Handed over again: wait for the transport's answer before planning the next attempt.
      messages: ({ context, event }) => update(context, (m) => !isExpired(m, event.at) && isInFlight(m) && m.nextAttemptAt !== null && m.nextAttemptAt <= event.at,
        () => ({ nextAttemptAt: null })),
    }),
    expire: assign({
      failed: ({ context, event }) => withFailed(context, context.messages.filter((m) => isExpired(m, event.at) && !isControl(m) && !m.delivered).map((m) => m.wamid)),
      // Expired messages leave; each one the device may be waiting for is replaced by a skip notice.
      messages: ({ context, event }) => {
        const kept = context.messages.filter((m) => !isExpired(m, event.at));
        const notices = context.messages
          .filter((m) => isExpired(m, event.at) && !isControl(m))
          .map((m): Msg => ({
            wamid: derivedWamid(context.conversationId, `skip:${m.wamid}`), seq: m.seq, state: 'queued', acceptedAt: event.at,
            expiresAt: event.at + context.settings.ttlMs, attempts: 0, nextAttemptAt: null, sentReported: false, skip: true,
            ...(m.dseq ? { dseq: m.dseq } : {}),
          }));
        return [...kept, ...notices];
      },
    }),
    requeueForRepair: assign({
      messages: ({ context, event }) => update(context, (m) => m.wamid === wamidOf(event), (m) => ({
        state: 'queued', nextAttemptAt: null, repairs: (m.repairs ?? 0) + 1, redo: [...new Set([...(m.redo ?? []), deviceOf(event)])],
      })),
    }),
    expireNow: assign({ messages: ({ context, event }) => update(context, (m) => m.wamid === wamidOf(event), () => ({ expiresAt: event.at })) }),
    requeueEncrypting: assign({
      messages: ({ context, event }) => update(context, (m) => m.state === 'encrypting', (m) => ({
        state: 'queued',
        ...(event.type === 'ENCRYPT_FAILED' && event.seqs && m.wamid === event.wamid ? { dseq: { ...m.dseq, ...event.seqs } } : {}),
      })),
    }),
    remove: assign({ messages: ({ context, event }) => context.messages.filter((m) => m.wamid !== wamidOf(event)) }),
    /** The event's message failed: remembered (see `failed`), then removed. */
    removeFailed: assign({
      failed: ({ context, event }) => withFailed(context, context.messages.filter((m) => m.wamid === wamidOf(event) && !isControl(m)).map((m) => m.wamid)),
      messages: ({ context, event }) => context.messages.filter((m) => m.wamid !== wamidOf(event)),
    }),
    /** The queued messages failed (their recipient is unknown): remembered, then removed. */
    removeQueued: assign({
      failed: ({ context }) => withFailed(context, context.messages.filter((m) => m.state === 'queued' && !isControl(m)).map((m) => m.wamid)),
      messages: ({ context }) => context.messages.filter((m) => m.state !== 'queued'),
    }),
    countBundleFailure: assign({ bundleFailures: ({ context }) => context.bundleFailures + 1 }),
    resetBundleFailures: assign({ bundleFailures: 0 }),
    noteInbound: assign({
      lastInboundAt: ({ event }) => event.at,
      retentionUntil: ({ context, event }) => Math.max(context.retentionUntil ?? 0, event.at + context.settings.retentionMs),
    }),
    queueReadReceipt: assign({
      messages: ({ context, event }) => {
        const id = event.type === 'MARK_READ' ? event.id : '';
        const receipt: Msg = {
          wamid: derivedWamid(context.conversationId, `read:${id}`), seq: 0, state: 'queued', acceptedAt: event.at,
          expiresAt: event.at + context.settings.ttlMs, attempts: 0, nextAttemptAt: null, sentReported: false, read: [id],
        };
        return context.messages.some((m) => m.wamid === receipt.wamid) ? context.messages : [...context.messages, receipt];
      },
    }),
    /** The group's newest sender key replaces any older one for the group still owed. */
    queueSenderKey: assign({
      messages: ({ context, event }) => {
        if (event.type !== 'SENDER_KEY') return context.messages;
        const wamid = derivedWamid(context.conversationId, `gk:${event.group}:${event.dist}`);
        if (context.messages.some((m) => m.wamid === wamid)) return context.messages;
        const key: Msg = {
          wamid, seq: 0, state: 'queued', acceptedAt: event.at, expiresAt: event.at + context.settings.ttlMs, attempts: 0, nextAttemptAt: null,
          sentReported: false, senderKey: { group: event.group, dist: event.dist },
        };
        return [...context.messages.filter((m) => m.senderKey?.group !== event.group), key];
      },
    }),
    clearFiredTimer: assign({ timer: ({ context, event }) => afterFired(context.timer, event) }),
    replan: assign({ timer: ({ context }) => replanned(context.timer, context.messages) }),
  },
}).createMachine({
  id: 'conversation',
  context: ({ input }) => ({
    conversationId: input.conversationId,
    nextSeq: 1,
    messages: [],
    bundleFailures: 0,
    timer: null,
    lastInboundAt: null,
    retentionUntil: null,
    settings: {
      retryBaseMs: input.retryBaseMs ?? 5000,
      retransmitBaseMs: input.retransmitBaseMs ?? 5000,
      retransmitMaxMs: input.retransmitMaxMs ?? 15 * 60_000,
      ttlMs: input.ttlMs ?? 30 * DAY,
      retentionMs: input.retentionMs ?? 30 * DAY,
    },
  }),
  initial: 'noSession',
  // Receipts, transport answers and timers are handled the same whatever the session state. Every change to
  // what the conversation owes ends with `plan` (emit the timer commands) and `replan` (remember the timer).
  on: {
    DELIVERED: { guard: 'isOutstanding', actions: [{ type: 'emitCommands', params: reportDelivered }, 'acknowledge', { type: 'emitCommands', params: planTimer }, 'replan'] },
    // A read receipt for a message reported failed is not reported (failed is final), nor one the user read
    // on another device already.
    READ: { guard: 'readNotReported', actions: [{ type: 'emitCommands', params: reportRead }, 'acknowledge', 'noteRead', { type: 'emitCommands', params: planTimer }, 'replan'] },
    TRANSPORT_ACCEPTED: { guard: 'isInFlight', actions: [{ type: 'emitCommands', params: reportSent }, 'markSent', 'resetMismatches', { type: 'emitCommands', params: planTimer }, 'replan'] },
    TRANSPORT_REJECTED: [
      // The user's devices changed (a companion linked, unlinked or reinstalled): as Signal clients do, fetch
      // the signed list and the new devices' keys, encrypt what was handed over again, send again; after
      // MAX_DEVICE_MISMATCHES in a row the fetch backs off (a transport insisting on a device no list names).
      { guard: and(['deviceMismatch', 'isInFlight', 'mismatchesLeft']), target: '.negotiating', actions: ['requeueInFlight', { type: 'emitCommands', params: FETCH }, { type: 'emitCommands', params: planTimer }, 'replan'] },
      { guard: and(['deviceMismatch', 'isInFlight']), target: '.noSession', actions: ['requeueInFlight', 'countBundleFailure', { type: 'emitCommands', params: scheduleBundleRetry }, { type: 'emitCommands', params: planTimer }, 'replan'] },
      { guard: 'deviceMismatch' },
      { guard: 'recipientUnknown', actions: [{ type: 'emitCommands', params: failOne }, 'removeFailed', { type: 'emitCommands', params: planTimer }, 'replan'] },
      // Refused (limits, a block, policy): failed with the transport's code, a skip notice in its place.
      { guard: 'refusedInFlight', actions: ['markRefused', { type: 'emitCommands', params: retransmitDue }, 'markDueInFlight', 'expire', { type: 'emitCommands', params: planTimer }, 'replan'] },
      { guard: 'isInFlight', actions: ['markRetryLater', { type: 'emitCommands', params: planTimer }, 'replan'] },
    ],
    RETRANSMIT_DUE: {
      actions: ['clearFiredTimer', { type: 'emitCommands', params: retransmitDue }, 'markDueInFlight', 'expire', { type: 'emitCommands', params: planTimer }, 'replan'],
    },
    ENCRYPTED: [
      { guard: 'settledByEncryption', actions: [{ type: 'emitCommands', params: reportKeySent }, { type: 'emitCommands', params: forgetSettled }, 'remove', { type: 'emitCommands', params: planTimer }, 'replan'] },
      { guard: 'isEncrypting', actions: [{ type: 'emitCommands', params: reportKeySent }, 'markEncrypted', { type: 'emitCommands', params: sendOne }] },
    ],
    ENVELOPE: { actions: { type: 'emitCommands', params: decryptEnvelope } },
    // A device could not decrypt a message: re-encrypt it (in a fresh session when the request names the
    // current one), at most MAX_REPAIRS times; then it fails like an expired message.
    RETRY_REQUESTED: [
      { guard: 'repairsExhausted', actions: ['expireNow', { type: 'emitCommands', params: retransmitDue }, 'markDueInFlight', 'expire', { type: 'emitCommands', params: planTimer }, 'replan'] },
      { guard: 'isOutstanding', actions: ['requeueForRepair', { type: 'emitCommands', params: planTimer }, 'replan'] },
    ],
    SESSION_ACK: {},
    SENDER_KEY_RECEIVED: {},
    SENDER_KEY: { actions: ['queueSenderKey', { type: 'emitCommands', params: planTimer }, 'replan'] },
    DECRYPT_FAILED: {},
    MESSAGE_DUPLICATE: {},
    MARK_READ: { actions: ['queueReadReceipt', { type: 'emitCommands', params: planTimer }, 'replan'] },
    // Retention: expired messages go; after the newest one, everything about the user goes.
    // A data request: everything about this user for this business goes now, whatever is still owed.
    ERASE: { target: '.expired', actions: { type: 'emitCommands', params: eraseConversation } },
    PURGE_DUE: [
      { guard: 'conversationOver', target: '.expired', actions: { type: 'emitCommands', params: endConversation } },
      { actions: { type: 'emitCommands', params: purge } },
    ],
  },
  states: {
    /** Deleted: the host removes every key of the conversation; a later message starts a new one. */
    expired: { type: 'final' },
    noSession: {
      on: {
        SEND: { guard: 'isNewMessage', target: 'negotiating', actions: ['enqueue', { type: 'emitCommands', params: FETCH }, { type: 'emitCommands', params: planTimer }, 'replan'] },
        BUNDLE_RETRY_DUE: { guard: 'hasQueued', target: 'negotiating', actions: { type: 'emitCommands', params: FETCH } },
        SENDER_KEY: { target: 'negotiating', actions: ['queueSenderKey', { type: 'emitCommands', params: FETCH }, { type: 'emitCommands', params: planTimer }, 'replan'] },
        RETRANSMIT_DUE: {
          guard: 'hasQueued', target: 'negotiating',
          actions: ['clearFiredTimer', { type: 'emitCommands', params: retransmitDue }, 'markDueInFlight', 'expire', { type: 'emitCommands', params: FETCH }, { type: 'emitCommands', params: planTimer }, 'replan'],
        },
        ENCRYPT_FAILED: [{ guard: 'senderKeyGone', actions: ['remove', { type: 'emitCommands', params: planTimer }, 'replan'] }, { actions: 'requeueEncrypting' }],
        // The user opened the conversation: decrypting their PreKey message gave us a session.
        MESSAGE_RECEIVED: {
          target: 'established',
          actions: ['noteInbound', { type: 'emitCommands', params: receiveInbound }, { type: 'emitCommands', params: encryptQueued }, 'markQueuedEncrypting'],
        },
        RETRY_REQUESTED: [
          { guard: 'repairsExhausted', actions: ['expireNow', { type: 'emitCommands', params: retransmitDue }, 'markDueInFlight', 'expire', { type: 'emitCommands', params: planTimer }, 'replan'] },
          { guard: 'isOutstanding', target: 'negotiating', actions: ['requeueForRepair', { type: 'emitCommands', params: FETCH }, { type: 'emitCommands', params: planTimer }, 'replan'] },
        ],
      },
    },
    negotiating: {
      on: {
        SEND: { guard: 'isNewMessage', actions: ['enqueue', { type: 'emitCommands', params: planTimer }, 'replan'] },
        BUNDLE_FETCHED: {
          target: 'established',
          actions: ['resetBundleFailures', { type: 'emitCommands', params: identityNotice }, { type: 'emitCommands', params: encryptQueued }, 'markQueuedEncrypting'],
        },
        BUNDLE_FAILED: [
          { guard: 'recipientUnknown', target: 'noSession', actions: [{ type: 'emitCommands', params: failQueued }, 'removeQueued', { type: 'emitCommands', params: planTimer }, 'replan'] },
          { target: 'noSession', actions: ['countBundleFailure', { type: 'emitCommands', params: scheduleBundleRetry }] },
        ],
        ENCRYPT_FAILED: [{ guard: 'senderKeyGone', actions: ['remove', { type: 'emitCommands', params: planTimer }, 'replan'] }, { actions: 'requeueEncrypting' }],
        MESSAGE_RECEIVED: { actions: ['noteInbound', { type: 'emitCommands', params: receiveInbound }] },
      },
    },
    established: {
      on: {
        SEND: { guard: 'isNewMessage', actions: ['enqueue', { type: 'emitCommands', params: encryptQueued }, 'markQueuedEncrypting', { type: 'emitCommands', params: planTimer }, 'replan'] },
        RETRANSMIT_DUE: {
          actions: ['clearFiredTimer', { type: 'emitCommands', params: retransmitDue }, 'markDueInFlight', 'expire',
            { type: 'emitCommands', params: encryptQueued }, 'markQueuedEncrypting', { type: 'emitCommands', params: planTimer }, 'replan'],
        },
        ENCRYPT_FAILED: [
          { guard: 'senderKeyGone', actions: ['remove', { type: 'emitCommands', params: planTimer }, 'replan'] },
          { target: 'negotiating', actions: ['requeueEncrypting', { type: 'emitCommands', params: FETCH }] },
        ],
        SENDER_KEY: { actions: ['queueSenderKey', { type: 'emitCommands', params: encryptQueued }, 'markQueuedEncrypting', { type: 'emitCommands', params: planTimer }, 'replan'] },
        MESSAGE_RECEIVED: { actions: ['noteInbound', { type: 'emitCommands', params: receiveInbound }] },
        MARK_READ: { actions: ['queueReadReceipt', { type: 'emitCommands', params: encryptQueued }, 'markQueuedEncrypting', { type: 'emitCommands', params: planTimer }, 'replan'] },
        // As in any state, and the skip notice that replaces the refused message goes out at once.
        TRANSPORT_REJECTED: {
          guard: 'refusedInFlight',
          actions: ['markRefused', { type: 'emitCommands', params: retransmitDue }, 'markDueInFlight', 'expire',
            { type: 'emitCommands', params: encryptQueued }, 'markQueuedEncrypting', { type: 'emitCommands', params: planTimer }, 'replan'],
        },
        RETRY_REQUESTED: [
          { guard: 'repairsExhausted', actions: ['expireNow', { type: 'emitCommands', params: retransmitDue }, 'markDueInFlight', 'expire',
            { type: 'emitCommands', params: encryptQueued }, 'markQueuedEncrypting', { type: 'emitCommands', params: planTimer }, 'replan'] },
          { guard: and(['isOutstanding', 'ratchetMatches']), target: 'negotiating', actions: ['requeueForRepair', { type: 'emitCommands', params: archiveSession }, { type: 'emitCommands', params: FETCH }, { type: 'emitCommands', params: planTimer }, 'replan'] },
          { guard: 'isOutstanding', actions: ['requeueForRepair', { type: 'emitCommands', params: encryptQueued }, 'markQueuedEncrypting', { type: 'emitCommands', params: planTimer }, 'replan'] },
        ],
      },
    },
  },
});
