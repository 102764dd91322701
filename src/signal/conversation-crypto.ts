import { createHash } from 'node:crypto';
import {
  CiphertextMessageType,
  Direction,
  IdentityChange,
  IdentityKeyStore,
  PreKeyBundle,
  PreKeySignalMessage,
  PrivateKey,
  ProtocolAddress,
  PublicKey,
  SessionRecord,
  SessionStore,
  SignalMessage,
  processPreKeyBundle,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
  type PreKeyStore,
  type SignedPreKeyStore,
  type KyberPreKeyStore,
} from '@signalapp/libsignal-client';
import type { NumberIdentity } from '../store/businesses.ts';

/** A ciphertext as it goes on the wire: libsignal's message type and serialized bytes. */
export interface Ciphertext {
  type: number;
  body: Uint8Array;
}

/** The persisted crypto state of one conversation (serialized; the host seals it at rest). */
export interface ConversationKeys {
  session: Uint8Array | null;
  remoteIdentity: Uint8Array | null;
}

/** Holds the conversation's one session record in memory; the host persists it in the atomic commit. */
class BufferedSessionStore extends SessionStore {
  record: SessionRecord | null;
  dirty = false;

  constructor(serialized: Uint8Array | null) {
    super();
    this.record = serialized ? SessionRecord.deserialize(new Uint8Array(serialized)) : null;
  }
  override async saveSession(_a: ProtocolAddress, r: SessionRecord): Promise<void> {
    this.record = r;
    this.dirty = true;
  }
  override async getSession(_a: ProtocolAddress): Promise<SessionRecord | null> {
    return this.record;
  }
  override async getExistingSessions(_as: ProtocolAddress[]): Promise<SessionRecord[]> {
    if (!this.record) throw new Error('no session');
    return [this.record];
  }
}

/** The business number's identity plus the one remote identity this conversation knows. */
class ConversationIdentityStore extends IdentityKeyStore {
  remote: PublicKey | null;
  dirty = false;
  changed = false;

  constructor(private readonly own: NumberIdentity, remote: Uint8Array | null) {
    super();
    this.remote = remote ? PublicKey.deserialize(new Uint8Array(remote)) : null;
  }
  override async getIdentityKey(): Promise<PrivateKey> {
    return this.own.identity.privateKey;
  }
  override async getLocalRegistrationId(): Promise<number> {
    return this.own.registrationId;
  }
  override async saveIdentity(_a: ProtocolAddress, key: PublicKey): Promise<IdentityChange> {
    const replaced = this.remote !== null && !this.remote.equals(key);
    if (!this.remote || replaced) {
      this.remote = key;
      this.dirty = true;
    }
    if (replaced) this.changed = true;
    return replaced ? IdentityChange.ReplacedExisting : IdentityChange.NewOrUnchanged;
  }
  override async isTrustedIdentity(_a: ProtocolAddress, key: PublicKey, direction: Direction): Promise<boolean> {
    // Signal-Desktop's policy: whatever the peer proves on receive is trusted (and saved, reporting a change);
    // on send a changed key is refused until the router has accepted it from a freshly fetched bundle.
    if (direction === Direction.Receiving) return true;
    return this.remote === null || this.remote.equals(key);
  }
  override async getIdentity(_a: ProtocolAddress): Promise<PublicKey | null> {
    return this.remote;
  }
}

/**
 * The Signal state of one conversation (business number × user device) while its actor runs. All calls on
 * one instance must be sequential: the actor host guarantees that (single writer, one event at a time).
 */
export class ConversationCrypto {
  private readonly sessions: BufferedSessionStore;
  private readonly identities: ConversationIdentityStore;
  readonly local: ProtocolAddress;
  readonly remote: ProtocolAddress;

  constructor(own: NumberIdentity, localName: string, remoteName: string, keys: ConversationKeys) {
    this.sessions = new BufferedSessionStore(keys.session);
    this.identities = new ConversationIdentityStore(own, keys.remoteIdentity);
    this.local = ProtocolAddress.new(localName, 1);
    this.remote = ProtocolAddress.new(remoteName, 1);
  }

  /** True when a usable (current, not expired) session exists. */
  hasSession(now: Date): boolean {
    return this.sessions.record?.hasCurrentState(now) ?? false;
  }

  /**
   * Builds a session from a freshly fetched bundle (PQXDH). A changed identity key is accepted here, since
   * the directory vouches for it, and reported through the return value.
   */
  async processBundle(bundle: PreKeyBundle, now: Date): Promise<{ identityChanged: boolean }> {
    const known = this.identities.remote;
    const identityChanged = known !== null && !known.equals(bundle.identityKey());
    if (identityChanged) {
      this.identities.remote = bundle.identityKey();
      this.identities.dirty = true;
      this.archive();
    }
    await processPreKeyBundle(bundle, this.remote, this.local, this.sessions, this.identities, now);
    return { identityChanged };
  }

  /** True when `ratchetKey` (from a retry request) is the current session's: the request is about this session. */
  ratchetKeyMatches(ratchetKey: PublicKey | undefined | null): boolean {
    if (!ratchetKey || !this.sessions.record) return false;
    try {
      return this.sessions.record.currentRatchetKeyMatches(ratchetKey);
    } catch {
      return false;
    }
  }

  /** A short fingerprint of the device's identity key (for the business's identity-change notice). */
  remoteIdentityHash(): string | null {
    const k = this.identities.remote;
    return k ? createHash('sha256').update(k.serialize()).digest('base64').slice(0, 16) : null;
  }

  /** Archives the current session so the next send needs a fresh bundle. */
  archive(): void {
    const r = this.sessions.record;
    if (r) {
      r.archiveCurrentState();
      this.sessions.dirty = true;
    }
  }

  /** Encrypts for the remote device; advances the session (in memory until committed). */
  async encrypt(plaintext: Uint8Array, now: Date): Promise<Ciphertext> {
    const c = await signalEncrypt(new Uint8Array(plaintext), this.remote, this.local, this.sessions, this.identities, now);
    return { type: c.type(), body: c.serialize() };
  }

  /** Decrypts a message from the remote device. PreKey messages need the business's prekey stores. */
  async decrypt(
    m: Ciphertext,
    prekeys?: { preKeys: PreKeyStore; signedPreKeys: SignedPreKeyStore; kyberPreKeys: KyberPreKeyStore },
  ): Promise<Uint8Array> {
    const body = new Uint8Array(m.body);
    if (m.type === CiphertextMessageType.PreKey) {
      if (!prekeys) throw new Error('PreKey message received but the business has no prekey stores yet');
      return signalDecryptPreKey(PreKeySignalMessage.deserialize(body), this.remote, this.local, this.sessions,
        this.identities, prekeys.preKeys, prekeys.signedPreKeys, prekeys.kyberPreKeys);
    }
    return signalDecrypt(SignalMessage.deserialize(body), this.remote, this.local, this.sessions, this.identities);
  }

  /** True when the session or identity changed since load (and so must be committed). */
  get dirty(): boolean {
    return this.sessions.dirty || this.identities.dirty;
  }

  /** True when a decrypt saw the peer's identity key change. */
  get identityChangedOnReceive(): boolean {
    return this.identities.changed;
  }

  /** The state to persist. */
  snapshot(): ConversationKeys {
    return {
      session: this.sessions.record ? this.sessions.record.serialize() : null,
      remoteIdentity: this.identities.remote ? this.identities.remote.serialize() : null,
    };
  }

  /** Marks the current state as persisted. */
  markClean(): void {
    this.sessions.dirty = false;
    this.identities.dirty = false;
    this.identities.changed = false;
  }
}
