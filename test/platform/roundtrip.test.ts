import { CiphertextMessageType, DecryptionErrorMessage, PlaintextContent } from '@signalapp/libsignal-client';
import { afterEach, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { buildPlatform, type Platform } from '../../src/platform/server.ts';
import { call, drainEvents, quietPlatform, registerDevice, TestBusiness } from './helpers.ts';

const BIZ = '15550100100';
let p: Platform;
afterEach(async () => {
  await p?.app.close();
});

async function setup(): Promise<{ biz: TestBusiness; waId: string }> {
  p = quietPlatform();
  const waId = await registerDevice(p.app, '+1 (555) 123-4567');
  expect(waId).toBe('15551234567');
  const biz = new TestBusiness(BIZ);
  await biz.startSession(p.app, waId);
  return { biz, waId };
}

describe('business → device round trip', () => {
  it('delivers three messages, acknowledges the session once and shows them in order', async () => {
    const { biz, waId } = await setup();
    const envs = [await biz.text(waId, 'one'), await biz.text(waId, 'two'), await biz.text(waId, 'three')];
    expect(envs.map((e) => e.type)).toEqual([3, 3, 3]);
    const post = await call(p.app, 'POST', '/v1/envelopes', { envelopes: envs });
    expect(post).toEqual({ status: 202, json: { accepted: 3, rejected: [] } });

    // Long poll until all four events are in: three receipts and one session ack.
    const events: any[] = [];
    while (events.length < 4) {
      const r = await call(p.app, 'POST', '/v1/events/pull', { max: 10, wait_ms: 5000 });
      expect(r.status).toBe(200);
      events.push(...r.json.events);
    }
    const receipts = events.filter((e) => e.kind === 'receipt');
    expect(receipts.map((e) => [e.status, e.id, e.from, e.to])).toEqual(envs.map((e) => ['delivered', e.id, waId, BIZ]));
    for (const e of events) {
      expect(typeof e.event_id).toBe('string');
      expect(e.timestamp).toMatch(/^\d{10}$/);
    }
    const acks = events.filter((e) => e.kind === 'envelope');
    expect(acks).toHaveLength(1);
    expect(acks[0]).toMatchObject({ from: waId, to: BIZ, type: CiphertextMessageType.Whisper });
    expect(await biz.decrypt(acks[0])).toEqual({ v: 1, kind: 'session_ack' });
    expect(await call(p.app, 'POST', '/v1/events/ack', { event_ids: events.map((e) => e.event_id) })).toEqual({ status: 200, json: { acked: 4 } });
    expect(await drainEvents(p.app)).toEqual([]);

    // The acknowledged session now sends Whisper messages.
    expect((await biz.text(waId, 'four')).type).toBe(CiphertextMessageType.Whisper);

    const shown = await call(p.app, 'GET', `/sim/devices/${waId}/messages`);
    expect(shown.json.messages).toEqual(envs.map((e, i) => ({
      id: e.id, from: BIZ, type: 'text', text: { body: ['one', 'two', 'three'][i] }, timestamp: expect.stringMatching(/^\d+$/), arrivals: 1,
    })));
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json).toEqual({
      decrypted: 3, duplicates: 0, key_reuse: 0, failures: {}, held: 0, identity_changes: 0,
    });
  });

  it('counts a duplicate envelope as a second arrival and acknowledges it again', async () => {
    const { biz, waId } = await setup();
    const env = await biz.text(waId, 'hello');
    expect((await call(p.app, 'POST', '/v1/envelopes', env))).toEqual({ status: 202, json: { accepted: 1 } });
    await p.state.settled();
    expect((await call(p.app, 'POST', '/v1/envelopes', env)).status).toBe(202);
    await p.state.settled();

    const receipts = (await drainEvents(p.app)).filter((e) => e.kind === 'receipt');
    expect(receipts.map((e) => e.kind === 'receipt' && [e.status, e.id])).toEqual([['delivered', env.id], ['delivered', env.id]]);
    const msgs = (await call(p.app, 'GET', `/sim/devices/${waId}/messages`)).json.messages;
    expect(msgs).toHaveLength(1);
    expect(msgs[0].arrivals).toBe(2);
    const stats = (await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json;
    expect(stats).toMatchObject({ decrypted: 1, duplicates: 1, key_reuse: 0, failures: {} });
  });

  it('holds a message until the gap before it fills, and a skip releases a gap', async () => {
    const { biz, waId } = await setup();
    const m1 = await biz.text(waId, 'first');
    const m2 = await biz.text(waId, 'second');
    const m4 = await biz.text(waId, 'fourth', { seq: 4 });
    await call(p.app, 'POST', '/v1/envelopes', m2);
    await p.state.settled();
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/messages`)).json.messages).toEqual([]);
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json.held).toBe(1);
    expect((await drainEvents(p.app)).filter((e) => e.kind === 'receipt')).toEqual([]);

    await call(p.app, 'POST', '/v1/envelopes', m1);
    await call(p.app, 'POST', '/v1/envelopes', m4);
    await p.state.settled();
    const shown = (await call(p.app, 'GET', `/sim/devices/${waId}/messages`)).json.messages;
    expect(shown.map((m: { id: string }) => m.id)).toEqual([m1.id, m2.id]);
    const receipts = (await drainEvents(p.app)).filter((e) => e.kind === 'receipt').map((e) => e.kind === 'receipt' && e.id);
    expect(receipts).toEqual([m1.id, m2.id]);

    // seq 3 failed on the router side: the skip releases seq 4.
    await call(p.app, 'POST', '/v1/envelopes', await biz.envelope(waId, 'wamid.skip-3', { v: 1, kind: 'skip', seq: 3 }));
    await p.state.settled();
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/messages`)).json.messages.map((m: { id: string }) => m.id)).toEqual([m1.id, m2.id, m4.id]);
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json.held).toBe(0);
    // The skip notice itself is acknowledged too, so the router stops retransmitting it.
    expect((await drainEvents(p.app)).map((e) => e.kind === 'receipt' && e.id)).toEqual([m4.id, 'wamid.skip-3']);
  });

  it('answers an undecryptable envelope with a retry request naming it', async () => {
    const { biz, waId } = await setup();
    const good = await biz.text(waId, 'intact');
    await call(p.app, 'POST', '/v1/envelopes', good);
    await p.state.settled();
    const ack = (await drainEvents(p.app)).find((e) => e.kind === 'envelope');
    await biz.decrypt(ack as { from: string; type: number; body: string });

    const next = await biz.text(waId, 'to be corrupted');
    expect(next.type).toBe(CiphertextMessageType.Whisper);
    const body = Buffer.from(next.body, 'base64');
    body[body.length - 12]! ^= 1;
    await call(p.app, 'POST', '/v1/envelopes', { ...next, body: body.toString('base64') });
    await p.state.settled();
    const events = await drainEvents(p.app);
    expect(events).toHaveLength(1);
    const retry = events[0]!;
    expect(retry).toMatchObject({ kind: 'envelope', id: next.id, from: waId, to: BIZ, type: 8 });
    const dem = DecryptionErrorMessage.extractFromSerializedBody(
      PlaintextContent.deserialize(new Uint8Array(Buffer.from(retry.kind === 'envelope' ? retry.body : '', 'base64'))).body(),
    );
    expect(dem.deviceId()).toBe(1);
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json).toMatchObject({ failures: { invalid_message: 1 }, key_reuse: 0 });

    // The session survived: the intact copy still decrypts.
    await call(p.app, 'POST', '/v1/envelopes', next);
    await p.state.settled();
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/messages`)).json.messages.map((m: { text: { body: string } }) => m.text.body)).toEqual(['intact', 'to be corrupted']);
  });

  it('records a reused message key as key_reuse', async () => {
    const { biz, waId } = await setup();
    const snapshot = await biz.stores.sessions.getSession(biz.device(waId));
    const a = await biz.text(waId, 'a');
    // Rewind the business's session: the next message reuses a's message key under another id.
    await biz.stores.sessions.saveSession(biz.device(waId), snapshot!);
    const b = await biz.text(waId, 'b');
    await call(p.app, 'POST', '/v1/envelopes', { envelopes: [a, b] });
    await p.state.settled();
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json).toMatchObject({ decrypted: 1, key_reuse: 1 });
  });
});

describe('privacy of the platform logs', () => {
  it('never logs message text and masks phone numbers', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } }));
    p = buildPlatform({ logger });
    const waId = await registerDevice(p.app, '+15551239876');
    const biz = new TestBusiness(BIZ);
    await biz.startSession(p.app, waId);
    await call(p.app, 'PUT', `/v1/keys/${BIZ}`, biz.upload());
    const canary = 'CANARY-7f3a-plaintext';
    await call(p.app, 'POST', '/v1/envelopes', await biz.text(waId, canary));
    const bad = await biz.text(waId, `${canary} corrupted`);
    await call(p.app, 'POST', '/v1/envelopes', { ...bad, body: Buffer.from('garbage-garbage-garbage').toString('base64') });
    await call(p.app, 'POST', `/sim/devices/${waId}/messages`, { to: BIZ, text: `${canary} reply` });
    await p.state.settled();
    await drainEvents(p.app);
    expect(lines.length).toBeGreaterThan(0);
    const all = lines.join('');
    expect(all).not.toContain('CANARY');
    expect(all).not.toContain(waId);
    expect(all).not.toContain(BIZ);
  });
});
