import { randomBytes } from 'node:crypto';
import * as S from '@signalapp/libsignal-client';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BusinessPreKeys, PREKEY_BATCH, ROTATE_EVERY_MS } from '../../src/signal/business-prekeys.ts';
import { bundleFromWire, keyUploadFromWire, findBadSignature } from '../../src/signal/bundle.ts';
import { ConversationCrypto } from '../../src/signal/conversation-crypto.ts';
import { deletePrefix, testPrefix, testRedisUrl } from '../helpers/redis.ts';

const DAY = 86_400_000;

describe('business prekeys on Redis', () => {
  let redis: Redis;
  let prefix: string;
  const identity = { identity: S.IdentityKeyPair.generate(), registrationId: 4242 };
  const dk = randomBytes(32);
  let pk: BusinessPreKeys;

  beforeAll(() => {
    redis = new Redis(testRedisUrl());
    prefix = testPrefix('pk');
    pk = new BusinessPreKeys(redis, { hash: `${prefix}:pk`, lastResortUsed: `${prefix}:lru` }, dk, identity, 30 * DAY);
  });
  afterAll(async () => {
    await deletePrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  /** A user device that opens a session from the business's published upload, and writes once. */
  async function userWrites(upload: ReturnType<typeof keyUploadFromWire>, oneTime: boolean) {
    const bundle = bundleFromWire({
      address: 'biz', registration_id: upload.registrationId, device_id: 1,
      identity_key: Buffer.from(upload.identityKey.serialize()).toString('base64'),
      signed_prekey: { id: upload.signedPreKey.id, public_key: Buffer.from(upload.signedPreKey.publicKey.serialize()).toString('base64'), signature: Buffer.from(upload.signedPreKey.signature).toString('base64') },
      kyber_prekey: (() => {
        const k = oneTime ? upload.kyberPreKeys[0]! : upload.kyberLastResort;
        return { id: k.id, public_key: Buffer.from(k.publicKey.serialize()).toString('base64'), signature: Buffer.from(k.signature).toString('base64') };
      })(),
      ...(oneTime ? { prekey: { id: upload.preKeys[0]!.id, public_key: Buffer.from(upload.preKeys[0]!.publicKey.serialize()).toString('base64') } } : {}),
    });
    const user = new ConversationCrypto({ identity: S.IdentityKeyPair.generate(), registrationId: 7 }, '15551110000', 'biz', { session: null, remoteIdentity: null });
    await user.processBundle(bundle, new Date());
    return user.encrypt(new TextEncoder().encode('hello business'), new Date());
  }

  async function businessDecrypts(m: { type: number; body: Uint8Array }) {
    const biz = new ConversationCrypto(identity, 'biz', '15551110000', { session: null, remoteIdentity: null });
    const stores = pk.stores();
    const out = await biz.decrypt(m, stores);
    await stores.commit();
    return new TextDecoder().decode(out);
  }

  it('publishes a full, correctly signed bundle first, then nothing until keys run low', async () => {
    const now = Date.now();
    const first = keyUploadFromWire(await pk.plan(null, now));
    expect(findBadSignature(first)).toBeNull();
    expect(first.preKeys).toHaveLength(PREKEY_BATCH);
    expect(first.kyberPreKeys.length).toBeGreaterThanOrEqual(PREKEY_BATCH - 1);
    expect(await pk.plan({ prekeys: 50, kyber_prekeys: 50 }, now + 1000)).toBeNull();
    const topUp = keyUploadFromWire(await pk.plan({ prekeys: 3, kyber_prekeys: 50 }, now + 2000));
    expect(topUp.preKeys[0]!.id).toBeGreaterThan(first.preKeys.at(-1)!.id); // fresh ids, never reused
    // Private keys are sealed at rest: nothing in the hash parses as a raw key record.
    const raw = await redis.hgetall(`${prefix}:pk`);
    expect(Object.entries(raw).filter(([f]) => /^(ec|ky|sp|lr):/.test(f)).every(([, v]) => v.startsWith('v1.'))).toBe(true);
  });

  it('decrypts a first message on a one-time key and consumes it only after commit', async () => {
    const up = keyUploadFromWire(await pk.plan(null, Date.now()));
    const m = await userWrites(up, true);
    expect(await businessDecrypts(m)).toBe('hello business');
    expect(await redis.hexists(`${prefix}:pk`, `ec:${up.preKeys[0]!.id}`)).toBe(0);
    expect(await redis.hexists(`${prefix}:pk`, `ky:${up.kyberPreKeys[0]!.id}`)).toBe(0);
  });

  it('rejects a PreKey message replayed on the last-resort key', async () => {
    const up = keyUploadFromWire(await pk.plan(null, Date.now()));
    const m = await userWrites(up, false);
    expect(await businessDecrypts(m)).toBe('hello business');
    await expect(businessDecrypts(m)).rejects.toThrow(/markKyberPreKeyUsed/);
  });

  it('rotates signed and last-resort keys, keeps the old ones while messages may live, then prunes them', async () => {
    const t0 = Date.now() + 10 * DAY;
    const before = keyUploadFromWire(await pk.plan({ prekeys: 50, kyber_prekeys: 50 }, t0));
    const pending = await userWrites(before, false); // a message written against the old keys, still in flight
    const rotated = keyUploadFromWire(await pk.plan({ prekeys: 50, kyber_prekeys: 50 }, t0 + ROTATE_EVERY_MS));
    expect(rotated.signedPreKey.id).not.toBe(before.signedPreKey.id);
    expect(rotated.kyberLastResort.id).not.toBe(before.kyberLastResort.id);
    expect(await businessDecrypts(pending)).toBe('hello business'); // old private keys still there
    await pk.plan({ prekeys: 50, kyber_prekeys: 50 }, t0 + ROTATE_EVERY_MS + 31 * DAY);
    expect(await redis.hexists(`${prefix}:pk`, `sp:${before.signedPreKey.id}`)).toBe(0);
    expect(await redis.hexists(`${prefix}:pk`, `lr:${before.kyberLastResort.id}`)).toBe(0);
  });
});
