import { describe, expect, it } from 'vitest';
import { initialTransition, transition, type AnyMachineSnapshot } from 'xstate';
import type { Command, CommandBatch } from '../../machines/commands.ts';
import { conversationMachine, UNDELIVERABLE, type ConversationEvent } from '../../machines/conversation.ts';

const CONV = 'ab'.repeat(15);
const INPUT = { conversationId: CONV, retryBaseMs: 1000, retransmitBaseMs: 1000, retransmitMaxMs: 8000, ttlMs: 60_000 };

/** Feeds events to the pure machine; returns the last snapshot and every command emitted, per event. */
function run(events: ConversationEvent[], from?: AnyMachineSnapshot) {
  let [s] = initialTransition(conversationMachine, INPUT) as unknown as [AnyMachineSnapshot];
  if (from) s = from;
  const emitted: Command[][] = [];
  for (const e of events) {
    const [next, actions] = transition(conversationMachine, s as never, e as never) as unknown as [AnyMachineSnapshot, { type: string; params?: unknown }[]];
    s = next;
    emitted.push(actions.filter((a) => a.type === 'emitCommands').flatMap((a) => (a.params as CommandBatch).list));
  }
  return { s, emitted, all: emitted.flat() };
}

const noTimers = (cs: Command[]) => cs.filter((c) => c.type !== 'timer.schedule' && c.type !== 'timer.cancel');
const statuses = (cs: Command[]) => cs.filter((c) => c.type === 'webhook.status').map((c) => `${(c as { wamid: string }).wamid}:${(c as { status: string }).status}`);

/** Events that take w1 to `sent` at time 4. */
const toSent: ConversationEvent[] = [
  { type: 'SEND', wamid: 'w1', at: 1 },
  { type: 'BUNDLE_FETCHED', at: 2 },
  { type: 'ENCRYPTED', wamid: 'w1', at: 3, messageType: 3 },
  { type: 'TRANSPORT_ACCEPTED', wamid: 'w1', at: 4 },
];

describe('conversation machine', () => {
  it('negotiates a session before the first send, then encrypts queued messages in order', () => {
    const { s, emitted } = run([
      { type: 'SEND', wamid: 'w1', at: 1 },
      { type: 'SEND', wamid: 'w2', at: 2 },
      { type: 'BUNDLE_FETCHED', at: 3 },
    ]);
    expect(noTimers(emitted[0]!)).toEqual([{ type: 'bundle.fetch' }]);
    expect(noTimers(emitted[1]!)).toEqual([]);
    expect(emitted[2]).toEqual([
      { type: 'message.encrypt', wamid: 'w1', seq: 1 },
      { type: 'message.encrypt', wamid: 'w2', seq: 2 },
    ]);
    expect(s.value).toBe('established');
  });

  it('sends after encryption, reports sent on transport acceptance and delivered on the receipt', () => {
    const { s, emitted } = run([...toSent, { type: 'DELIVERED', wamid: 'w1', at: 5 }, { type: 'DELIVERED', wamid: 'w1', at: 6 }]);
    expect(emitted[2]).toEqual([{ type: 'transport.send', wamid: 'w1' }]);
    expect(noTimers(emitted[3]!)).toEqual([{ type: 'webhook.status', wamid: 'w1', status: 'sent', at: 4 }]);
    expect(noTimers(emitted[4]!)).toEqual([
      { type: 'webhook.status', wamid: 'w1', status: 'delivered', at: 5 },
      { type: 'message.forget', wamid: 'w1' },
    ]);
    expect(emitted[4]!.filter((c) => c.type === 'timer.cancel')).toHaveLength(1); // nothing owed: timer cancelled
    expect(emitted[5]).toEqual([]); // a repeated receipt changes nothing
    expect(s.context.messages).toEqual([]);
    expect(s.context.timer).toBeNull();
  });

  it('keeps statuses monotonic: a receipt before the transport answer reports sent first, read implies delivered', () => {
    const a = run([...toSent.slice(0, 3), { type: 'DELIVERED', wamid: 'w1', at: 4 }, { type: 'TRANSPORT_ACCEPTED', wamid: 'w1', at: 5 }]);
    expect(statuses(a.all)).toEqual(['w1:sent', 'w1:delivered']);
    const b = run([...toSent, { type: 'READ', wamid: 'w1', at: 5 }]);
    expect(statuses(b.all)).toEqual(['w1:sent', 'w1:delivered', 'w1:read']);
  });

  it('retransmits the same ciphertext with exponential backoff until the receipt comes', () => {
    const first = run(toSent);
    const due1 = first.s.context.messages[0].nextAttemptAt as number;
    expect(due1).toBeGreaterThanOrEqual(4 + 800);
    expect(due1).toBeLessThanOrEqual(4 + 1200);
    expect(first.s.context.timer).toEqual({ id: `rt:${due1}`, at: due1 });
    // Too early: nothing is sent.
    const early = run([{ type: 'RETRANSMIT_DUE', at: due1 - 1, timerId: 'rt:old' }], first.s);
    expect(noTimers(early.all)).toEqual([]);
    // Due: the same message is handed over again, then the next wait is about twice as long.
    const again = run([{ type: 'RETRANSMIT_DUE', at: due1, timerId: `rt:${due1}` }, { type: 'TRANSPORT_ACCEPTED', wamid: 'w1', at: due1 + 1 }], first.s);
    expect(noTimers(again.emitted[0]!)).toEqual([{ type: 'transport.send', wamid: 'w1' }]);
    expect(statuses(again.all)).toEqual([]); // `sent` is reported once
    const due2 = again.s.context.messages[0].nextAttemptAt as number;
    expect(due2 - (due1 + 1)).toBeGreaterThanOrEqual(1600);
    expect(due2 - (due1 + 1)).toBeLessThanOrEqual(2400);
    expect(again.s.context.messages[0].attempts).toBe(2);
  });

  it('fails with 131026 when the TTL runs out, and tells the device to skip that seq', () => {
    const first = run(toSent);
    const { s, emitted } = run([{ type: 'RETRANSMIT_DUE', at: 1 + 60_000 }], first.s);
    const cmds = noTimers(emitted[0]!);
    expect(cmds.slice(0, 2)).toEqual([
      { type: 'webhook.status', wamid: 'w1', status: 'failed', at: 60_001, errorCode: UNDELIVERABLE },
      { type: 'message.forget', wamid: 'w1' },
    ]);
    expect(cmds[2]).toMatchObject({ type: 'message.encrypt', seq: 1, skip: true });
    expect(s.context.messages).toHaveLength(1);
    expect(s.context.messages[0]).toMatchObject({ seq: 1, skip: true, state: 'encrypting' });
  });

  it('a skip notice is retransmitted and acknowledged like a message, but never reported to the business', () => {
    const expired = run([...toSent, { type: 'RETRANSMIT_DUE', at: 60_001 }]);
    const skipId = expired.s.context.messages[0].wamid as string;
    const { s, all } = run([
      { type: 'ENCRYPTED', wamid: skipId, at: 60_002, messageType: 2 },
      { type: 'TRANSPORT_ACCEPTED', wamid: skipId, at: 60_003 },
      { type: 'DELIVERED', wamid: skipId, at: 60_004 },
    ], expired.s);
    expect(statuses(all)).toEqual([]);
    expect(s.context.messages).toEqual([]);
  });

  it('encrypts directly once established and numbers messages consecutively', () => {
    const first = run([{ type: 'SEND', wamid: 'w1', at: 1 }, { type: 'BUNDLE_FETCHED', at: 2 }]);
    const { emitted } = run([{ type: 'SEND', wamid: 'w2', at: 3 }, { type: 'SEND', wamid: 'w2', at: 4 }], first.s);
    expect(noTimers(emitted[0]!)).toEqual([{ type: 'message.encrypt', wamid: 'w2', seq: 2 }]);
    expect(emitted[1]).toEqual([]); // the same wamid twice is one message
  });

  it('retries a failed bundle fetch later with backoff, through a durable timer', () => {
    const { s, emitted } = run([
      { type: 'SEND', wamid: 'w1', at: 1000 },
      { type: 'BUNDLE_FAILED', at: 1000, reason: 'unavailable' },
      { type: 'BUNDLE_RETRY_DUE', at: 2000 },
      { type: 'BUNDLE_FAILED', at: 2000, reason: 'unavailable' },
    ]);
    expect(emitted[1]).toEqual([{ type: 'timer.schedule', id: 'bundle:1000', at: 2000, event: 'BUNDLE_RETRY_DUE' }]);
    expect(emitted[2]).toEqual([{ type: 'bundle.fetch' }]);
    expect(emitted[3]).toEqual([{ type: 'timer.schedule', id: 'bundle:2000', at: 4000, event: 'BUNDLE_RETRY_DUE' }]);
    expect(s.value).toBe('noSession');
  });

  it('fails queued messages with 131026 when the recipient is unknown', () => {
    const { s, emitted } = run([{ type: 'SEND', wamid: 'w1', at: 1 }, { type: 'BUNDLE_FAILED', at: 2, reason: 'unknown_recipient' }]);
    expect(noTimers(emitted[1]!)).toEqual([
      { type: 'webhook.status', wamid: 'w1', status: 'failed', at: 2, errorCode: UNDELIVERABLE },
      { type: 'message.forget', wamid: 'w1' },
    ]);
    expect(s.context.messages).toEqual([]);
  });

  it('renegotiates when encryption finds no usable session, and re-encrypts in order', () => {
    const est = run([{ type: 'SEND', wamid: 'w1', at: 1 }, { type: 'BUNDLE_FETCHED', at: 2 }]);
    const { s, emitted } = run([
      { type: 'ENCRYPT_FAILED', wamid: 'w1', at: 3, reason: 'no_session' },
      { type: 'SEND', wamid: 'w2', at: 4 },
      { type: 'BUNDLE_FETCHED', at: 5 },
    ], est.s);
    expect(emitted[0]).toEqual([{ type: 'bundle.fetch' }]);
    expect(emitted[2]).toEqual([
      { type: 'message.encrypt', wamid: 'w1', seq: 1 },
      { type: 'message.encrypt', wamid: 'w2', seq: 2 },
    ]);
    expect(s.value).toBe('established');
  });

  it('asks for decryption of an envelope and records a session acknowledgement', () => {
    const { emitted } = run([{ type: 'ENVELOPE', id: 'e1', at: 1, messageType: 2 }, { type: 'SESSION_ACK', at: 2 }]);
    expect(emitted[0]).toEqual([{ type: 'envelope.decrypt', id: 'e1' }]);
    expect(emitted[1]).toEqual([]);
  });

  it('survives persist and restore: the restored snapshot continues identically', () => {
    const a = run([{ type: 'SEND', wamid: 'w1', at: 1 }, { type: 'BUNDLE_FETCHED', at: 2 }]);
    const json = JSON.stringify(conversationMachine.getPersistedSnapshot(a.s as never));
    const restored = conversationMachine.resolveState(JSON.parse(json)) as unknown as AnyMachineSnapshot;
    const x = run([{ type: 'ENCRYPTED', wamid: 'w1', at: 3, messageType: 3 }], a.s);
    const y = run([{ type: 'ENCRYPTED', wamid: 'w1', at: 3, messageType: 3 }], restored);
    expect(y.all).toEqual(x.all);
    expect(JSON.stringify(conversationMachine.getPersistedSnapshot(y.s as never))).toBe(JSON.stringify(conversationMachine.getPersistedSnapshot(x.s as never)));
  });

  it('is pure: the same events give the same commands and snapshot', () => {
    const events: ConversationEvent[] = [...toSent, { type: 'RETRANSMIT_DUE', at: 5000 }];
    const a = run(events);
    const b = run(events);
    expect(b.all).toEqual(a.all);
    expect(b.s.context).toEqual(a.s.context);
  });

  it('repairs on a retry request: archives a current session and renegotiates, else re-encrypts in place', () => {
    const sent = run(toSent);
    const matching = run([{ type: 'RETRY_REQUESTED', wamid: 'w1', at: 10, ratchetMatches: true }, { type: 'BUNDLE_FETCHED', at: 11 }], sent.s);
    expect(noTimers(matching.emitted[0]!)).toEqual([{ type: 'session.archive' }, { type: 'bundle.fetch' }]);
    expect(matching.emitted[1]).toEqual([{ type: 'message.encrypt', wamid: 'w1', seq: 1 }]);
    expect(matching.s.context.messages[0].repairs).toBe(1);
    const stale = run([{ type: 'RETRY_REQUESTED', wamid: 'w1', at: 10, ratchetMatches: false }], sent.s);
    expect(noTimers(stale.emitted[0]!)).toEqual([{ type: 'message.encrypt', wamid: 'w1', seq: 1 }]);
    expect(stale.s.context.messages[0].redo).toEqual([1]);
    expect(stale.s.value).toBe('established');
    const unknown = run([{ type: 'RETRY_REQUESTED', wamid: 'nope', at: 10, ratchetMatches: true }], sent.s);
    expect(noTimers(unknown.all)).toEqual([]);
  });

  it('fails a message after 5 repairs with 131026 and a skip notice', () => {
    let s = run(toSent).s;
    for (let i = 0; i < 5; i++) {
      s = run([
        { type: 'RETRY_REQUESTED', wamid: 'w1', at: 10 + i * 10, ratchetMatches: false },
        { type: 'ENCRYPTED', wamid: 'w1', at: 11 + i * 10, messageType: 2 },
        { type: 'TRANSPORT_ACCEPTED', wamid: 'w1', at: 12 + i * 10 },
      ], s).s;
    }
    const last = run([{ type: 'RETRY_REQUESTED', wamid: 'w1', at: 100, ratchetMatches: false }], s);
    expect(statuses(last.all)).toEqual(['w1:failed']);
    expect(last.all).toContainEqual(expect.objectContaining({ type: 'message.encrypt', seq: 1, skip: true }));
  });

  it('ignores a read receipt for a message it reported failed (failed is final), still reports reads of delivered ones', () => {
    const { all } = run([
      { type: 'SEND', wamid: 'w1', at: 1 },
      { type: 'BUNDLE_FAILED', at: 2, reason: 'unknown_recipient' },
      { type: 'READ', wamid: 'w1', at: 3 },
    ]);
    expect(statuses(all)).toEqual(['w1:failed']);
    const ok = run([...toSent, { type: 'DELIVERED', wamid: 'w1', at: 5 }, { type: 'READ', wamid: 'w1', at: 6 }]);
    expect(statuses(ok.all)).toEqual(['w1:sent', 'w1:delivered', 'w1:read']);
    // Expired at its TTL, then read late: still only failed.
    const late = run([...toSent, { type: 'RETRANSMIT_DUE', at: 60_005 }, { type: 'READ', wamid: 'w1', at: 60_006 }]);
    expect(statuses(late.all)).toEqual(['w1:sent', 'w1:failed']);
  });

  it('fails a message the transport refuses with the code it gives, sends a skip notice in its place, and never retries it', () => {
    const { all, s } = run([
      { type: 'SEND', wamid: 'w1', at: 1 },
      { type: 'BUNDLE_FETCHED', at: 2 },
      { type: 'ENCRYPTED', wamid: 'w1', at: 3, messageType: 3 },
      { type: 'TRANSPORT_REJECTED', wamid: 'w1', at: 4, reason: 'refused', code: 131048 },
    ]);
    expect(all.filter((c) => c.type === 'webhook.status')).toEqual([{ type: 'webhook.status', wamid: 'w1', status: 'failed', at: 4, errorCode: 131048 }]);
    // The device may be holding later messages for seq 1: a skip notice for it is encrypted at once.
    const notice = (s.context as { messages: { seq: number; skip?: true; state: string }[] }).messages.find((m) => m.skip);
    expect(notice).toMatchObject({ seq: 1, state: 'encrypting' });
    expect(all.filter((c) => c.type === 'message.encrypt').map((c) => (c as { seq: number }).seq)).toEqual([1, 1]);
    // Refusals of a skip notice (the business is blocked: everything is refused) report nothing.
    // A refused skip notice reports nothing and is retried later (the device is waiting for it), not dropped.
    const noticeWamid = (notice as unknown as { wamid: string }).wamid;
    const encrypted = run([{ type: 'ENCRYPTED', wamid: noticeWamid, at: 5, messageType: 2 }], s);
    const refusedNotice = run([{ type: 'TRANSPORT_REJECTED', wamid: noticeWamid, at: 6, reason: 'refused', code: 131048 }], encrypted.s);
    expect(refusedNotice.all.filter((c) => c.type === 'webhook.status' || c.type === 'message.forget')).toEqual([]);
    const retried = (refusedNotice.s.context as { messages: { wamid: string; nextAttemptAt: number | null }[] }).messages.find((m) => m.wamid === noticeWamid);
    expect(retried!.nextAttemptAt).toBeGreaterThan(6);
  });

  it('reports a changed identity from a fresh bundle to the business', () => {
    const { emitted } = run([{ type: 'SEND', wamid: 'w1', at: 1 }, { type: 'BUNDLE_FETCHED', at: 2, identityChanged: true }]);
    expect(emitted[1]![0]).toEqual({ type: 'webhook.identity_changed', at: 2 });
  });
});
