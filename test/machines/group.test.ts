import { describe, expect, it } from 'vitest';
import { initialTransition, transition, type AnyMachineSnapshot } from 'xstate';
import { groupMachine, type GroupCommand, type GroupContext, type GroupEvent } from '../../machines/group.ts';

/** The group machine alone (machines/group.ts): pure, so every rule is checked event by event. */
function run(events: GroupEvent[], from?: AnyMachineSnapshot): { snap: AnyMachineSnapshot; commands: GroupCommand[][] } {
  let snap = from ?? (initialTransition(groupMachine, { groupId: 'G1', retransmitBaseMs: 1000, retransmitMaxMs: 8000, ttlMs: 60_000 })[0] as unknown as AnyMachineSnapshot);
  const commands: GroupCommand[][] = [];
  for (const e of events) {
    const [next, actions] = transition(groupMachine, snap as never, e as never);
    snap = next as unknown as AnyMachineSnapshot;
    commands.push(actions.flatMap((a) => (a.type === 'emitCommands' ? (a.params as { list: GroupCommand[] }).list : [])));
  }
  return { snap, commands };
}
const ctx = (s: AnyMachineSnapshot) => s.context as GroupContext;
const types = (cs: GroupCommand[]) => cs.map((c) => c.type);

/** A group with members a and b, key d1, and one message w1 relayed at t=10. */
function withMessage() {
  return run([
    { type: 'MEMBERS', at: 0, members: ['a', 'b'] },
    { type: 'KEY_ROTATED', at: 0, dist: 'd1' },
    { type: 'SEND', wamid: 'w1', at: 10 },
    { type: 'ENCRYPTED', wamid: 'w1', at: 10 },
    { type: 'RELAYED', wamid: 'w1', at: 10 },
  ]);
}

describe('group machine', () => {
  it('the first members get a new key, distributed to each; a message is encrypted once, relayed, reported sent, and timed', () => {
    const { snap, commands } = withMessage();
    expect(commands[0]).toEqual([{ type: 'key.rotate', members: ['a', 'b'] }]);
    expect(commands[1]).toEqual([{ type: 'key.distribute', members: ['a', 'b'], dist: 'd1' }]);
    expect(commands[2]).toEqual([{ type: 'message.encrypt', wamid: 'w1', seq: 1 }]);
    expect(commands[3]).toEqual([{ type: 'transport.relay', wamid: 'w1' }]);
    expect(types(commands[4]!)).toEqual(['webhook.status', 'timer.schedule']);
    expect(ctx(snap).messages[0]!.owed).toEqual({ a: [1], b: [1] });
  });

  it('delivered once every member acknowledged on a device; done when every owed device did', () => {
    let { snap } = withMessage();
    ({ snap } = run([{ type: 'KEY_SENT', at: 11, member: 'a', devices: [1, 2], dist: 'd1' }], snap));
    expect(ctx(snap).messages[0]!.owed.a).toEqual([1, 2]);
    const r = run([
      { type: 'RECEIPT', wamid: 'w1', at: 12, member: 'a', device: 2 },
      { type: 'RECEIPT', wamid: 'w1', at: 13, member: 'b', device: 1 },
      { type: 'RECEIPT', wamid: 'w1', at: 13, member: 'b', device: 1 },
      { type: 'RECEIPT', wamid: 'w1', at: 14, member: 'a', device: 1 },
    ], snap);
    expect(r.commands[0]!.filter((c) => c.type === 'webhook.status')).toEqual([]);
    expect(r.commands[1]!.filter((c) => c.type === 'webhook.status')).toEqual([{ type: 'webhook.status', wamid: 'w1', status: 'delivered', at: 13 }]);
    expect(types(r.commands[2]!)).not.toContain('webhook.status');
    expect(r.commands[3]).toContainEqual({ type: 'message.forget', wamid: 'w1' });
    expect(ctx(r.snap).messages).toEqual([]);
  });

  it('a member who goes: a new key before the next message, and the message in flight stops waiting for them', () => {
    const { snap } = withMessage();
    const r = run([
      { type: 'RECEIPT', wamid: 'w1', at: 12, member: 'a', device: 1 },
      { type: 'MEMBERS', at: 20, members: ['a'] },
      { type: 'KEY_ROTATED', at: 20, dist: 'd2' },
      { type: 'SEND', wamid: 'w2', at: 21 },
    ], snap);
    // b no longer owes w1, and a acknowledged it: delivered and done.
    expect(r.commands[1]).toEqual(expect.arrayContaining([
      { type: 'key.rotate', members: ['a'] },
      { type: 'webhook.status', wamid: 'w1', status: 'delivered', at: 20 },
      { type: 'message.forget', wamid: 'w1' },
    ]));
    expect(r.commands[2]).toEqual([{ type: 'key.distribute', members: ['a'], dist: 'd2' }]);
    expect(ctx(r.snap).messages.map((m) => [m.wamid, m.owed])).toEqual([['w2', { a: [1] }]]);
  });

  it('a device the transport no longer has (unlinked) owes nothing: the message is settled without it; the phone is never dropped', () => {
    let { snap } = withMessage();
    ({ snap } = run([
      { type: 'KEY_SENT', at: 11, member: 'a', devices: [1, 2], dist: 'd1' },
      { type: 'RECEIPT', wamid: 'w1', at: 12, member: 'a', device: 1 },
      { type: 'RECEIPT', wamid: 'w1', at: 12, member: 'b', device: 1 },
    ], snap));
    expect(ctx(snap).messages[0]!.owed).toEqual({ a: [2], b: [] });
    const due = ctx(snap).messages[0]!.nextAttemptAt!;
    const r = run([{ type: 'RETRANSMIT_DUE', at: due }, { type: 'RELAYED', wamid: 'w1', at: due, present: { a: [1], b: [] } }], snap);
    expect(r.commands[1]).toContainEqual({ type: 'message.forget', wamid: 'w1' });
    expect(ctx(r.snap).messages).toEqual([]);
    expect(ctx(r.snap).expected).toEqual({ a: [1] });
    // The next message is owed by the phone only; a transport naming no device for b cannot drop b's phone.
    const next = run([{ type: 'SEND', wamid: 'w2', at: due + 1 }, { type: 'ENCRYPTED', wamid: 'w2', at: due + 1 }, { type: 'RELAYED', wamid: 'w2', at: due + 1, present: { a: [], b: [] } }], r.snap);
    expect(ctx(next.snap).messages[0]!.owed).toEqual({ a: [1], b: [1] });
  });

  it('a device the transport names that the group knew nothing of: the member\'s kept key copy is sent again, once', () => {
    const { snap } = withMessage();
    const r = run([
      { type: 'RELAYED', wamid: 'w1', at: 11, present: { a: [1, 3], b: [1] } },
      { type: 'RELAYED', wamid: 'w1', at: 12, present: { a: [1, 3], b: [1] } },
    ], snap);
    expect(r.commands[0]).toEqual(expect.arrayContaining([{ type: 'key.share', members: ['a'], ifMissing: true }, { type: 'key.distribute', members: ['a'], dist: 'd1' }]));
    expect(types(r.commands[1]!)).not.toContain('key.distribute');
    // Not owed by it until the member's conversation says it encrypted the key for it (its verified list).
    expect(ctx(r.snap).messages[0]!.owed.a).toEqual([1]);
  });

  it('a member who joins gets the current key; nothing is rotated', () => {
    const { snap } = withMessage();
    const r = run([{ type: 'MEMBERS', at: 20, members: ['a', 'b', 'c'] }], snap);
    expect(r.commands[0]).toEqual([{ type: 'key.share', members: ['c'] }, { type: 'key.distribute', members: ['c'], dist: 'd1' }]);
    expect(ctx(r.snap).messages[0]!.owed).toEqual({ a: [1], b: [1] });
  });

  it('resent with backoff while receipts are missing; failed with 131026 at its TTL unless delivered', () => {
    const { snap } = withMessage();
    const due = ctx(snap).messages[0]!.nextAttemptAt!;
    const r = run([{ type: 'RETRANSMIT_DUE', at: due }, { type: 'RELAYED', wamid: 'w1', at: due }], snap);
    expect(r.commands[0]).toContainEqual({ type: 'transport.relay', wamid: 'w1' });
    expect(ctx(r.snap).messages[0]!.attempts).toBe(2);
    const end = run([{ type: 'RETRANSMIT_DUE', at: 10 + 60_000 }], r.snap);
    expect(end.commands[0]).toEqual(expect.arrayContaining([
      { type: 'webhook.status', wamid: 'w1', status: 'failed', at: 60_010, errorCode: 131026 },
      { type: 'message.forget', wamid: 'w1' },
    ]));
    expect(ctx(end.snap).messages).toEqual([]);
  });

  it('a member\'s message waits for the member\'s key, then is decrypted; a non-member\'s is ignored', () => {
    const { snap } = withMessage();
    const r = run([
      { type: 'ENVELOPE', id: 'm1', at: 30, member: 'a' },
      { type: 'MESSAGE_HELD', id: 'm1', at: 30, member: 'a' },
      { type: 'ENVELOPE', id: 'm2', at: 30, member: 'zz' },
      { type: 'MEMBER_KEY', at: 31, member: 'a', dist: 'k1' },
      { type: 'MESSAGE_RECEIVED', id: 'm1', at: 31 },
    ], snap);
    expect(r.commands[0]).toEqual([{ type: 'envelope.decrypt', id: 'm1', member: 'a' }]);
    expect(r.commands[2]).toEqual([]);
    expect(r.commands[3]).toEqual([{ type: 'member_key.store', member: 'a', dist: 'k1' }, { type: 'envelope.decrypt', id: 'm1', member: 'a' }]);
    expect(r.commands[4]).toEqual([{ type: 'webhook.message', id: 'm1' }]);
    expect(ctx(r.snap).held).toEqual([]);
  });

  it('deleted: timers cancelled, everything deleted, final', () => {
    const { snap } = withMessage();
    const r = run([{ type: 'DELETED', at: 40 }], snap);
    expect(types(r.commands[0]!)).toEqual(['timer.cancel', 'group.delete']);
    expect(r.snap.status).toBe('done');
  });
});
