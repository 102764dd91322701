import { IdentityChange } from '@signalapp/libsignal-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { Platform } from '../../src/platform/server.ts';
import { bundleFromWire } from '../../src/signal/bundle.ts';
import { call, drainEvents, quietPlatform, registerDevice, TestBusiness } from './helpers.ts';

const BIZ = '15550500500';
let p: Platform;
afterEach(async () => {
  await p?.app.close();
});

describe('device registration and reinstall', () => {
  it('is idempotent without reinstall and gives a fresh identity with it', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15556665555', { prekeys: 10 });
    const before = (await call(p.app, 'GET', `/v1/keys/${waId}`)).json;

    expect(await registerDevice(p.app, '15556665555')).toBe(waId);
    const same = (await call(p.app, 'GET', `/v1/keys/${waId}`)).json;
    expect(same.identity_key).toBe(before.identity_key);
    expect(same.registration_id).toBe(before.registration_id);

    expect(await registerDevice(p.app, '+15556665555', { reinstall: true })).toBe(waId);
    const after = (await call(p.app, 'GET', `/v1/keys/${waId}`)).json;
    expect(after.identity_key).not.toBe(before.identity_key);
    expect((await call(p.app, 'GET', `/sim/devices/${waId}`)).json.identity_key).toBe(after.identity_key);
  });

  it('after a reinstall the old session fails with a retry request and a new bundle recovers', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15556665556');
    const biz = new TestBusiness(BIZ);
    await biz.startSession(p.app, waId);
    await call(p.app, 'POST', '/v1/envelopes', await biz.text(waId, 'before'));
    await p.state.settled();
    const ack = (await drainEvents(p.app)).find((e) => e.kind === 'envelope');
    await biz.decrypt(ack as { from: string; type: number; body: string });

    await registerDevice(p.app, '+15556665556', { reinstall: true });
    const lost = await biz.text(waId, 'after reinstall');
    await call(p.app, 'POST', '/v1/envelopes', lost);
    await p.state.settled();
    const [retry] = await drainEvents(p.app);
    expect(retry).toMatchObject({ kind: 'envelope', type: 8, id: lost.id });
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json.failures).toEqual({ no_session: 1 });

    // What the router does: accept the new identity, build a new session, re-send the message.
    const bundle = bundleFromWire((await call(p.app, 'GET', `/v1/keys/${waId}`)).json);
    expect(await biz.stores.identities.saveIdentity(biz.device(waId), bundle.identityKey())).toBe(IdentityChange.ReplacedExisting);
    await biz.startSession(p.app, waId);
    await call(p.app, 'POST', '/v1/envelopes', await biz.text(waId, 'after reinstall', { id: lost.id, seq: 2 }));
    await p.state.settled();
    const shown = (await call(p.app, 'GET', `/sim/devices/${waId}/messages`)).json.messages;
    expect(shown.map((m: { text: { body: string }; arrivals: number }) => [m.text.body, m.arrivals])).toEqual([['before', 1], ['after reinstall', 1]]);
    expect((await call(p.app, 'GET', `/sim/devices/${waId}/stats`)).json).toMatchObject({ key_reuse: 0, held: 0 });
  });
});
