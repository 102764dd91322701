import { describe, expect, it } from 'vitest';
import { initialTransition, transition, type AnyMachineSnapshot } from 'xstate';
import type { Command, CommandBatch } from '../../machines/commands.ts';
import { conversationMachine, UNDELIVERABLE, type ConversationEvent } from '../../machines/conversation.ts';

/** Feeds events to the pure machine; returns the last snapshot and every command emitted, per event. */
function run(events: ConversationEvent[], from?: AnyMachineSnapshot) {
  let [s] = initialTransition(conversationMachine, { conversationId: 'c1', retryBaseMs: 1000 }) as unknown as [AnyMachineSnapshot];
  if (from) s = from;
  const emitted: Command[][] = [];
  for (const e of events) {
    const [next, actions] = transition(conversationMachine, s as never, e as never) as unknown as [AnyMachineSnapshot, { type: string; params?: unknown }[]];
    s = next;
    emitted.push(actions.filter((a) => a.type === 'emitCommands').flatMap((a) => (a.params as CommandBatch).list));
  }
  return { s, emitted, all: emitted.flat() };
}

describe('conversation machine', () => {
  it('negotiates a session before the first send, then encrypts queued messages in order', () => {
    const { s, emitted } = run([
      { type: 'SEND', wamid: 'w1', at: 1 },
      { type: 'SEND', wamid: 'w2', at: 2 },
      { type: 'BUNDLE_FETCHED', at: 3 },
    ]);
    expect(emitted[0]).toEqual([{ type: 'bundle.fetch' }]);
    expect(emitted[1]).toEqual([]);
    expect(emitted[2]).toEqual([
      { type: 'message.encrypt', wamid: 'w1', seq: 1 },
      { type: 'message.encrypt', wamid: 'w2', seq: 2 },
    ]);
    expect(s.value).toBe('established');
    expect(s.context.messages.map((m: { state: string }) => m.state)).toEqual(['encrypting', 'encrypting']);
  });

  it('sends after encryption, reports sent on transport acceptance and delivered on the receipt', () => {
    const { s, emitted } = run([
      { type: 'SEND', wamid: 'w1', at: 1 },
      { type: 'BUNDLE_FETCHED', at: 2 },
      { type: 'ENCRYPTED', wamid: 'w1', at: 3, messageType: 3 },
      { type: 'TRANSPORT_ACCEPTED', wamid: 'w1', at: 4 },
      { type: 'DELIVERED', wamid: 'w1', at: 5 },
      { type: 'DELIVERED', wamid: 'w1', at: 6 },
    ]);
    expect(emitted[2]).toEqual([{ type: 'transport.send', wamid: 'w1' }]);
    expect(emitted[3]).toEqual([{ type: 'webhook.status', wamid: 'w1', status: 'sent', at: 4 }]);
    expect(emitted[4]).toEqual([
      { type: 'webhook.status', wamid: 'w1', status: 'delivered', at: 5 },
      { type: 'message.forget', wamid: 'w1' },
    ]);
    expect(emitted[5]).toEqual([]); // a repeated receipt changes nothing
    expect(s.context.messages).toEqual([]);
  });

  it('keeps statuses monotonic: a receipt before the transport answer reports sent first', () => {
    const { all } = run([
      { type: 'SEND', wamid: 'w1', at: 1 },
      { type: 'BUNDLE_FETCHED', at: 2 },
      { type: 'ENCRYPTED', wamid: 'w1', at: 3, messageType: 3 },
      { type: 'DELIVERED', wamid: 'w1', at: 4 },
      { type: 'TRANSPORT_ACCEPTED', wamid: 'w1', at: 5 },
    ]);
    const statuses = all.filter((c) => c.type === 'webhook.status').map((c) => (c as { status: string }).status);
    expect(statuses).toEqual(['sent', 'delivered']);
  });

  it('encrypts directly once established and numbers messages consecutively', () => {
    const first = run([
      { type: 'SEND', wamid: 'w1', at: 1 },
      { type: 'BUNDLE_FETCHED', at: 2 },
    ]);
    const { emitted } = run([{ type: 'SEND', wamid: 'w2', at: 3 }, { type: 'SEND', wamid: 'w2', at: 4 }], first.s);
    expect(emitted[0]).toEqual([{ type: 'message.encrypt', wamid: 'w2', seq: 2 }]);
    expect(emitted[1]).toEqual([]); // the same wamid twice is one message
  });

  it('retries a failed bundle fetch later with backoff, through a durable timer', () => {
    const { s, emitted } = run([
      { type: 'SEND', wamid: 'w1', at: 1000 },
      { type: 'BUNDLE_FAILED', at: 1000, reason: 'unavailable' },
      { type: 'BUNDLE_RETRY_DUE', at: 2000 },
      { type: 'BUNDLE_FAILED', at: 2000, reason: 'unavailable' },
    ]);
    expect(emitted[1]).toEqual([{ type: 'timer.schedule', id: 'bundle:1', at: 2000, event: 'BUNDLE_RETRY_DUE' }]);
    expect(emitted[2]).toEqual([{ type: 'bundle.fetch' }]);
    expect(emitted[3]).toEqual([{ type: 'timer.schedule', id: 'bundle:2', at: 4000, event: 'BUNDLE_RETRY_DUE' }]);
    expect(s.value).toBe('noSession');
  });

  it('fails queued messages with 131026 when the recipient is unknown', () => {
    const { s, emitted } = run([
      { type: 'SEND', wamid: 'w1', at: 1 },
      { type: 'BUNDLE_FAILED', at: 2, reason: 'unknown_recipient' },
    ]);
    expect(emitted[1]).toEqual([
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
    const { emitted } = run([
      { type: 'ENVELOPE', id: 'e1', at: 1, messageType: 2 },
      { type: 'SESSION_ACK', at: 2 },
    ]);
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
    expect(JSON.stringify(conversationMachine.getPersistedSnapshot(y.s as never))).toBe(
      JSON.stringify(conversationMachine.getPersistedSnapshot(x.s as never)),
    );
  });

  it('is pure: the same events give the same commands and snapshot', () => {
    const events: ConversationEvent[] = [
      { type: 'SEND', wamid: 'w1', at: 1 }, { type: 'BUNDLE_FETCHED', at: 2 },
      { type: 'ENCRYPTED', wamid: 'w1', at: 3, messageType: 3 }, { type: 'TRANSPORT_ACCEPTED', wamid: 'w1', at: 4 },
    ];
    const a = run(events);
    const b = run(events);
    expect(b.all).toEqual(a.all);
    expect(b.s.context).toEqual(a.s.context);
  });
});
