import {
  IdentityKeyPair,
  KEMKeyPair,
  KyberPreKeyRecord,
  PreKeyRecord,
  PrivateKey,
  SignedPreKeyRecord,
} from '@signalapp/libsignal-client';

/** Largest prekey id: Signal clients use 24-bit ids and wrap around (`wrappingAdd24`). */
export const MAX_KEY_ID = 0xffffff;

/** The id after `id`, wrapping within 1..MAX_KEY_ID so a long-lived party never overflows. */
export function nextKeyId(id: number): number {
  return id >= MAX_KEY_ID ? 1 : id + 1;
}

/**
 * A random non-zero 14-bit registration id (1..16380), as Signal clients pick it.
 * @example generateRegistrationId() // 9121
 */
export function generateRegistrationId(random: () => number = Math.random): number {
  return 1 + Math.floor(random() * 16380);
}

/** A signed EC prekey: a fresh key pair whose public key the identity key signs (XEdDSA). */
export function generateSignedPreKey(identity: IdentityKeyPair, id: number, now = Date.now()): SignedPreKeyRecord {
  const key = PrivateKey.generate();
  const pub = key.getPublicKey();
  return SignedPreKeyRecord.new(id, now, pub, key, identity.privateKey.sign(pub.serialize()));
}

/** A signed Kyber (ML-KEM-1024) prekey; the same record type serves one-time and last-resort keys. */
export function generateKyberPreKey(identity: IdentityKeyPair, id: number, now = Date.now()): KyberPreKeyRecord {
  const pair = KEMKeyPair.generate();
  return KyberPreKeyRecord.new(id, now, pair, identity.privateKey.sign(pair.getPublicKey().serialize()));
}

/** `count` one-time EC prekeys with ids from `firstId` on (wrapping). */
export function generatePreKeys(firstId: number, count: number): PreKeyRecord[] {
  const out: PreKeyRecord[] = [];
  let id = firstId;
  for (let i = 0; i < count; i++, id = nextKeyId(id)) {
    const key = PrivateKey.generate();
    out.push(PreKeyRecord.new(id, key.getPublicKey(), key));
  }
  return out;
}

/** `count` one-time Kyber prekeys with ids from `firstId` on (wrapping), each signed by the identity. */
export function generateKyberPreKeys(
  identity: IdentityKeyPair,
  firstId: number,
  count: number,
  now = Date.now(),
): KyberPreKeyRecord[] {
  const out: KyberPreKeyRecord[] = [];
  let id = firstId;
  for (let i = 0; i < count; i++, id = nextKeyId(id)) out.push(generateKyberPreKey(identity, id, now));
  return out;
}

/** Everything a party generates to publish its first bundle (private records; the upload derives from them). */
export interface GeneratedKeys {
  identity: IdentityKeyPair;
  registrationId: number;
  signedPreKey: SignedPreKeyRecord;
  kyberLastResort: KyberPreKeyRecord;
  preKeys: PreKeyRecord[];
  kyberPreKeys: KyberPreKeyRecord[];
}

/**
 * A fresh identity with a signed prekey (id 1), a last-resort Kyber key (id 1) and `oneTime` one-time EC
 * and Kyber prekeys (ids from 1 and 2: EC and Kyber ids are separate namespaces, and the last-resort key
 * holds Kyber id 1).
 * @example const keys = generateKeys({ oneTime: 20 }); directory.publish(addr, keyUploadFromRecords(keys));
 */
export function generateKeys(opts: { oneTime?: number; random?: () => number; now?: number } = {}): GeneratedKeys {
  const identity = IdentityKeyPair.generate();
  const now = opts.now ?? Date.now();
  const oneTime = opts.oneTime ?? 20;
  return {
    identity,
    registrationId: generateRegistrationId(opts.random),
    signedPreKey: generateSignedPreKey(identity, 1, now),
    kyberLastResort: generateKyberPreKey(identity, 1, now),
    preKeys: generatePreKeys(1, oneTime),
    kyberPreKeys: generateKyberPreKeys(identity, 2, oneTime, now),
  };
}
