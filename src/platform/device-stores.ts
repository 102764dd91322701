/**
 * In-memory libsignal stores of one simulated device (modelled on libsignal's TestStores.ts and research
 * §3.1). Records are kept serialized, the way a real client keeps them in a database.
 */
import {
  Direction,
  IdentityChange,
  IdentityKeyStore,
  KyberPreKeyRecord,
  KyberPreKeyStore,
  PreKeyRecord,
  PreKeyStore,
  SenderKeyRecord,
  SenderKeyStore,
  SessionRecord,
  SessionStore,
  SignedPreKeyRecord,
  SignedPreKeyStore,
  type IdentityKeyPair,
  type PrivateKey,
  type ProtocolAddress,
  type PublicKey,
  type Uuid,
} from '@signalapp/libsignal-client';
import type { GeneratedKeys } from '../signal/prekeys.ts';

const addressKey = (a: ProtocolAddress): string => `${a.name()}.${a.deviceId()}`;

/** Sessions by address. */
export class MemSessionStore extends SessionStore {
  private readonly m = new Map<string, Uint8Array<ArrayBuffer>>();

  /** Drops every session (a phone restored without its session state). */
  clear(): void {
    this.m.clear();
  }

  override async saveSession(a: ProtocolAddress, r: SessionRecord): Promise<void> {
    this.m.set(addressKey(a), r.serialize());
  }
  override async getSession(a: ProtocolAddress): Promise<SessionRecord | null> {
    const b = this.m.get(addressKey(a));
    return b ? SessionRecord.deserialize(b) : null;
  }
  override async getExistingSessions(as: ProtocolAddress[]): Promise<SessionRecord[]> {
    return as.map((a) => {
      const b = this.m.get(addressKey(a));
      if (!b) throw new Error(`no session for ${addressKey(a)}`);
      return SessionRecord.deserialize(b);
    });
  }
}

/**
 * Own identity plus the peers' identity keys, with Signal-Desktop's policy: always trust on receive
 * (and report a replaced key), trust on send only a key that is new or unchanged; the owner accepts a
 * changed key explicitly with `saveIdentity` before building a new session.
 */
export class MemIdentityStore extends IdentityKeyStore {
  private readonly known = new Map<string, PublicKey>();

  constructor(
    readonly identity: IdentityKeyPair,
    readonly registrationId: number,
    private readonly onChange?: (address: ProtocolAddress) => void,
  ) {
    super();
  }

  override async getIdentityKey(): Promise<PrivateKey> {
    return this.identity.privateKey;
  }
  override async getLocalRegistrationId(): Promise<number> {
    return this.registrationId;
  }
  override async saveIdentity(a: ProtocolAddress, k: PublicKey): Promise<IdentityChange> {
    const old = this.known.get(addressKey(a));
    this.known.set(addressKey(a), k);
    if (old && !old.equals(k)) {
      this.onChange?.(a);
      return IdentityChange.ReplacedExisting;
    }
    return IdentityChange.NewOrUnchanged;
  }
  override async isTrustedIdentity(a: ProtocolAddress, k: PublicKey, direction: Direction): Promise<boolean> {
    if (direction === Direction.Receiving) return true;
    const old = this.known.get(addressKey(a));
    return !old || old.equals(k);
  }
  override async getIdentity(a: ProtocolAddress): Promise<PublicKey | null> {
    return this.known.get(addressKey(a)) ?? null;
  }
}

/** One-time EC prekeys; libsignal removes each after its first use. */
export class MemPreKeyStore extends PreKeyStore {
  private readonly m = new Map<number, Uint8Array<ArrayBuffer>>();

  /** Whether the private key of prekey `id` is still held. */
  has(id: number): boolean {
    return this.m.has(id);
  }
  override async savePreKey(id: number, r: PreKeyRecord): Promise<void> {
    this.m.set(id, r.serialize());
  }
  override async getPreKey(id: number): Promise<PreKeyRecord> {
    const b = this.m.get(id);
    if (!b) throw new Error(`prekey ${id} not found`);
    return PreKeyRecord.deserialize(b);
  }
  override async removePreKey(id: number): Promise<void> {
    this.m.delete(id);
  }
}

/** Signed EC prekeys. */
export class MemSignedPreKeyStore extends SignedPreKeyStore {
  private readonly m = new Map<number, Uint8Array<ArrayBuffer>>();

  override async saveSignedPreKey(id: number, r: SignedPreKeyRecord): Promise<void> {
    this.m.set(id, r.serialize());
  }
  override async getSignedPreKey(id: number): Promise<SignedPreKeyRecord> {
    const b = this.m.get(id);
    if (!b) throw new Error(`signed prekey ${id} not found`);
    return SignedPreKeyRecord.deserialize(b);
  }
}

/**
 * Kyber prekeys. A one-time key is deleted when used; a last-resort key stays, and a repeated
 * (kyberId, signedPreKeyId, baseKey) triple is rejected, which is libsignal's replay protection for it.
 */
export class MemKyberPreKeyStore extends KyberPreKeyStore {
  private readonly m = new Map<number, Uint8Array<ArrayBuffer>>();
  private readonly lastResort = new Set<number>();
  private readonly usedTriples = new Set<string>();

  /** Whether the private key of Kyber prekey `id` is still held. */
  has(id: number): boolean {
    return this.m.has(id);
  }
  /** Stores a last-resort key, which survives use. */
  saveLastResort(r: KyberPreKeyRecord): void {
    this.m.set(r.id(), r.serialize());
    this.lastResort.add(r.id());
  }
  override async saveKyberPreKey(id: number, r: KyberPreKeyRecord): Promise<void> {
    this.m.set(id, r.serialize());
  }
  override async getKyberPreKey(id: number): Promise<KyberPreKeyRecord> {
    const b = this.m.get(id);
    if (!b) throw new Error(`kyber prekey ${id} not found`);
    return KyberPreKeyRecord.deserialize(b);
  }
  override async markKyberPreKeyUsed(id: number, signedPreKeyId: number, baseKey: PublicKey): Promise<void> {
    if (!this.lastResort.has(id)) {
      this.m.delete(id);
      return;
    }
    const triple = `${id}:${signedPreKeyId}:${Buffer.from(baseKey.serialize()).toString('hex')}`;
    if (this.usedTriples.has(triple)) throw new Error('reused base key with last-resort kyber prekey');
    this.usedTriples.add(triple);
  }
}

/** Group sender keys by (sender address, distribution id): the party's own and those others distributed to it. */
export class MemSenderKeyStore extends SenderKeyStore {
  private readonly m = new Map<string, Uint8Array<ArrayBuffer>>();

  /** Whether a key for this sender and distribution id is held (a group message of it can be decrypted). */
  has(sender: ProtocolAddress, distributionId: Uuid): boolean {
    return this.m.has(`${addressKey(sender)}/${distributionId}`);
  }
  override async saveSenderKey(sender: ProtocolAddress, distributionId: Uuid, r: SenderKeyRecord): Promise<void> {
    this.m.set(`${addressKey(sender)}/${distributionId}`, r.serialize());
  }
  override async getSenderKey(sender: ProtocolAddress, distributionId: Uuid): Promise<SenderKeyRecord | null> {
    const b = this.m.get(`${addressKey(sender)}/${distributionId}`);
    return b ? SenderKeyRecord.deserialize(b) : null;
  }
}

/** All six stores of one party, filled from freshly generated keys. */
export class PartyStores {
  readonly sessions = new MemSessionStore();
  readonly identities: MemIdentityStore;
  readonly preKeys = new MemPreKeyStore();
  readonly signedPreKeys = new MemSignedPreKeyStore();
  readonly kyberPreKeys = new MemKyberPreKeyStore();
  readonly senderKeys = new MemSenderKeyStore();

  constructor(keys: GeneratedKeys, onIdentityChange?: (address: ProtocolAddress) => void) {
    this.identities = new MemIdentityStore(keys.identity, keys.registrationId, onIdentityChange);
    // The stores' async API only wraps a Map; the writes below complete synchronously.
    void this.signedPreKeys.saveSignedPreKey(keys.signedPreKey.id(), keys.signedPreKey);
    this.kyberPreKeys.saveLastResort(keys.kyberLastResort);
    this.addOneTimeKeys(keys.preKeys, keys.kyberPreKeys);
  }

  /** Keeps the private halves of newly generated one-time keys. */
  addOneTimeKeys(preKeys: readonly PreKeyRecord[], kyberPreKeys: readonly KyberPreKeyRecord[]): void {
    for (const r of preKeys) void this.preKeys.savePreKey(r.id(), r);
    for (const r of kyberPreKeys) void this.kyberPreKeys.saveKyberPreKey(r.id(), r);
  }
}
