/**
 * The JSON wire format of prekey bundles and key uploads between the router and the platform directory.
 * libsignal's `PreKeyBundle` has no `serialize()`, so both sides agree on this one. Binary fields are
 * standard base64 of libsignal's own serializations (`PublicKey.serialize()`, 33 bytes; `KEMPublicKey`,
 * 1,569 bytes; XEdDSA signatures, 64 bytes).
 */
import {
  KEMPublicKey,
  PreKeyBundle,
  PublicKey,
  type IdentityKeyPair,
  type KyberPreKeyRecord,
  type PreKeyRecord,
  type SignedPreKeyRecord,
} from '@signalapp/libsignal-client';
import { z } from 'zod';

/** Thrown for JSON that is not a well-formed bundle or key upload; the message is one line. */
export class WireFormatError extends Error {
  override readonly name = 'WireFormatError';
}

/** A signed EC prekey on the wire. */
export interface SignedPreKeyWire {
  id: number;
  public_key: string;
  signature: string;
}

/** A signed Kyber prekey on the wire (one-time or last-resort). */
export type KyberPreKeyWire = SignedPreKeyWire;

/** A one-time EC prekey on the wire. */
export interface PreKeyWire {
  id: number;
  public_key: string;
}

/** `GET /v1/keys/:address` answer. `prekey` is absent when the directory ran out of one-time EC keys. */
export interface BundleWire {
  address: string;
  registration_id: number;
  device_id: number;
  identity_key: string;
  signed_prekey: SignedPreKeyWire;
  kyber_prekey: KyberPreKeyWire;
  prekey?: PreKeyWire;
}

/** `PUT /v1/keys/:address` body. Empty or absent one-time lists keep the keys uploaded earlier. */
export interface KeyUploadWire {
  registration_id: number;
  identity_key: string;
  signed_prekey: SignedPreKeyWire;
  kyber_last_resort: KyberPreKeyWire;
  prekeys?: PreKeyWire[];
  kyber_prekeys?: KyberPreKeyWire[];
}

/** A signed EC public prekey, parsed. */
export interface SignedEcKey {
  id: number;
  publicKey: PublicKey;
  signature: Uint8Array<ArrayBuffer>;
}

/** A signed Kyber public prekey, parsed. */
export interface SignedKemKey {
  id: number;
  publicKey: KEMPublicKey;
  signature: Uint8Array<ArrayBuffer>;
}

/** A one-time EC public prekey, parsed. */
export interface EcKey {
  id: number;
  publicKey: PublicKey;
}

/** A key upload with every key deserialized (signatures not yet verified). */
export interface KeyUpload {
  registrationId: number;
  identityKey: PublicKey;
  signedPreKey: SignedEcKey;
  kyberLastResort: SignedKemKey;
  preKeys: EcKey[];
  kyberPreKeys: SignedKemKey[];
}

/** Most one-time keys of each kind one upload may carry (Signal-Server takes 100; we allow some slack). */
export const MAX_ONE_TIME_KEYS_PER_UPLOAD = 500;

const b64 = z
  .string()
  .min(4)
  .refine((s) => s.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(s), 'not standard base64');
const keyId = z.number().int().min(0).max(0xffffffff);
const registrationId = z.number().int().min(1).max(0x3fff);
const signedKey = z.object({ id: keyId, public_key: b64, signature: b64 });
const preKey = z.object({ id: keyId, public_key: b64 });

const bundleSchema = z.object({
  address: z.string().min(1),
  registration_id: registrationId,
  device_id: z.number().int().min(1).max(127),
  identity_key: b64,
  signed_prekey: signedKey,
  kyber_prekey: signedKey,
  prekey: preKey.optional(),
});

const uploadSchema = z.object({
  registration_id: registrationId,
  identity_key: b64,
  signed_prekey: signedKey,
  kyber_last_resort: signedKey,
  prekeys: z.array(preKey).max(MAX_ONE_TIME_KEYS_PER_UPLOAD).optional(),
  kyber_prekeys: z.array(signedKey).max(MAX_ONE_TIME_KEYS_PER_UPLOAD).optional(),
});

/** One line naming the first problem zod found, e.g. `signed_prekey.id: Invalid input: expected number`. */
export function describeZodError(err: z.ZodError): string {
  const issue = err.issues[0];
  if (!issue) return 'invalid input';
  const path = issue.path.map(String).join('.');
  return `${path || 'body'}: ${issue.message}`.replace(/\s+/g, ' ');
}

function parse<T>(schema: z.ZodType<T>, json: unknown, what: string): T {
  const r = schema.safeParse(json);
  if (!r.success) throw new WireFormatError(`invalid ${what}: ${describeZodError(r.error)}`);
  return r.data;
}

const toB64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
// A copy, so libsignal never sees a view into Node's shared Buffer pool.
const fromB64 = (s: string): Uint8Array<ArrayBuffer> => new Uint8Array(Buffer.from(s, 'base64'));

function key<T>(field: string, what: string, make: () => T): T {
  try {
    return make();
  } catch (err) {
    throw new WireFormatError(`invalid ${what}: ${field}: not a valid key (${(err as Error).message})`);
  }
}

const ecKey = (field: string, what: string, s: string): PublicKey =>
  key(field, what, () => PublicKey.deserialize(fromB64(s)));
const kemKey = (field: string, what: string, s: string): KEMPublicKey =>
  key(field, what, () => KEMPublicKey.deserialize(fromB64(s)));

/**
 * Serializes a bundle for `GET /v1/keys/:address`.
 * @example reply.send(bundleToWire('15551234567', bundle))
 */
export function bundleToWire(address: string, bundle: PreKeyBundle): BundleWire {
  const wire: BundleWire = {
    address,
    registration_id: bundle.registrationId(),
    device_id: bundle.deviceId(),
    identity_key: toB64(bundle.identityKey().serialize()),
    signed_prekey: {
      id: bundle.signedPreKeyId(),
      public_key: toB64(bundle.signedPreKeyPublic().serialize()),
      signature: toB64(bundle.signedPreKeySignature()),
    },
    kyber_prekey: {
      id: bundle.kyberPreKeyId(),
      public_key: toB64(bundle.kyberPreKeyPublic().serialize()),
      signature: toB64(bundle.kyberPreKeySignature()),
    },
  };
  const preKeyId = bundle.preKeyId();
  const preKeyPublic = bundle.preKeyPublic();
  if (preKeyId !== null && preKeyPublic) wire.prekey = { id: preKeyId, public_key: toB64(preKeyPublic.serialize()) };
  return wire;
}

/**
 * Parses a `GET /v1/keys/:address` answer into a libsignal bundle; throws WireFormatError on bad input.
 * Signatures are checked later by `processPreKeyBundle` ("invalid signature detected").
 * @example await processPreKeyBundle(bundleFromWire(await res.json()), remote, local, sessions, identities)
 */
export function bundleFromWire(json: unknown): PreKeyBundle {
  const w = parse(bundleSchema, json, 'bundle');
  const what = 'bundle';
  return PreKeyBundle.new(
    w.registration_id,
    w.device_id,
    w.prekey ? w.prekey.id : null,
    w.prekey ? ecKey('prekey.public_key', what, w.prekey.public_key) : null,
    w.signed_prekey.id,
    ecKey('signed_prekey.public_key', what, w.signed_prekey.public_key),
    fromB64(w.signed_prekey.signature),
    ecKey('identity_key', what, w.identity_key),
    w.kyber_prekey.id,
    kemKey('kyber_prekey.public_key', what, w.kyber_prekey.public_key),
    fromB64(w.kyber_prekey.signature),
  );
}

/** Builds the public upload from a party's private records (what a device or the router publishes). */
export function keyUploadFromRecords(keys: {
  identity: IdentityKeyPair;
  registrationId: number;
  signedPreKey: SignedPreKeyRecord;
  kyberLastResort: KyberPreKeyRecord;
  preKeys?: PreKeyRecord[];
  kyberPreKeys?: KyberPreKeyRecord[];
}): KeyUpload {
  const kem = (r: KyberPreKeyRecord): SignedKemKey => ({ id: r.id(), publicKey: r.publicKey(), signature: r.signature() });
  return {
    registrationId: keys.registrationId,
    identityKey: keys.identity.publicKey,
    signedPreKey: { id: keys.signedPreKey.id(), publicKey: keys.signedPreKey.publicKey(), signature: keys.signedPreKey.signature() },
    kyberLastResort: kem(keys.kyberLastResort),
    preKeys: (keys.preKeys ?? []).map((r) => ({ id: r.id(), publicKey: r.publicKey() })),
    kyberPreKeys: (keys.kyberPreKeys ?? []).map(kem),
  };
}

/**
 * Serializes an upload as the `PUT /v1/keys/:address` body.
 * @example await fetch(`${platform}/v1/keys/${addr}`, { method: 'PUT', body: JSON.stringify(keyUploadToWire(u)) })
 */
export function keyUploadToWire(u: KeyUpload): KeyUploadWire {
  const signedEc = (k: SignedEcKey): SignedPreKeyWire => ({
    id: k.id,
    public_key: toB64(k.publicKey.serialize()),
    signature: toB64(k.signature),
  });
  const signedKem = (k: SignedKemKey): KyberPreKeyWire => ({
    id: k.id,
    public_key: toB64(k.publicKey.serialize()),
    signature: toB64(k.signature),
  });
  return {
    registration_id: u.registrationId,
    identity_key: toB64(u.identityKey.serialize()),
    signed_prekey: signedEc(u.signedPreKey),
    kyber_last_resort: signedKem(u.kyberLastResort),
    prekeys: u.preKeys.map((k) => ({ id: k.id, public_key: toB64(k.publicKey.serialize()) })),
    kyber_prekeys: u.kyberPreKeys.map(signedKem),
  };
}

/** Parses a `PUT /v1/keys/:address` body; throws WireFormatError on bad input (signatures are not checked here). */
export function keyUploadFromWire(json: unknown): KeyUpload {
  const w = parse(uploadSchema, json, 'key upload');
  const what = 'key upload';
  const signedKem = (field: string, k: z.infer<typeof signedKey>): SignedKemKey => ({
    id: k.id,
    publicKey: kemKey(`${field}.public_key`, what, k.public_key),
    signature: fromB64(k.signature),
  });
  return {
    registrationId: w.registration_id,
    identityKey: ecKey('identity_key', what, w.identity_key),
    signedPreKey: {
      id: w.signed_prekey.id,
      publicKey: ecKey('signed_prekey.public_key', what, w.signed_prekey.public_key),
      signature: fromB64(w.signed_prekey.signature),
    },
    kyberLastResort: signedKem('kyber_last_resort', w.kyber_last_resort),
    preKeys: (w.prekeys ?? []).map((k, i) => ({ id: k.id, publicKey: ecKey(`prekeys.${i}.public_key`, what, k.public_key) })),
    kyberPreKeys: (w.kyber_prekeys ?? []).map((k, i) => signedKem(`kyber_prekeys.${i}`, k)),
  };
}

/**
 * The first field whose signature does not verify against the upload's identity key (XEdDSA), or null
 * when all do. The directory refuses such an upload (422), as Signal-Server does.
 */
export function findBadSignature(u: KeyUpload): string | null {
  if (!u.identityKey.verify(u.signedPreKey.publicKey.serialize(), u.signedPreKey.signature)) return 'signed_prekey';
  if (!u.identityKey.verify(u.kyberLastResort.publicKey.serialize(), u.kyberLastResort.signature)) return 'kyber_last_resort';
  for (let i = 0; i < u.kyberPreKeys.length; i++) {
    const k = u.kyberPreKeys[i]!;
    if (!u.identityKey.verify(k.publicKey.serialize(), k.signature)) return `kyber_prekeys.${i}`;
  }
  return null;
}
