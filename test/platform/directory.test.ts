import { PreKeyBundle } from '@signalapp/libsignal-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { Platform } from '../../src/platform/server.ts';
import { bundleFromWire, bundleToWire, keyUploadFromRecords, keyUploadToWire, WireFormatError } from '../../src/signal/bundle.ts';
import { generateKeys } from '../../src/signal/prekeys.ts';
import { call, quietPlatform, registerDevice } from './helpers.ts';

let p: Platform;
afterEach(async () => {
  await p?.app.close();
});

describe('prekey directory', () => {
  it('hands a one-time prekey out once, then serves the last-resort Kyber key', async () => {
    p = quietPlatform();
    const keys = generateKeys({ oneTime: 1 });
    const up = await call(p.app, 'PUT', '/v1/keys/15550001111', keyUploadToWire(keyUploadFromRecords(keys)));
    expect(up).toEqual({ status: 200, json: { prekeys: 1, kyber_prekeys: 1 } });

    const first = await call(p.app, 'GET', '/v1/keys/15550001111');
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({
      address: '15550001111',
      registration_id: keys.registrationId,
      device_id: 1,
      identity_key: Buffer.from(keys.identity.publicKey.serialize()).toString('base64'),
      signed_prekey: { id: keys.signedPreKey.id() },
      kyber_prekey: { id: keys.kyberPreKeys[0]!.id() },
      prekey: { id: keys.preKeys[0]!.id() },
    });
    expect((await call(p.app, 'GET', '/v1/keys/15550001111/count')).json).toEqual({ prekeys: 0, kyber_prekeys: 0 });

    const second = await call(p.app, 'GET', '/v1/keys/15550001111');
    expect(second.status).toBe(200);
    expect(second.json.prekey).toBeUndefined();
    expect(second.json.kyber_prekey.id).toBe(keys.kyberLastResort.id());
    expect(bundleFromWire(second.json)).toBeInstanceOf(PreKeyBundle);
  });

  it('replaces one-time keys on a new upload and keeps them on an upload without any', async () => {
    p = quietPlatform();
    const keys = generateKeys({ oneTime: 3 });
    await call(p.app, 'PUT', '/v1/keys/biz.a', keyUploadToWire(keyUploadFromRecords(keys)));
    const fewer = generateKeys({ oneTime: 2 });
    const again = { ...keys, preKeys: fewer.preKeys, kyberPreKeys: [] };
    expect((await call(p.app, 'PUT', '/v1/keys/biz.a', keyUploadToWire(keyUploadFromRecords(again)))).json).toEqual({ prekeys: 2, kyber_prekeys: 3 });
    const none = keyUploadToWire(keyUploadFromRecords({ ...keys, preKeys: [], kyberPreKeys: [] }));
    expect((await call(p.app, 'PUT', '/v1/keys/biz.a', none)).json).toEqual({ prekeys: 2, kyber_prekeys: 3 });
    // A new identity invalidates the old identity's one-time keys.
    const other = keyUploadToWire(keyUploadFromRecords({ ...generateKeys({ oneTime: 0 }) }));
    expect((await call(p.app, 'PUT', '/v1/keys/biz.a', other)).json).toEqual({ prekeys: 0, kyber_prekeys: 0 });
  });

  it('refuses an upload whose signatures do not verify with 422', async () => {
    p = quietPlatform();
    const keys = generateKeys({ oneTime: 2 });
    const good = keyUploadToWire(keyUploadFromRecords(keys));
    const stranger = keyUploadToWire(keyUploadFromRecords(generateKeys({ oneTime: 2 })));

    const forgedSigned = { ...good, signed_prekey: { ...good.signed_prekey, signature: stranger.signed_prekey.signature } };
    expect(await call(p.app, 'PUT', '/v1/keys/15550002222', forgedSigned)).toEqual({ status: 422, json: { error: 'bad_signature' } });
    const forgedLastResort = { ...good, kyber_last_resort: stranger.kyber_last_resort };
    expect((await call(p.app, 'PUT', '/v1/keys/15550002222', forgedLastResort)).status).toBe(422);
    const forgedOneTime = { ...good, kyber_prekeys: [good.kyber_prekeys![0]!, stranger.kyber_prekeys![1]!] };
    expect((await call(p.app, 'PUT', '/v1/keys/15550002222', forgedOneTime)).status).toBe(422);
    // Nothing was stored by the refused uploads.
    expect((await call(p.app, 'GET', '/v1/keys/15550002222')).status).toBe(404);
  });

  it('answers 404 for unknown addresses and 400 for malformed uploads', async () => {
    p = quietPlatform();
    expect(await call(p.app, 'GET', '/v1/keys/15559999999')).toEqual({ status: 404, json: { error: 'unknown_address' } });
    expect(await call(p.app, 'GET', '/v1/keys/15559999999/count')).toEqual({ status: 404, json: { error: 'unknown_address' } });
    const good = keyUploadToWire(keyUploadFromRecords(generateKeys({ oneTime: 1 })));
    const badKey = await call(p.app, 'PUT', '/v1/keys/15550003333', { ...good, identity_key: Buffer.from('nope').toString('base64') });
    expect(badKey.status).toBe(400);
    expect(badKey.json.error).toMatch(/identity_key/);
    const missing = await call(p.app, 'PUT', '/v1/keys/15550003333', { ...good, signed_prekey: undefined });
    expect(missing.status).toBe(400);
    expect(missing.json.error).toMatch(/^invalid key upload: signed_prekey/);
    const notB64 = await call(p.app, 'PUT', '/v1/keys/15550003333', { ...good, identity_key: 'not base64!' });
    expect(notB64.status).toBe(400);
  });

  it('round-trips a bundle through the wire format and rejects bad wire input', () => {
    const keys = generateKeys({ oneTime: 1 });
    const bundle = PreKeyBundle.new(
      keys.registrationId, 1, keys.preKeys[0]!.id(), keys.preKeys[0]!.publicKey(),
      keys.signedPreKey.id(), keys.signedPreKey.publicKey(), keys.signedPreKey.signature(), keys.identity.publicKey,
      keys.kyberLastResort.id(), keys.kyberLastResort.publicKey(), keys.kyberLastResort.signature(),
    );
    const wire = bundleToWire('15550004444', bundle);
    const back = bundleFromWire(JSON.parse(JSON.stringify(wire)));
    expect(bundleToWire('15550004444', back)).toEqual(wire);
    expect(() => bundleFromWire({ ...wire, kyber_prekey: { ...wire.kyber_prekey, public_key: wire.signed_prekey.public_key } })).toThrow(/kyber_prekey.public_key/);
    expect(() => bundleFromWire({ ...wire, registration_id: 0 })).toThrow(WireFormatError);
    expect(() => bundleFromWire(null)).toThrow(/invalid bundle/);
  });

  it('lets devices replenish one-time keys when fewer than 5 are left', async () => {
    p = quietPlatform();
    const waId = await registerDevice(p.app, '+15550005555', { prekeys: 6 });
    expect((await call(p.app, 'GET', `/v1/keys/${waId}/count`)).json).toEqual({ prekeys: 6, kyber_prekeys: 6 });
    const ids = new Set<number>();
    for (let i = 0; i < 2; i++) ids.add((await call(p.app, 'GET', `/v1/keys/${waId}`)).json.prekey.id);
    await p.state.settled();
    expect((await call(p.app, 'GET', `/v1/keys/${waId}/count`)).json).toEqual({ prekeys: 6, kyber_prekeys: 6 });
    // Fresh ids: a replenished key never repeats one handed out before.
    const next = (await call(p.app, 'GET', `/v1/keys/${waId}`)).json.prekey.id;
    expect(ids.has(next)).toBe(false);
  });
});
