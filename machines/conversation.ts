import { assign, setup } from 'xstate';
import type { Command, CommandBatch } from './commands.ts';

/** Where one outbound message is in its life. */
export type OutboundState = 'queued' | 'encrypting' | 'encrypted' | 'sent';

/** An outbound message the conversation still owes its user (removed once delivered or failed). */
export interface OutboundMessage {
  wamid: string;
  seq: number;
  state: OutboundState;
  acceptedAt: number;
  /** Reported `sent` to the business already (statuses are monotonic). */
  sentReported: boolean;
}

/** The conversation's context: ids and counters only, never content or phone numbers. */
export interface ConversationContext {
  conversationId: string;
  /** Sequence number the next accepted outbound message gets (the device shows messages in seq order). */
  nextSeq: number;
  messages: OutboundMessage[];
  bundleFailures: number;
  /** Base delay of the bundle-fetch backoff. */
  retryBaseMs: number;
}

/** Input when a conversation is created. */
export interface ConversationInput {
  conversationId: string;
  retryBaseMs?: number;
}

/** Events delivered to a conversation; `at` is the time (ms) the host observed it. */
export type ConversationEvent =
  | { type: 'SEND'; wamid: string; at: number }
  | { type: 'BUNDLE_FETCHED'; at: number; identityChanged?: boolean }
  | { type: 'BUNDLE_FAILED'; at: number; reason: 'unknown_recipient' | 'unavailable' | 'bad_bundle' }
  | { type: 'BUNDLE_RETRY_DUE'; at: number }
  | { type: 'ENCRYPTED'; wamid: string; at: number; messageType: number }
  | { type: 'ENCRYPT_FAILED'; wamid: string; at: number; reason: string }
  | { type: 'TRANSPORT_ACCEPTED'; wamid: string; at: number }
  | { type: 'TRANSPORT_REJECTED'; wamid: string; at: number; reason: 'unknown_recipient' | 'unavailable' }
  | { type: 'RETRANSMIT_DUE'; wamid: string; at: number }
  | { type: 'DELIVERED'; wamid: string; at: number }
  | { type: 'READ'; wamid: string; at: number }
  | { type: 'ENVELOPE'; id: string; at: number; messageType: number }
  | { type: 'SESSION_ACK'; at: number }
  | { type: 'DECRYPT_FAILED'; id: string; at: number; reason: string };

/** Cloud API code for an undeliverable message. */
export const UNDELIVERABLE = 131026;

const MAX_BUNDLE_BACKOFF_MS = 10 * 60_000;

type Ctx = ConversationContext;
type Ev = ConversationEvent;
type Args = { context: Ctx; event: Ev };

const wamidOf = (e: Ev): string => ('wamid' in e ? e.wamid : '');
const find = (c: Ctx, wamid: string) => c.messages.find((m) => m.wamid === wamid);
const setState = (c: Ctx, pred: (m: OutboundMessage) => boolean, state: OutboundState) =>
  c.messages.map((m) => (pred(m) ? { ...m, state } : m));

// ---- command builders (pure functions of context and event) -----------------------------------

function encryptQueued({ context }: Args): CommandBatch {
  return {
    list: context.messages
      .filter((m) => m.state === 'queued')
      .map((m): Command => ({ type: 'message.encrypt', wamid: m.wamid, seq: m.seq })),
  };
}

function encryptNew({ context, event }: Args): CommandBatch {
  const m = find(context, wamidOf(event));
  return { list: m ? [{ type: 'message.encrypt', wamid: m.wamid, seq: m.seq }] : [] };
}

function sendOne({ event }: Args): CommandBatch {
  return { list: [{ type: 'transport.send', wamid: wamidOf(event) }] };
}

function reportSent({ event }: Args): CommandBatch {
  return { list: [{ type: 'webhook.status', wamid: wamidOf(event), status: 'sent', at: event.at }] };
}

function reportDelivered({ context, event }: Args): CommandBatch {
  const m = find(context, wamidOf(event));
  const list: Command[] = [];
  if (m && !m.sentReported) list.push({ type: 'webhook.status', wamid: m.wamid, status: 'sent', at: event.at });
  list.push({ type: 'webhook.status', wamid: wamidOf(event), status: 'delivered', at: event.at });
  list.push({ type: 'message.forget', wamid: wamidOf(event) });
  return { list };
}

function reportRead({ context, event }: Args): CommandBatch {
  // Read implies delivered: an outstanding message is reported delivered first, so statuses stay monotonic.
  const list: Command[] = find(context, wamidOf(event)) ? reportDelivered({ context, event }).list : [];
  list.push({ type: 'webhook.status', wamid: wamidOf(event), status: 'read', at: event.at });
  return { list };
}

function failAllQueued({ context, event }: Args): CommandBatch {
  return {
    list: context.messages
      .filter((m) => m.state === 'queued')
      .flatMap((m): Command[] => [
        { type: 'webhook.status', wamid: m.wamid, status: 'failed', at: event.at, errorCode: UNDELIVERABLE },
        { type: 'message.forget', wamid: m.wamid },
      ]),
  };
}

function failOne({ event }: Args): CommandBatch {
  return {
    list: [
      { type: 'webhook.status', wamid: wamidOf(event), status: 'failed', at: event.at, errorCode: UNDELIVERABLE },
      { type: 'message.forget', wamid: wamidOf(event) },
    ],
  };
}

function decryptEnvelope({ event }: Args): CommandBatch {
  return { list: event.type === 'ENVELOPE' ? [{ type: 'envelope.decrypt', id: event.id }] : [] };
}

function scheduleBundleRetry({ context, event }: Args): CommandBatch {
  const delay = Math.min(context.retryBaseMs * 2 ** Math.max(0, context.bundleFailures - 1), MAX_BUNDLE_BACKOFF_MS);
  return { list: [{ type: 'timer.schedule', id: `bundle:${context.bundleFailures}`, at: event.at + delay, event: 'BUNDLE_RETRY_DUE' }] };
}

function scheduleResend({ context, event }: Args): CommandBatch {
  const delay = Math.min(context.retryBaseMs, MAX_BUNDLE_BACKOFF_MS);
  const wamid = wamidOf(event);
  return { list: [{ type: 'timer.schedule', id: `resend:${wamid}:${event.at}`, at: event.at + delay, event: 'RETRANSMIT_DUE', wamid }] };
}

/**
 * One conversation (business phone number × user device): key negotiation, send, acknowledgement.
 * Pure: time and ids arrive in events; side effects leave as commands (the `emitCommands` action's params).
 *
 * @example
 * const [s0] = initialTransition(conversationMachine, { conversationId: 'c1' });
 * const [s1, actions] = transition(conversationMachine, s0, { type: 'SEND', wamid: 'wamid.1', at: 0 });
 * // s1.value === 'negotiating'; actions carry [{ type: 'bundle.fetch' }]
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
    isAwaitingTransport: ({ context, event }) => find(context, wamidOf(event))?.state === 'encrypted',
    isOutstanding: ({ context, event }) => !!find(context, wamidOf(event)),
    isUnsent: ({ context, event }) => ['encrypted', 'sent'].includes(find(context, wamidOf(event))?.state ?? ''),
    recipientUnknown: ({ event }) => 'reason' in event && event.reason === 'unknown_recipient',
  },
  actions: {
    /** The transition's commands; the host executes them (a no-op inside the machine). */
    emitCommands: (_args, _params: CommandBatch) => {},
    enqueue: assign({
      nextSeq: ({ context }) => context.nextSeq + 1,
      messages: ({ context, event }) => [
        ...context.messages,
        { wamid: wamidOf(event), seq: context.nextSeq, state: 'queued' as const, acceptedAt: event.at, sentReported: false },
      ],
    }),
    markEncrypting: assign({ messages: ({ context, event }) => setState(context, (m) => m.wamid === wamidOf(event), 'encrypting') }),
    markAllQueuedEncrypting: assign({ messages: ({ context }) => setState(context, (m) => m.state === 'queued', 'encrypting') }),
    markEncrypted: assign({ messages: ({ context, event }) => setState(context, (m) => m.wamid === wamidOf(event), 'encrypted') }),
    markSent: assign({
      messages: ({ context, event }) =>
        context.messages.map((m) => (m.wamid === wamidOf(event) ? { ...m, state: 'sent' as const, sentReported: true } : m)),
    }),
    requeueEncrypting: assign({ messages: ({ context }) => setState(context, (m) => m.state === 'encrypting', 'queued') }),
    remove: assign({ messages: ({ context, event }) => context.messages.filter((m) => m.wamid !== wamidOf(event)) }),
    removeQueued: assign({ messages: ({ context }) => context.messages.filter((m) => m.state !== 'queued') }),
    countBundleFailure: assign({ bundleFailures: ({ context }) => context.bundleFailures + 1 }),
    resetBundleFailures: assign({ bundleFailures: 0 }),
  },
}).createMachine({
  id: 'conversation',
  context: ({ input }) => ({
    conversationId: input.conversationId,
    nextSeq: 1,
    messages: [],
    bundleFailures: 0,
    retryBaseMs: input.retryBaseMs ?? 5000,
  }),
  initial: 'noSession',
  // Receipts and transport results are handled the same whatever the session state.
  on: {
    DELIVERED: { guard: 'isOutstanding', actions: [{ type: 'emitCommands', params: reportDelivered }, 'remove'] },
    READ: { actions: [{ type: 'emitCommands', params: reportRead }, 'remove'] },
    TRANSPORT_ACCEPTED: { guard: 'isAwaitingTransport', actions: [{ type: 'emitCommands', params: reportSent }, 'markSent'] },
    TRANSPORT_REJECTED: [
      { guard: 'recipientUnknown', actions: [{ type: 'emitCommands', params: failOne }, 'remove'] },
      { guard: 'isAwaitingTransport', actions: [{ type: 'emitCommands', params: scheduleResend }] },
    ],
    RETRANSMIT_DUE: { guard: 'isUnsent', actions: [{ type: 'emitCommands', params: sendOne }] },
    ENCRYPTED: { guard: 'isEncrypting', actions: ['markEncrypted', { type: 'emitCommands', params: sendOne }] },
    ENVELOPE: { actions: { type: 'emitCommands', params: decryptEnvelope } },
    SESSION_ACK: {},
    DECRYPT_FAILED: {},
  },
  states: {
    noSession: {
      on: {
        SEND: { guard: 'isNewMessage', target: 'negotiating', actions: ['enqueue', { type: 'emitCommands', params: { list: [{ type: 'bundle.fetch' }] } }] },
        BUNDLE_RETRY_DUE: { target: 'negotiating', actions: { type: 'emitCommands', params: { list: [{ type: 'bundle.fetch' }] } } },
        ENCRYPT_FAILED: { actions: 'requeueEncrypting' },
      },
    },
    negotiating: {
      on: {
        SEND: { guard: 'isNewMessage', actions: 'enqueue' },
        BUNDLE_FETCHED: {
          target: 'established',
          actions: ['resetBundleFailures', { type: 'emitCommands', params: encryptQueued }, 'markAllQueuedEncrypting'],
        },
        BUNDLE_FAILED: [
          { guard: 'recipientUnknown', target: 'noSession', actions: [{ type: 'emitCommands', params: failAllQueued }, 'removeQueued'] },
          { target: 'noSession', actions: ['countBundleFailure', { type: 'emitCommands', params: scheduleBundleRetry }] },
        ],
        ENCRYPT_FAILED: { actions: 'requeueEncrypting' },
      },
    },
    established: {
      on: {
        SEND: { guard: 'isNewMessage', actions: ['enqueue', { type: 'emitCommands', params: encryptNew }, 'markEncrypting'] },
        ENCRYPT_FAILED: {
          target: 'negotiating',
          actions: ['requeueEncrypting', { type: 'emitCommands', params: { list: [{ type: 'bundle.fetch' }] } }],
        },
      },
    },
  },
});
