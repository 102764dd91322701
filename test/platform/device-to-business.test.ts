import { CiphertextMessageType } from '@signalapp/libsignal-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { Platform } from '../../src/platform/server.ts';
import { call, drainEvents, quietPlatform, registerDevice, TestBusiness } from './helpers.ts';

const BIZ = '15550200200';
let p: Platform;
afterEach(async () => {
  await p?.app.close();
});

describe('device → business', () => {
  it('encrypts a user message to the business bundle and the business decrypts it', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557654321');
    const biz = new TestBusiness(BIZ);
    expect((await call(p.app, 'PUT', `/v1/keys/${BIZ}`, biz.upload())).status).toBe(200);

    const sent = await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { to: '+1 555-020-0200', text: 'is it in stock?' });
    expect(sent.status).toBe(200);
    expect(sent.json.id).toMatch(/^wamid\./);
    await p.state.settled();
    const [event] = await drainEvents(p.app);
    expect(event).toMatchObject({ kind: 'envelope', id: sent.json.id, from: waId, to: BIZ, type: CiphertextMessageType.PreKey });
    const content = await biz.decrypt(event as { from: string; type: number; body: string });
    expect(content).toMatchObject({
      kind: 'message', id: sent.json.id, seq: 1, from: waId, message: { type: 'text', text: { body: 'is it in stock?' } },
    });
    // The business used one of its one-time keys.
    expect((await call(p.app, 'GET', `/v1/keys/${BIZ}/count`)).json).toEqual({ prekeys: 4, kyber_prekeys: 4 });

    // The business answers on that session: a Whisper message the device shows.
    const reply = await biz.text(waId, 'yes, in blue');
    expect(reply.type).toBe(CiphertextMessageType.Whisper);
    await call(p.app, 'POST', '/v1/envelopes', reply);
    await p.state.settled();
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/messages`)).json.messages).toMatchObject([{ id: reply.id, text: { body: 'yes, in blue' } }]);
    expect((await drainEvents(p.app)).map((e) => e.kind)).toEqual(['receipt']);

    // A quoted reply carries the Cloud API inbound context, with seq 2 on the same session.
    const quoted = await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { to: BIZ, text: 'great', context: { message_id: reply.id } });
    await p.state.settled();
    const [second] = await drainEvents(p.app);
    expect(second).toMatchObject({ id: quoted.json.id, type: CiphertextMessageType.Whisper });
    expect(await biz.decrypt(second as { from: string; type: number; body: string })).toMatchObject({
      seq: 2, message: { type: 'text', text: { body: 'great' }, context: { from: BIZ, id: reply.id } },
    });

    // Structured messages pass through as given.
    const reaction = await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { to: BIZ, type: 'reaction', reaction: { message_id: reply.id, emoji: '👍' } });
    await p.state.settled();
    const [third] = await drainEvents(p.app);
    expect(await biz.decrypt(third as { from: string; type: number; body: string })).toMatchObject({
      id: reaction.json.id, message: { type: 'reaction', reaction: { message_id: reply.id, emoji: '👍' } },
    });
  });

  it('queues read receipts, and a spam report as the number\'s new standing (never who reported)', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557654322');
    const biz = new TestBusiness(BIZ);
    await biz.startSession(p.app, waId);
    const m = await biz.text(waId, 'offer');
    await call(p.app, 'POST', '/v1/envelopes', m);
    await p.state.settled();
    await drainEvents(p.app);

    expect(await call(p.app, 'POST', `/sim/devices/${waId}/read`, { message_id: m.id })).toEqual({ status: 200, json: { success: true } });
    expect(await call(p.app, 'POST', `/sim/devices/${waId}/report-spam`, { from: BIZ })).toEqual({ status: 200, json: { success: true } });
    await p.state.settled();
    const events = await drainEvents(p.app);
    expect(events).toMatchObject([
      { kind: 'receipt', status: 'read', id: m.id, from: waId, to: BIZ },
      { kind: 'integrity', to: BIZ, event: 'FLAGGED', quality_rating: 'YELLOW', current_limit: 'TIER_250', blocked: false },
    ]);
    expect(JSON.stringify(events[1])).not.toContain(waId);
    expect(await call(p.app, 'POST', `/sim/devices/${waId}/read`, { message_id: 'wamid.never' })).toEqual({ status: 404, json: { error: 'unknown_message' } });
  });

  it('answers 404 unknown_address when the business never published a bundle', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15557654323');
    expect(await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { to: '15550000000', text: 'hi' })).toEqual({ status: 404, json: { error: 'unknown_address' } });
    expect(await call(p.app, 'POST', '/sim/devices/15550000001/messages', { to: BIZ, text: 'hi' })).toEqual({ status: 404, json: { error: 'unknown_device' } });
  });
});
