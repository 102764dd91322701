import { describe, expect, it } from 'vitest';
import * as S from '@signalapp/libsignal-client';
import { classifySignalError, type SignalFailure } from '../../src/signal/classify.ts';
import { ConversationCrypto } from '../../src/signal/conversation-crypto.ts';
import { generateKeys, type GeneratedKeys } from '../../src/signal/prekeys.ts';
import { MemSessionStore, PartyStores } from '../../src/platform/device-stores.ts';

// Pinned to the installed libsignal: these tests produce each failure for real and check that the
// classifier still recognises libsignal's (mostly Generic, told-apart-by-text) errors.
const pkgVersion = (await import('@signalapp/libsignal-client/package.json', { with: { type: 'json' } })).default.version;

const BIZ = '15550009999';
const USR = '15551230000';
const te = new TextEncoder();

function bundleOf(k: GeneratedKeys, oneTime: boolean, kyber: S.KyberPreKeyRecord = oneTime ? k.kyberPreKeys[0]! : k.kyberLastResort): S.PreKeyBundle {
  const pre = oneTime ? k.preKeys[0]! : null;
  return S.PreKeyBundle.new(
    k.registrationId, 1, pre ? pre.id() : null, pre ? pre.publicKey() : null,
    k.signedPreKey.id(), k.signedPreKey.publicKey(), k.signedPreKey.signature(), k.identity.publicKey,
    kyber.id(), kyber.publicKey(), kyber.signature(),
  );
}

function parties(oneTime = true) {
  const bizKeys = { identity: S.IdentityKeyPair.generate(), registrationId: 77 };
  const router = new ConversationCrypto(bizKeys, BIZ, USR, { session: null, remoteIdentity: null });
  const devKeys = generateKeys({ oneTime: 2 });
  const device = new PartyStores(devKeys);
  return { router, device, devKeys, bizKeys, bundle: bundleOf(devKeys, oneTime) };
}

const bizAddr = S.ProtocolAddress.new(BIZ, 1);
const usrAddr = S.ProtocolAddress.new(USR, 1);

async function deviceDecrypt(d: PartyStores, m: { type: number; body: Uint8Array }): Promise<Uint8Array> {
  const body = new Uint8Array(m.body);
  return m.type === S.CiphertextMessageType.PreKey
    ? S.signalDecryptPreKey(S.PreKeySignalMessage.deserialize(body), bizAddr, usrAddr, d.sessions, d.identities, d.preKeys, d.signedPreKeys, d.kyberPreKeys)
    : S.signalDecrypt(S.SignalMessage.deserialize(body), bizAddr, usrAddr, d.sessions, d.identities);
}

async function failure(p: Promise<unknown>): Promise<{ kind: SignalFailure; message: string }> {
  try {
    await p;
  } catch (e) {
    return { kind: classifySignalError(e), message: (e as Error).message };
  }
  throw new Error('expected a failure');
}

describe(`libsignal error classifier (pinned to @signalapp/libsignal-client ${pkgVersion})`, () => {
  it('is tested against 0.103.x, whose error texts it reads', () => {
    expect(pkgVersion).toMatch(/^0\.103\./);
  });

  it('a repeated message is a duplicate (acknowledge it, never reset)', async () => {
    const { router, device, bundle } = parties();
    await router.processBundle(bundle, new Date());
    const m = await router.encrypt(te.encode('one'), new Date());
    await deviceDecrypt(device, m);
    expect(await failure(deviceDecrypt(device, m))).toMatchObject({ kind: 'duplicate' });
  });

  it('no session at the receiver, and none at the sender', async () => {
    const { router, device, bundle, devKeys } = parties();
    await router.processBundle(bundle, new Date());
    await deviceDecrypt(device, await router.encrypt(te.encode('hi'), new Date()));
    // The device replies (Whisper); a fresh install of the business side has no session for it.
    const reply = await S.signalEncrypt(te.encode('ack'), bizAddr, usrAddr, device.sessions, device.identities);
    const fresh = new ConversationCrypto({ identity: S.IdentityKeyPair.generate(), registrationId: 5 }, BIZ, USR, { session: null, remoteIdentity: null });
    const r = await failure(fresh.decrypt({ type: reply.type(), body: reply.serialize() }));
    expect(r.kind).toBe('no_session');
    expect(r.message).toMatch(/not found: message_decrypt_signal$/);
    const e = await failure(fresh.encrypt(te.encode('x'), new Date()));
    expect(e.kind).toBe('no_session');
    expect(e.message).toMatch(/not found: message_encrypt$/);
    void devKeys;
  });

  it('corrupted ciphertext is an invalid message, and the session survives it', async () => {
    const { router, device, bundle } = parties();
    await router.processBundle(bundle, new Date());
    await deviceDecrypt(device, await router.encrypt(te.encode('hi'), new Date()));
    const reply = await S.signalEncrypt(te.encode('ack'), bizAddr, usrAddr, device.sessions, device.identities);
    await router.decrypt({ type: reply.type(), body: reply.serialize() });
    const m = await router.encrypt(te.encode('whisper'), new Date());
    expect(m.type).toBe(S.CiphertextMessageType.Whisper);
    const bad = new Uint8Array(m.body);
    bad[bad.length - 12]! ^= 1;
    const r = await failure(deviceDecrypt(device, { type: m.type, body: bad }));
    expect(r).toEqual({ kind: 'invalid_message', message: 'invalid Whisper message: decryption failed' });
    expect(new TextDecoder().decode(await deviceDecrypt(device, m))).toBe('whisper');
  });

  it('a consumed one-time prekey is a missing prekey', async () => {
    const { router, device, bundle, bizKeys } = parties();
    await router.processBundle(bundle, new Date());
    await deviceDecrypt(device, await router.encrypt(te.encode('first'), new Date()));
    const other = new ConversationCrypto({ identity: S.IdentityKeyPair.generate(), registrationId: 9 }, BIZ, USR, { session: null, remoteIdentity: null });
    await other.processBundle(bundle, new Date());
    const r = await failure(deviceDecrypt(device, await other.encrypt(te.encode('stale bundle'), new Date())));
    expect(r.kind).toBe('missing_prekey');
    void bizKeys;
  });

  it('a replayed PreKey message on the last-resort Kyber key is a replay', async () => {
    const { router, device, devKeys } = parties(false);
    await router.processBundle(bundleOf(devKeys, false), new Date());
    const m = await router.encrypt(te.encode('first'), new Date());
    await deviceDecrypt(device, m);
    (device as { sessions: MemSessionStore }).sessions = new MemSessionStore(); // the device lost its session
    const r = await failure(deviceDecrypt(device, m));
    expect(r.kind).toBe('replayed_prekey');
  });

  it('a forged bundle is a bad signature', async () => {
    const { router, devKeys } = parties();
    const b = bundleOf(devKeys, true);
    const forged = S.PreKeyBundle.new(b.registrationId(), 1, b.preKeyId(), b.preKeyPublic(), b.signedPreKeyId(),
      b.signedPreKeyPublic(), b.signedPreKeySignature(), S.IdentityKeyPair.generate().publicKey,
      b.kyberPreKeyId(), b.kyberPreKeyPublic(), b.kyberPreKeySignature());
    const r = await failure(router.processBundle(forged, new Date()));
    expect(r).toEqual({ kind: 'bad_signature', message: 'invalid signature detected' });
  });

  it('garbage bytes are malformed', async () => {
    const { device } = parties();
    const r = await failure(deviceDecrypt(device, { type: 2, body: new Uint8Array([0x33, 1, 2, 3]) }));
    expect(r.kind).toBe('malformed');
  });

  it('a changed identity on send is untrusted (strict store), and the router accepts it from a fresh bundle', async () => {
    const { router, bundle } = parties();
    await router.processBundle(bundle, new Date());
    const reinstalled = generateKeys({ oneTime: 1 });
    const strict = new PartyStores(generateKeys({ oneTime: 0 }));
    await strict.identities.saveIdentity(usrAddr, bundle.identityKey());
    const r = await failure(S.processPreKeyBundle(bundleOf(reinstalled, true), usrAddr, bizAddr, new MemSessionStore(), {
      ...strict.identities,
      getIdentityKey: () => strict.identities.getIdentityKey(),
      getLocalRegistrationId: () => strict.identities.getLocalRegistrationId(),
      saveIdentity: (a: S.ProtocolAddress, k: S.PublicKey) => strict.identities.saveIdentity(a, k),
      isTrustedIdentity: async (_a: S.ProtocolAddress, k: S.PublicKey) => k.equals(bundle.identityKey()),
      getIdentity: (a: S.ProtocolAddress) => strict.identities.getIdentity(a),
    } as unknown as S.IdentityKeyStore));
    expect(r.kind).toBe('untrusted_identity');
    const { identityChanged } = await router.processBundle(bundleOf(reinstalled, true), new Date());
    expect(identityChanged).toBe(true);
  });

  it('anything else is other', () => {
    expect(classifySignalError(new Error('boom'))).toBe('other');
  });
});
