import { initialTransition, type AnyMachineSnapshot, type AnyStateNode } from 'xstate';
import { getAdjacencyMap } from 'xstate/graph';
import type { Command, CommandBatch } from '../../machines/commands.ts';
import { conversationMachine, type ConversationContext, type ConversationEvent } from '../../machines/conversation.ts';
import { createStepper } from '../../src/runtime/transition.ts';

/**
 * The model of the conversation machine for model-based tests: event alphabets (each a function of the
 * current snapshot, so events name the messages the conversation actually holds), a serialisation that keeps
 * the explored state space finite, and the graph traversal (xstate/graph's adjacency map) that yields one
 * path per explored edge: the shortest path to its source state, then the edge's event.
 */

export const CONV = 'cd'.repeat(15);
export const INPUT = { conversationId: CONV, retryBaseMs: 1000, retransmitBaseMs: 1000, retransmitMaxMs: 8000, ttlMs: 60_000, retentionMs: 3_600_000 };
/** The time every event happens at, unless it is a timer firing (timers fire when due). */
const NOW = 10_000;

type Snap = AnyMachineSnapshot & { context: ConversationContext };
type Msg = ConversationContext['messages'][number];

/** An alphabet: which events to try in a snapshot. */
export type Alphabet = (s: Snap) => ConversationEvent[];

const msgs = (s: Snap) => s.context.messages.filter((m: Msg) => !m.skip && !m.read);
const timerAt = (s: Snap) => s.context.timer?.at ?? null;

/** Timers fire when due; one firing past every message's TTL drives what is left to its end. */
function timerEvents(s: Snap): ConversationEvent[] {
  const out: ConversationEvent[] = [];
  const at = timerAt(s);
  if (at !== null) out.push({ type: 'RETRANSMIT_DUE', at, timerId: s.context.timer!.id });
  const lastExpiry = Math.max(0, ...s.context.messages.map((m: Msg) => m.expiresAt));
  if (lastExpiry) out.push({ type: 'RETRANSMIT_DUE', at: lastExpiry + 1 });
  return out;
}

/** Sends: at most `max` messages in a path (wamids w1, w2...). */
const sends = (max: number) => (s: Snap): ConversationEvent[] => (s.context.nextSeq <= max ? [{ type: 'SEND', wamid: `w${s.context.nextSeq}`, at: NOW }] : []);

/** What the transport and the device can answer about each message the conversation holds. */
function perMessage(s: Snap, kinds: string[]): ConversationEvent[] {
  const out: ConversationEvent[] = [];
  for (const m of s.context.messages) {
    const w = m.wamid;
    if (kinds.includes('encrypt') && m.state === 'encrypting') {
      out.push({ type: 'ENCRYPTED', wamid: w, at: NOW, messageType: 3 }, { type: 'ENCRYPT_FAILED', wamid: w, at: NOW, reason: 'no_session' });
    }
    if (kinds.includes('transport') && (m.state === 'encrypted' || m.state === 'sent')) {
      out.push({ type: 'TRANSPORT_ACCEPTED', wamid: w, at: NOW });
      out.push({ type: 'TRANSPORT_REJECTED', wamid: w, at: NOW, reason: 'unavailable' }, { type: 'TRANSPORT_REJECTED', wamid: w, at: NOW, reason: 'unknown_recipient' });
      if (kinds.includes('refusal')) out.push({ type: 'TRANSPORT_REJECTED', wamid: w, at: NOW, reason: 'refused', code: 131048 });
    }
    if (kinds.includes('receipt') && (m.state === 'encrypted' || m.state === 'sent')) out.push({ type: 'DELIVERED', wamid: w, at: NOW }, { type: 'READ', wamid: w, at: NOW });
    if (kinds.includes('repair') && !m.skip && !m.read && (m.state === 'sent' || kinds.includes('repair-any'))) {
      out.push({ type: 'RETRY_REQUESTED', wamid: w, at: NOW, ratchetMatches: true }, { type: 'RETRY_REQUESTED', wamid: w, at: NOW, ratchetMatches: false });
    }
  }
  return out;
}

/** Late receipts: for messages the path sent earlier that the conversation no longer holds. */
function lateReceipts(s: Snap): ConversationEvent[] {
  const held = new Set(s.context.messages.map((m: Msg) => m.wamid));
  const out: ConversationEvent[] = [];
  for (let i = 1; i < s.context.nextSeq; i++) {
    if (!held.has(`w${i}`)) out.push({ type: 'READ', wamid: `w${i}`, at: NOW }, { type: 'DELIVERED', wamid: `w${i}`, at: NOW });
  }
  return out;
}

const bundle: ConversationEvent[] = [
  { type: 'BUNDLE_FETCHED', at: NOW },
  { type: 'BUNDLE_FETCHED', at: NOW, identityChanged: true },
  { type: 'BUNDLE_FAILED', at: NOW, reason: 'unavailable' },
  { type: 'BUNDLE_FAILED', at: NOW, reason: 'unknown_recipient' },
  { type: 'BUNDLE_RETRY_DUE', at: NOW },
];

const inbound = (s: Snap): ConversationEvent[] => [
  { type: 'ENVELOPE', id: 'i1', at: NOW, messageType: 3 },
  ...(s.context.lastInboundAt === null ? [{ type: 'MESSAGE_RECEIVED', id: 'i1', at: NOW, seq: 1, messageType: 'text' } as ConversationEvent] : []),
  { type: 'MESSAGE_DUPLICATE', id: 'i1', at: NOW },
  { type: 'DECRYPT_FAILED', id: 'i2', at: NOW, reason: 'invalid' },
  { type: 'SESSION_ACK', at: NOW },
  ...(s.context.lastInboundAt !== null ? [{ type: 'MARK_READ', id: 'i1', at: NOW } as ConversationEvent] : []),
];

/**
 * A user with a phone and a linked companion (docs/multi-device.md): encryptions for both devices or, after the
 * companion was unlinked, for the phone alone; receipts from either device; the transport refusing a send
 * because the devices changed (409/410).
 */
function twoDevices(s: Snap): ConversationEvent[] {
  const out: ConversationEvent[] = [];
  for (const m of s.context.messages) {
    const w = m.wamid;
    if (m.state === 'encrypting') {
      out.push({ type: 'ENCRYPTED', wamid: w, at: NOW, messageType: 3, devices: [1, 2], ...(m.owed ? {} : { seqs: { 2: m.seq } }) });
      if (m.owed) out.push({ type: 'ENCRYPTED', wamid: w, at: NOW, messageType: 2, devices: [1] });
    }
    // A late refusal (the message was encrypted again meanwhile) changes nothing.
    if (m.state === 'queued') out.push({ type: 'TRANSPORT_REJECTED', wamid: w, at: NOW, reason: 'devices', extra: [2], missing: [] });
    if (m.state === 'encrypted' || m.state === 'sent') {
      out.push({ type: 'TRANSPORT_ACCEPTED', wamid: w, at: NOW });
      out.push({ type: 'TRANSPORT_REJECTED', wamid: w, at: NOW, reason: 'devices', missing: [2], extra: [] }, { type: 'TRANSPORT_REJECTED', wamid: w, at: NOW, reason: 'devices', stale: [2] });
      for (const device of m.owed ?? []) out.push({ type: 'DELIVERED', wamid: w, at: NOW, ...(device > 1 ? { device } : {}) });
      if (!m.skip && !m.read) out.push({ type: 'READ', wamid: w, at: NOW, device: 2 });
    }
  }
  return out;
}

/**
 * A member of a group (docs/groups.md): the group's sender key (and a newer one replacing it), encrypted or
 * found replaced, acknowledged by either device; the phone's own sender key arriving.
 */
function senderKeys(s: Snap): ConversationEvent[] {
  const out: ConversationEvent[] = [{ type: 'SENDER_KEY_RECEIVED', id: 'i3', at: NOW }];
  const keys = s.context.messages.filter((m: Msg) => m.senderKey);
  if (!keys.length) out.push({ type: 'SENDER_KEY', group: 'G1', dist: 'd1', at: NOW });
  else if (keys.every((m: Msg) => m.senderKey!.dist === 'd1')) out.push({ type: 'SENDER_KEY', group: 'G1', dist: 'd2', at: NOW });
  for (const m of keys) {
    const w = m.wamid;
    out.push({ type: 'ENCRYPT_FAILED', wamid: w, at: NOW, reason: 'sender_key_replaced' });
    if (m.state === 'encrypting') out.push({ type: 'ENCRYPTED', wamid: w, at: NOW, messageType: 3, devices: [1, 2] });
    if (m.state === 'encrypted' || m.state === 'sent') {
      out.push({ type: 'TRANSPORT_ACCEPTED', wamid: w, at: NOW });
      for (const device of m.owed ?? [1]) out.push({ type: 'DELIVERED', wamid: w, at: NOW, ...(device > 1 ? { device } : {}) });
    }
  }
  return out;
}

const ending = (s: Snap): ConversationEvent[] => [
  { type: 'ERASE', at: NOW },
  ...(s.context.retentionUntil !== null ? [{ type: 'PURGE_DUE', at: s.context.retentionUntil } as ConversationEvent, { type: 'PURGE_DUE', at: NOW } as ConversationEvent] : []),
];

/**
 * The alphabets, each exploring one region of the machine with few enough events to stay small; together
 * they reach every state and take every transition (asserted by the suite against the definition).
 */
export const ALPHABETS: Record<string, { events: Alphabet; limit?: number }> = {
  'first contact, one message, every answer': { events: (s) => [...sends(1)(s), ...bundle, ...perMessage(s, ['encrypt', 'transport', 'refusal', 'receipt']), ...timerEvents(s), ...lateReceipts(s)] },
  'two messages in flight': { events: (s) => [...sends(2)(s), bundle[0]!, ...perMessage(s, ['encrypt', 'transport', 'receipt']), ...timerEvents(s), ...lateReceipts(s)] },
  'session repair': { events: (s) => [...sends(1)(s), bundle[0]!, ...perMessage(s, ['encrypt', 'repair']), ...perMessage(s, ['transport']).filter((e) => e.type === 'TRANSPORT_ACCEPTED'), ...timerEvents(s)] },
  'inbound and the service window': { events: (s) => [...inbound(s), ...sends(1)(s), bundle[0]!, ...perMessage(s, ['encrypt', 'transport', 'receipt']).filter((e) => e.type !== 'TRANSPORT_REJECTED'), ...timerEvents(s)] },
  'repairs across session changes': {
    events: (s) => [...sends(1)(s), bundle[0]!, bundle[2]!, bundle[4]!, ...perMessage(s, ['encrypt', 'repair', 'repair-any']).filter((e) => e.type !== 'ENCRYPT_FAILED'), ...perMessage(s, ['transport']).filter((e) => e.type === 'TRANSPORT_ACCEPTED')],
  },
  'stale answers after a session change': {
    events: (s) => [...sends(2)(s), bundle[0]!, bundle[2]!, ...perMessage(s, ['encrypt', 'repair']).filter((e) => e.type !== 'RETRY_REQUESTED' || (e as { ratchetMatches: boolean }).ratchetMatches), ...perMessage(s, ['transport', 'refusal']).filter((e) => e.type === 'TRANSPORT_ACCEPTED' || (e as { reason?: string }).reason === 'refused')],
  },
  'linked devices': { events: (s) => [...sends(1)(s), bundle[0]!, bundle[2]!, bundle[4]!, ...twoDevices(s), ...timerEvents(s), ...lateReceipts(s)] },
  'group sender keys': { events: (s) => [...senderKeys(s), bundle[0]!, bundle[2]!, bundle[4]!, ...timerEvents(s)] },
  'retention and erasure': { events: (s) => [...sends(1)(s), bundle[0]!, ...perMessage(s, ['encrypt', 'receipt']), ...perMessage(s, ['transport']).filter((e) => e.type === 'TRANSPORT_ACCEPTED'), ...ending(s), ...timerEvents(s)] },
};

/** The part of a snapshot that matters for exploring: counters capped so the graph stays finite. */
export function serialize(s: AnyMachineSnapshot): string {
  const c = (s as Snap).context;
  return JSON.stringify([
    s.value, s.status, Math.min(c.nextSeq, 4), Math.min(c.bundleFailures, 2), c.lastInboundAt !== null, c.timer !== null,
    c.messages.map((m: Msg) => [m.wamid.slice(0, 12), m.state, Math.min(m.attempts, 2), m.sentReported, m.repairs ?? 0, !!m.skip, !!m.read, m.expiresAt > NOW + 1, m.owed ?? null, !!m.delivered]),
    Math.min(c.deviceMismatches ?? 0, 4), (c.readDone ?? []).length > 0,
  ]);
}

export const initial = (): Snap => initialTransition(conversationMachine, INPUT as never)[0] as unknown as Snap;

/** One generated path: events from the initial snapshot. */
export interface ModelPath { alphabet: string; events: ConversationEvent[] }

/** One path per edge of the explored graph (shortest path to the edge's source, then its event). */
export function generatePaths(name: string, alphabet: Alphabet, limit = 200_000): ModelPath[] {
  const adj = getAdjacencyMap(conversationMachine, {
    events: alphabet as never,
    serializeState: serialize as never,
    serializeEvent: (e) => JSON.stringify(e),
    limit,
    fromState: initial() as never,
  }) as Record<string, { state: AnyMachineSnapshot; transitions: Record<string, { event: ConversationEvent; state: AnyMachineSnapshot }> }>;
  // Shortest event sequences to each explored state (breadth first over the adjacency map).
  const start = serialize(initial());
  const route = new Map<string, ConversationEvent[]>([[start, []]]);
  const queue = [start];
  while (queue.length) {
    const k = queue.shift()!;
    for (const { event, state } of Object.values(adj[k]?.transitions ?? {})) {
      const n = serialize(state);
      if (!route.has(n) && adj[n]) {
        route.set(n, [...route.get(k)!, event]);
        queue.push(n);
      }
    }
  }
  const paths: ModelPath[] = [];
  for (const [k, v] of Object.entries(adj)) {
    const to = route.get(k);
    if (!to) continue;
    for (const { event } of Object.values(v.transitions)) paths.push({ alphabet: name, events: [...to, event] });
  }
  return paths;
}

/** Every transition of the definition: `source#EVENT#index` (index among the guarded candidates). */
export function definitionTransitions(): string[] {
  const out: string[] = [];
  const walk = (n: AnyStateNode) => {
    for (const [event, list] of n.transitions) list.forEach((_, i) => out.push(`${n.id}#${event}#${i}`));
    Object.values(n.states).forEach((c) => walk(c as AnyStateNode));
  };
  walk(conversationMachine.root);
  return out;
}

/** Every state node of the definition, by id. */
export function definitionStates(): string[] {
  const out: string[] = [];
  const walk = (n: AnyStateNode) => {
    out.push(n.id);
    Object.values(n.states).forEach((c) => walk(c as AnyStateNode));
  };
  walk(conversationMachine.root);
  return out;
}

/** Which candidate transitions an event takes in a snapshot (as ids of {@link definitionTransitions}). */
export function takenTransitions(s: AnyMachineSnapshot, e: ConversationEvent): string[] {
  const enabled = conversationMachine.getTransitionData(s as never, e as never) ?? [];
  return enabled.map((t) => {
    const source = t.source as AnyStateNode;
    const i = (source.transitions.get(e.type) ?? []).indexOf(t as never);
    return `${source.id}#${e.type}#${i}`;
  });
}

/** Runs events on the pure machine (as the host does), yielding each step's snapshot, commands and transitions taken. */
export function* runPath(events: ConversationEvent[]): Generator<{ event: ConversationEvent; before: Snap; after: Snap; commands: Command[]; taken: string[] }> {
  const step = createStepper();
  let s: Snap = initial();
  for (const event of events) {
    const taken = takenTransitions(s, event);
    const [next, actions] = step(s, event);
    const commands = actions.filter((a) => a.type === 'emitCommands').flatMap((a) => (a.params as CommandBatch).list);
    yield { event, before: s, after: next as Snap, commands, taken };
    s = next as Snap;
  }
}

/** The state ids a snapshot is in (its value, under the machine's id). */
export function activeStateIds(s: AnyMachineSnapshot): string[] {
  const out = [conversationMachine.root.id];
  const walk = (prefix: string, v: unknown) => {
    if (typeof v === 'string') out.push(`${prefix}.${v}`);
    else if (v && typeof v === 'object') for (const [k, sub] of Object.entries(v)) {
      out.push(`${prefix}.${k}`);
      walk(`${prefix}.${k}`, sub);
    }
  };
  walk(conversationMachine.root.id, s.value);
  return out;
}
