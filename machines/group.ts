import { and, assign, setup } from 'xstate';
import { afterFired, backoff, replanned, timerPlan } from './retransmit.ts';

/**
 * One group of a business (docs/groups.md, "Sending"): the business's sender key for it (rotated when a member
 * goes), its distribution to every member over the member's conversation, each message encrypted once and
 * relayed to every member device, resent until every device that holds the key acknowledged it, members'
 * messages decrypted with their sender keys. Pure, like the conversation machine: time, ids and results of
 * cryptography arrive in events, effects leave as commands. Members are named by their conversation ids (a
 * keyed hash, never a phone number), so traces carry no numbers.
 */

export * from './group-types.ts';
import type { GroupCommand, GroupContext, GroupEvent, GroupInput, GroupMessage } from './group-types.ts';
import { MAX_HELD } from './group-types.ts';

type Ctx = GroupContext;
type Ev = GroupEvent;
type Args = { context: Ctx; event: Ev };
type Batch = { list: GroupCommand[] };
type Msg = GroupMessage;

const wamidOf = (e: Ev): string => ('wamid' in e ? e.wamid : '');
const find = (c: Ctx, wamid: string) => c.messages.find((m) => m.wamid === wamid);
const union = (a: number[], b: number[]) => [...new Set([...a, ...b])].sort((x, y) => x - y);
const settled = (m: Msg) => Object.values(m.owed).every((d) => d.length === 0);
/** Every member it was sent to acknowledged it on at least one device. */
const reached = (m: Msg) => Object.keys(m.owed).every((mem) => (m.acked[mem] ?? []).length > 0);


/** The statuses and forgetting due for a message after a change to who owes it. */
function settle(m: Msg, at: number): GroupCommand[] {
  const list: GroupCommand[] = [];
  if (!m.delivered && Object.keys(m.owed).length && reached(m)) {
    if (!m.sentReported) list.push({ type: 'webhook.status', wamid: m.wamid, status: 'sent', at });
    list.push({ type: 'webhook.status', wamid: m.wamid, status: 'delivered', at });
  }
  if (settled(m)) list.push({ type: 'message.forget', wamid: m.wamid });
  return list;
}
/** The message after `settle`'s statuses: marked delivered, or gone when settled. */
function afterSettle(m: Msg): Msg[] {
  if (settled(m)) return [];
  return [!m.delivered && Object.keys(m.owed).length && reached(m) ? { ...m, delivered: true as const, sentReported: true } : m];
}

// ---- command builders ---------------------------------------------------------------------------

function onMembers({ context, event }: Args): Batch {
  if (event.type !== 'MEMBERS') return { list: [] };
  const removed = context.members.filter((m) => !event.members.includes(m));
  const added = event.members.filter((m) => !context.members.includes(m));
  const list: GroupCommand[] = [];
  // A member who goes must read nothing sent after: a new key before the next message. The first member
  // gets the group's first key.
  if (event.members.length && (context.dist === null || removed.length)) list.push({ type: 'key.rotate', members: event.members });
  else if (added.length && context.dist) {
    list.push({ type: 'key.share', members: added }, { type: 'key.distribute', members: added, dist: context.dist });
  }
  // Messages stop waiting for members who left; held messages of theirs are dropped.
  for (const m of context.messages) {
    if (!removed.some((r) => r in m.owed)) continue;
    list.push(...settle(withoutMembers(m, removed), event.at));
  }
  for (const h of context.held) if (removed.includes(h.member)) list.push({ type: 'envelope.forget', id: h.id });
  return { list };
}

function withoutMembers(m: Msg, gone: string[]): Msg {
  const owed = Object.fromEntries(Object.entries(m.owed).filter(([k]) => !gone.includes(k)));
  const acked = Object.fromEntries(Object.entries(m.acked).filter(([k]) => !gone.includes(k)));
  return { ...m, owed, acked };
}

function distributeRotated({ context, event }: Args): Batch {
  if (event.type !== 'KEY_ROTATED' || !context.members.length) return { list: [] };
  return { list: [{ type: 'key.distribute', members: context.members, dist: event.dist }] };
}

function encryptNew({ context, event }: Args): Batch {
  return { list: [{ type: 'message.encrypt', wamid: wamidOf(event), seq: context.nextSeq }] };
}

function relayOne({ event }: Args): Batch {
  return { list: [{ type: 'transport.relay', wamid: wamidOf(event) }] };
}

function reportSent({ context, event }: Args): Batch {
  const m = find(context, wamidOf(event));
  return { list: m && !m.sentReported ? [{ type: 'webhook.status', wamid: m.wamid, status: 'sent', at: event.at }] : [] };
}

const failure = (m: Msg, at: number, code = 131026): GroupCommand[] => [
  ...(m.delivered ? [] : [{ type: 'webhook.status', wamid: m.wamid, status: 'failed', at, errorCode: code } as GroupCommand]),
  { type: 'message.forget', wamid: m.wamid },
];

function failUnsendable({ event }: Args): Batch {
  return { list: [{ type: 'webhook.status', wamid: wamidOf(event), status: 'failed', at: event.at, errorCode: 131026 }, { type: 'message.forget', wamid: wamidOf(event) }] };
}

function failOne({ context, event }: Args): Batch {
  const m = find(context, wamidOf(event));
  return { list: m ? failure(m, event.at) : [] };
}

function onReceipt({ context, event }: Args): Batch {
  if (event.type !== 'RECEIPT') return { list: [] };
  const m = find(context, event.wamid);
  if (!m || !(event.member in m.owed)) return { list: [] };
  return { list: settle(acknowledged(m, event.member, event.device), event.at) };
}

function acknowledged(m: Msg, member: string, device: number): Msg {
  return {
    ...m,
    owed: { ...m.owed, [member]: m.owed[member]!.filter((d) => d !== device) },
    acked: { ...m.acked, [member]: union(m.acked[member] ?? [], [device]) },
  };
}

function onKeySent({ context, event }: Args): Batch {
  if (event.type !== 'KEY_SENT' || event.dist !== context.dist || !context.members.includes(event.member)) return { list: [] };
  const listed = union([1], event.devices);
  const list: GroupCommand[] = [];
  for (const m of context.messages) {
    if (!(event.member in m.owed)) continue;
    const acked = m.acked[event.member] ?? [];
    list.push(...settle({ ...m, owed: { ...m.owed, [event.member]: listed.filter((d) => !acked.includes(d)) } }, event.at));
  }
  return { list };
}

/** Devices the transport no longer has: off the member's owed devices (of every message), off `keyed`/`expected`. */
function withoutAbsent(m: Msg, present: Record<string, number[]>): Msg {
  const owed = Object.fromEntries(Object.entries(m.owed).map(([mem, ds]) => [mem, mem in present ? ds.filter((d) => d === 1 || present[mem]!.includes(d)) : ds]));
  return { ...m, owed };
}

function onPresent({ context, event }: Args): Batch {
  if (event.type !== 'RELAYED' || !event.present) return { list: [] };
  const list: GroupCommand[] = [];
  for (const m of context.messages) {
    const next = withoutAbsent(m, event.present);
    if (JSON.stringify(next.owed) !== JSON.stringify(m.owed)) list.push(...settle(next, event.at));
  }
  // A member device the group knows nothing of (linked after the key went out): the member's conversation
  // sends the key again, to the devices of the member's verified list (a device the transport made up gets
  // nothing: the conversation encrypts for the signed list only). It owes receipts once KEY_SENT names it.
  const again = newDevices(context, event.present);
  if (again.length && context.dist) list.push({ type: 'key.share', members: again, ifMissing: true }, { type: 'key.distribute', members: again, dist: context.dist });
  return { list };
}

/** Members with a device the transport names that is neither known to hold the key, expected, nor asked for already. */
function newDevices(context: Ctx, present: Record<string, number[]>): string[] {
  return Object.entries(present).filter(([mem, ds]) => context.members.includes(mem) && ds.some((d) => d !== 1
    && !(context.keyed[mem] ?? []).includes(d) && !(context.expected?.[mem] ?? []).includes(d) && !(context.reshared?.[mem] ?? []).includes(d)))
    .map(([mem]) => mem);
}

function retransmitDue({ context, event }: Args): Batch {
  const list: GroupCommand[] = [];
  for (const m of context.messages) {
    if (event.at >= m.expiresAt) list.push(...failure(m, event.at));
    else if (m.state !== 'encrypting' && m.nextAttemptAt !== null && m.nextAttemptAt <= event.at) list.push({ type: 'transport.relay', wamid: m.wamid });
  }
  return { list };
}

function planTimer({ context }: Args): Batch {
  const plan = timerPlan(context.timer, context.messages);
  return {
    list: [
      ...(plan.cancel ? [{ type: 'timer.cancel', id: plan.cancel } as GroupCommand] : []),
      ...(plan.schedule ? [{ type: 'timer.schedule', ...plan.schedule } as GroupCommand] : []),
    ],
  };
}

function decryptEnvelope({ context, event }: Args): Batch {
  if (event.type !== 'ENVELOPE' || !context.members.includes(event.member)) return { list: [] };
  return { list: [{ type: 'envelope.decrypt', id: event.id, member: event.member }] };
}

function forwardReceived({ event }: Args): Batch {
  return { list: event.type === 'MESSAGE_RECEIVED' ? [{ type: 'webhook.message', id: event.id }] : [] };
}

function dropOverflow({ context, event }: Args): Batch {
  if (event.type !== 'MESSAGE_HELD' || context.held.length < MAX_HELD) return { list: [] };
  return { list: [{ type: 'envelope.forget', id: context.held[0]!.id }] };
}

function storeMemberKey({ context, event }: Args): Batch {
  if (event.type !== 'MEMBER_KEY' || !context.members.includes(event.member)) return { list: [] };
  // The member's messages that waited for this key are tried again.
  return {
    list: [
      { type: 'member_key.store', member: event.member, dist: event.dist },
      ...context.held.filter((h) => h.member === event.member).map((h): GroupCommand => ({ type: 'envelope.decrypt', id: h.id, member: h.member })),
    ],
  };
}

function deleteGroup({ context }: Args): Batch {
  return { list: [...(context.timer ? [{ type: 'timer.cancel', id: context.timer.id } as GroupCommand] : []), { type: 'group.delete' }] };
}

const emit = (params: (a: Args) => Batch) => ({ type: 'emitCommands' as const, params });
const PLAN = [emit(planTimer), 'replan'] as const;

/**
 * @example
 * const [s0] = initialTransition(groupMachine, { groupId: 'Gabc' });
 * const [s1, actions] = transition(groupMachine, s0, { type: 'MEMBERS', at: 0, members: ['c1'] });
 * // actions carry [{ type: 'key.rotate', members: ['c1'] }]
 */
export const groupMachine = setup({
  types: { context: {} as Ctx, events: {} as Ev, input: {} as GroupInput },
  guards: {
    isNew: ({ context, event }) => !find(context, wamidOf(event)),
    isEncrypting: ({ context, event }) => find(context, wamidOf(event))?.state === 'encrypting',
    isOutstanding: ({ context, event }) => !!find(context, wamidOf(event)),
    hasAudience: ({ context }) => context.members.length > 0 && context.dist !== null,
    unknownGroup: ({ event }) => event.type === 'RELAY_FAILED' && event.reason === 'unknown_group',
  },
  actions: {
    emitCommands: (_args, _params: Batch) => {},
    setMembers: assign(({ context, event }) => {
      if (event.type !== 'MEMBERS') return {};
      const removed = context.members.filter((m) => !event.members.includes(m));
      const keyed = Object.fromEntries(Object.entries(context.keyed).filter(([k]) => event.members.includes(k)));
      const memberKeys = Object.fromEntries(Object.entries(context.memberKeys).filter(([k]) => event.members.includes(k)));
      return {
        members: [...event.members],
        keyed,
        expected: Object.fromEntries(Object.entries(context.expected ?? {}).filter(([k]) => event.members.includes(k))),
        memberKeys,
        held: context.held.filter((h) => event.members.includes(h.member)),
        messages: removed.length ? context.messages.flatMap((m) => (removed.some((r) => r in m.owed) ? afterSettle(withoutMembers(m, removed)) : [m])) : context.messages,
      };
    }),
    setKey: assign(({ event }) => (event.type === 'KEY_ROTATED' ? { dist: event.dist, keyed: {}, expected: {}, reshared: {} } : {})),
    enqueue: assign(({ context, event }) => {
      if (event.type !== 'SEND') return {};
      // Owed by each member's phone and by every device of theirs known to hold the key or to be getting it.
      const owed = Object.fromEntries(context.members.map((m) => [m, union(union([1], context.keyed[m] ?? []), context.expected?.[m] ?? [])]));
      const m: Msg = {
        wamid: event.wamid, seq: context.nextSeq, state: 'encrypting', acceptedAt: event.at, expiresAt: event.at + (event.ttlMs ?? context.settings.ttlMs),
        attempts: 0, nextAttemptAt: null, owed, acked: {}, sentReported: false,
      };
      return { nextSeq: context.nextSeq + 1, messages: [...context.messages, m] };
    }),
    markEncrypted: assign({ messages: ({ context, event }) => context.messages.map((m) => (m.wamid === wamidOf(event) ? { ...m, state: 'encrypted' as const } : m)) }),
    markSent: assign({
      messages: ({ context, event }) => context.messages.map((m) => {
        if (m.wamid !== wamidOf(event)) return m;
        const sent = { ...m, state: 'sent' as const, sentReported: true, attempts: m.attempts + 1 };
        return { ...sent, nextAttemptAt: event.at + backoff(context.settings, sent) };
      }),
    }),
    markRetryLater: assign({
      messages: ({ context, event }) => context.messages.map((m) => (m.wamid === wamidOf(event)
        ? { ...m, attempts: m.attempts + 1, nextAttemptAt: event.at + backoff(context.settings, { ...m, attempts: m.attempts + 1 }) } : m)),
    }),
    markDue: assign({
      messages: ({ context, event }) => context.messages.map((m) => (m.state !== 'encrypting' && event.at < m.expiresAt && m.nextAttemptAt !== null && m.nextAttemptAt <= event.at ? { ...m, nextAttemptAt: null } : m)),
    }),
    dropExpired: assign({ messages: ({ context, event }) => context.messages.filter((m) => event.at < m.expiresAt) }),
    remove: assign({ messages: ({ context, event }) => context.messages.filter((m) => m.wamid !== wamidOf(event)) }),
    acknowledge: assign({
      messages: ({ context, event }) => context.messages.flatMap((m) => {
        if (event.type !== 'RECEIPT' || m.wamid !== event.wamid || !(event.member in m.owed)) return [m];
        return afterSettle(acknowledged(m, event.member, event.device));
      }),
    }),
    noteKeyHeld: assign(({ context, event }) => {
      if (event.type !== 'KEY_HELD' || event.dist !== context.dist || !context.members.includes(event.member)) return {};
      const { member, device } = event;
      return {
        keyed: { ...context.keyed, [member]: union(context.keyed[member] ?? [], [device]) },
        // A device that now holds the key owes a receipt for what it has not acknowledged (it held those messages).
        messages: context.messages.map((m) => (member in m.owed && !(m.acked[member] ?? []).includes(device)
          ? { ...m, owed: { ...m.owed, [member]: union(m.owed[member]!, [device]) } } : m)),
      };
    }),
    /**
     * The member's devices now: those that left the list owe nothing any more; those new to it owe what they
     * have not acknowledged (they get the key, then the messages they held).
     */
    noteKeySent: assign(({ context, event }) => {
      if (event.type !== 'KEY_SENT' || event.dist !== context.dist || !context.members.includes(event.member)) return {};
      const { member, devices } = event;
      const listed = union([1], devices);
      return {
        expected: { ...context.expected, [member]: listed },
        keyed: { ...context.keyed, [member]: (context.keyed[member] ?? []).filter((d) => listed.includes(d)) },
        messages: context.messages.flatMap((m) => {
          if (!(member in m.owed)) return [m];
          const acked = m.acked[member] ?? [];
          return afterSettle({ ...m, owed: { ...m.owed, [member]: listed.filter((d) => !acked.includes(d)) } });
        }),
      };
    }),
    notePresent: assign(({ context, event }) => {
      if (event.type !== 'RELAYED' || !event.present) return {};
      const present = event.present;
      const keep = (rec: Record<string, number[]> | undefined) => Object.fromEntries(Object.entries(rec ?? {}).map(([mem, ds]) => [mem, mem in present ? ds.filter((d) => d === 1 || present[mem]!.includes(d)) : ds]));
      const again = context.dist ? newDevices(context, present) : [];
      return {
        keyed: keep(context.keyed),
        expected: keep(context.expected),
        reshared: { ...keep(context.reshared), ...Object.fromEntries(again.map((mem) => [mem, union(context.reshared?.[mem] ?? [], present[mem]!)])) },
        messages: context.messages.flatMap((m) => {
          const next = withoutAbsent(m, present);
          return JSON.stringify(next.owed) === JSON.stringify(m.owed) ? [m] : afterSettle(next);
        }),
      };
    }),
    hold: assign({
      held: ({ context, event }) => (event.type === 'MESSAGE_HELD' && !context.held.some((h) => h.id === event.id)
        ? [...context.held, { id: event.id, member: event.member, at: event.at }].slice(-MAX_HELD) : context.held),
    }),
    unhold: assign({ held: ({ context, event }) => context.held.filter((h) => !('id' in event) || h.id !== event.id) }),
    noteMemberKey: assign({
      memberKeys: ({ context, event }) => (event.type === 'MEMBER_KEY' && context.members.includes(event.member) ? { ...context.memberKeys, [event.member]: event.dist } : context.memberKeys),
      // Tried again now (a message that still cannot be decrypted comes back as MESSAGE_HELD).
      held: ({ context, event }) => (event.type === 'MEMBER_KEY' ? context.held.filter((h) => h.member !== event.member) : context.held),
    }),
    clearFiredTimer: assign({ timer: ({ context, event }) => afterFired(context.timer, event) }),
    replan: assign({ timer: ({ context }) => replanned(context.timer, context.messages) }),
  },
}).createMachine({
  id: 'group',
  context: ({ input }) => ({
    groupId: input.groupId, members: [], dist: null, keyed: {}, nextSeq: 1, messages: [], timer: null, held: [], memberKeys: {},
    settings: { retransmitBaseMs: input.retransmitBaseMs ?? 5000, retransmitMaxMs: input.retransmitMaxMs ?? 15 * 60_000, ttlMs: input.ttlMs ?? 30 * 86_400_000 },
  }),
  initial: 'active',
  states: {
    active: {
      on: {
        MEMBERS: { actions: [emit(onMembers), 'setMembers', ...PLAN] },
        KEY_ROTATED: { actions: ['setKey', emit(distributeRotated)] },
        SEND: [
          { guard: and(['isNew', 'hasAudience']), actions: [emit(encryptNew), 'enqueue'] },
          // Nobody to send to (every member left since it was accepted): it fails.
          { guard: 'isNew', actions: emit(failUnsendable) },
        ],
        ENCRYPTED: { guard: 'isEncrypting', actions: ['markEncrypted', emit(relayOne)] },
        ENCRYPT_FAILED: { guard: 'isEncrypting', actions: [emit(failOne), 'remove', ...PLAN] },
        RELAYED: { guard: 'isOutstanding', actions: [emit(reportSent), 'markSent', emit(onPresent), 'notePresent', ...PLAN] },
        RELAY_FAILED: [
          { guard: 'unknownGroup', actions: [emit(failOne), 'remove', ...PLAN] },
          { guard: 'isOutstanding', actions: ['markRetryLater', ...PLAN] },
        ],
        RECEIPT: { guard: 'isOutstanding', actions: [emit(onReceipt), 'acknowledge', ...PLAN] },
        KEY_HELD: { actions: ['noteKeyHeld', ...PLAN] },
        KEY_SENT: { actions: [emit(onKeySent), 'noteKeySent', ...PLAN] },
        RETRANSMIT_DUE: { actions: ['clearFiredTimer', emit(retransmitDue), 'markDue', 'dropExpired', ...PLAN] },
        ENVELOPE: { actions: emit(decryptEnvelope) },
        MESSAGE_RECEIVED: { actions: [emit(forwardReceived), 'unhold'] },
        MESSAGE_HELD: { actions: [emit(dropOverflow), 'hold'] },
        DECRYPT_FAILED: { actions: 'unhold' },
        MEMBER_KEY: { actions: [emit(storeMemberKey), 'noteMemberKey'] },
        DELETED: { target: 'deleted', actions: emit(deleteGroup) },
      },
    },
    /** The group is gone: the host deleted everything of it. */
    deleted: { type: 'final' },
  },
});
