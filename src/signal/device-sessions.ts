/**
 * The Signal state of one conversation with every device of a user (docs/multi-device.md): a session per
 * device, the devices the primary signed onto its list, the pinned primary identity and the last accepted
 * list's counter. Built like ConversationCrypto (buffered stores, committed by the host with the snapshot);
 * libsignal does no locking, so calls on one instance must be sequential (the host runs one event at a time).
 * Its stored form: device-sessions-codec.ts.
 *
 * Trust:
 * - Pin (trust on first use): the primary's identity is pinned from the first of today's single-device state
 *   (its remote identity), a PreKey message from device 1, or the first list accepted, whose device 1 is
 *   pinned when the list is signed by that same key. First contact is trusted as a Signal client trusts a
 *   first identity key; from then on a list must be signed by the pinned key (`verifyDeviceList`) and its
 *   counter must not go back. Only devices on the accepted list are encrypted to or get bundles; a device
 *   not on it loses its session; a listed device whose identity or registration id changed is archived.
 * - Receiving (a companion may write before the router ever fetched the list): as Signal-Desktop, what a
 *   device proves in a PreKey message is taken on receive, so the content decrypts and the session is kept,
 *   but the device is unverified (`verified(id)` false) until an accepted list names it with that identity.
 *   The host fetches and accepts the list before delivering such content (still unverified after that: not
 *   the user's device, drop it). Once listed, the session the device opened carries replies, no bundle.
 * - Primary changed: a list signed by a new key fails `verifyDeviceList`. The host then fetches device 1's
 *   bundle: the pinned identity means the list is the transport's (refuse it, keep the accepted devices);
 *   another one is a reinstalled phone, accepted as today from a freshly fetched bundle: `repin(key)`
 *   archives every session and forgets the list and its counter, and the host sends the `system` webhook;
 *   the next list signed by the new key is then accepted (`identityChanged` true). A PreKey message from
 *   device 1 under another key does not re-pin: device 1 turns unverified, `identityChangedOnReceive` is set,
 *   and the host confirms through the bundle as above.
 */
import { createHash } from 'node:crypto';
import {
  CiphertextMessageType, Direction, IdentityChange, IdentityKeyStore, PreKeySignalMessage, PrivateKey, ProtocolAddress, PublicKey,
  SessionRecord, SessionStore, SignalMessage, processPreKeyBundle, signalDecrypt, signalDecryptPreKey, signalEncrypt,
  type KyberPreKeyStore, type PreKeyBundle, type PreKeyStore, type SignedPreKeyStore,
} from '@signalapp/libsignal-client';
import type { NumberIdentity } from '../store/businesses.ts';
import type { Ciphertext } from './conversation-crypto.ts';
import { DeviceListError, MAX_DEVICE_ID, PRIMARY_DEVICE_ID, parseDeviceList, verifyDeviceList } from './device-list.ts';

/** One device's state as persisted (bytes as libsignal serializes them). */
export interface DeviceSnapshot {
  deviceId: number;
  session: Uint8Array | null;
  /** The identity the session is with (from a bundle or the device's own PreKey message). */
  identity: Uint8Array | null;
  /** How the last accepted list names the device; null when it is on no accepted list. */
  listed: { identity: Uint8Array; registrationId: number } | null;
  /**
   * The last sequence number a message to this companion got (its own count: a device shows messages in seq
   * order from 1, docs/multi-device.md); absent before the first one. Device 1 uses the conversation's.
   */
  lastSeq?: number;
}

/** The persisted state of a conversation's sessions with all of a user's devices. */
export interface DeviceSessionsState {
  /** The pinned primary identity, or null before first contact. */
  primary: Uint8Array | null;
  /** The counter of the last accepted list, or null when none is (since the last re-pin). */
  listCounter: number | null;
  devices: DeviceSnapshot[];
}

/** What accepting a list changed (device ids ascending). */
export interface ListChange {
  devices: number[]; // the devices on the accepted list: the only ones ever encrypted to
  added: number[]; // listed now, not on the previous list
  removed: number[]; // known before (listed, or with a session) and not on this list: their sessions are dropped
  changed: number[]; // on both lists, another registration id or identity: the session was archived
  /**
   * Device 1's identity on this list differs from the one this conversation knew for it (listed, or else its
   * session's): the first list after a re-pin. The `system` webhook is due at the re-pin, not again here.
   */
  identityChanged: boolean;
}

/** One device's envelope, ready for `POST /v1/messages`. */
export interface DeviceCiphertext extends Ciphertext { deviceId: number; registrationId: number }

/** The business's prekey stores, needed to decrypt a PreKey message. */
export interface BusinessPreKeys { preKeys: PreKeyStore; signedPreKeys: SignedPreKeyStore; kyberPreKeys: KyberPreKeyStore }

/** Why a device operation was refused. */
export type DeviceSessionReason = 'not_listed' | 'no_session' | 'identity_mismatch' | 'registration_mismatch' | 'bad_device' | 'malformed_state';

/** A device operation refused; names the device by number only. */
export class DeviceSessionError extends Error {
  override readonly name = 'DeviceSessionError';
  constructor(readonly reason: DeviceSessionReason, readonly deviceId: number | null, detail: string) {
    super(`device ${deviceId ?? '-'}: ${detail} (${reason})`);
  }
}

interface Device {
  /** Serialized record, kept while unchanged (no re-serialization on commit) and parsed on first use. */
  bytes: Uint8Array | null;
  parsed: SessionRecord | null;
  identity: PublicKey | null;
  listed: { identity: PublicKey; registrationId: number } | null;
  lastSeq: number;
}

const key = (b: Uint8Array): PublicKey => PublicKey.deserialize(new Uint8Array(b));
/** libsignal throws on a record without a current session: that is a false. */
const attempt = (f: () => boolean): boolean => {
  try {
    return f();
  } catch {
    return false;
  }
};
const same = (a: PublicKey | null | undefined, b: PublicKey | null | undefined): boolean => !!a && !!b && a.equals(b);

export function checkId(deviceId: number): void {
  if (!Number.isInteger(deviceId) || deviceId < 1 || deviceId > MAX_DEVICE_ID) throw new DeviceSessionError('bad_device', null, `device id must be 1..${MAX_DEVICE_ID}`);
}

/**
 * A conversation's sessions with every device of one user, for one business number.
 * @example
 * const ds = new DeviceSessions(identity, display, waId, decodeDeviceSessions(stored));
 * ds.acceptList(await transport.fetchDeviceList(waId), waId);
 * for (const id of ds.needsBundle()) await ds.processBundle(id, await transport.fetchDeviceBundle(waId, id), new Date());
 */
export class DeviceSessions {
  readonly local: ProtocolAddress;
  private readonly devices = new Map<number, Device>();
  private primary: PublicKey | null;
  private listCounter: number | null;
  private stateDirty = false;
  private primaryChangedOnReceive = false;
  private readonly sessionStore: SessionStore;
  private readonly identityStore: IdentityKeyStore;

  constructor(own: NumberIdentity, localName: string, readonly remoteName: string, state: DeviceSessionsState = emptyState()) {
    this.local = ProtocolAddress.new(localName, 1);
    this.primary = state.primary ? key(state.primary) : null;
    this.listCounter = state.listCounter;
    for (const d of state.devices) {
      checkId(d.deviceId);
      this.devices.set(d.deviceId, {
        bytes: d.session ? new Uint8Array(d.session) : null,
        parsed: null,
        identity: d.identity ? key(d.identity) : null,
        listed: d.listed ? { identity: key(d.listed.identity), registrationId: d.listed.registrationId } : null,
        lastSeq: d.lastSeq ?? 0,
      });
    }
    const self = this;
    this.sessionStore = new (class extends SessionStore {
      override async saveSession(a: ProtocolAddress, r: SessionRecord): Promise<void> {
        const d = self.entry(a.deviceId());
        d.parsed = r;
        d.bytes = null;
        self.stateDirty = true;
      }
      override async getSession(a: ProtocolAddress): Promise<SessionRecord | null> {
        return self.record(a.deviceId());
      }
      override async getExistingSessions(as: ProtocolAddress[]): Promise<SessionRecord[]> {
        const found = as.map((a) => self.record(a.deviceId()));
        if (found.some((r) => !r)) throw new DeviceSessionError('no_session', null, 'no session with a device asked for');
        return found as SessionRecord[];
      }
    })();
    this.identityStore = new (class extends IdentityKeyStore {
      override async getIdentityKey(): Promise<PrivateKey> {
        return own.identity.privateKey;
      }
      override async getLocalRegistrationId(): Promise<number> {
        return own.registrationId;
      }
      override async saveIdentity(a: ProtocolAddress, k: PublicKey): Promise<IdentityChange> {
        return self.sawIdentity(a.deviceId(), k);
      }
      override async isTrustedIdentity(a: ProtocolAddress, k: PublicKey, direction: Direction): Promise<boolean> {
        // Receiving: whatever the device proves is taken (it stays unverified until a list names it). Sending:
        // only the identity the accepted list names for the device.
        return direction === Direction.Receiving || same(self.devices.get(a.deviceId())?.listed?.identity, k);
      }
      override async getIdentity(a: ProtocolAddress): Promise<PublicKey | null> {
        return self.devices.get(a.deviceId())?.identity ?? null;
      }
    })();
  }

  private entry(deviceId: number): Device {
    let d = this.devices.get(deviceId);
    if (!d) this.devices.set(deviceId, (d = { bytes: null, parsed: null, identity: null, listed: null, lastSeq: 0 }));
    return d;
  }

  private record(deviceId: number): SessionRecord | null {
    const d = this.devices.get(deviceId);
    if (!d) return null;
    if (!d.parsed && d.bytes) d.parsed = SessionRecord.deserialize(new Uint8Array(d.bytes));
    return d.parsed;
  }

  private address = (deviceId: number): ProtocolAddress => ProtocolAddress.new(this.remoteName, deviceId);

  /** An identity a device proved (bundle or PreKey message); device 1's first one is the pin. */
  private sawIdentity(deviceId: number, k: PublicKey): IdentityChange {
    const d = this.entry(deviceId);
    const replaced = d.identity !== null && !d.identity.equals(k);
    if (!same(d.identity, k)) {
      d.identity = k;
      this.stateDirty = true;
    }
    if (deviceId === PRIMARY_DEVICE_ID) {
      if (!this.primary) this.primary = k;
      else if (!this.primary.equals(k)) this.primaryChangedOnReceive = true;
    }
    return replaced ? IdentityChange.ReplacedExisting : IdentityChange.NewOrUnchanged;
  }

  /**
   * Verifies the transport's list (`GET /v1/devices/{address}`) against the pinned primary (first contact:
   * pins device 1's key when the list is signed by it) and makes it the devices encrypted to. Throws
   * DeviceListError (bad_signature, primary_mismatch, counter_rollback, ...) and then changes nothing.
   */
  acceptList(wireJson: unknown, account: string = this.remoteName): ListChange {
    if (account !== this.remoteName) throw new DeviceListError('wrong_account', 'the list is for another conversation');
    const signed = parseDeviceList(wireJson);
    const pin = this.primary ?? signed.devices[0]!.identityKey;
    const list = verifyDeviceList(pin, signed, { account, lastCounter: this.listCounter });
    const listed = new Map(list.devices.map((e) => [e.deviceId, e]));
    const d1 = this.devices.get(PRIMARY_DEVICE_ID);
    const previousPrimary = d1?.listed?.identity ?? d1?.identity ?? null;
    const out: ListChange = {
      devices: [...listed.keys()], added: [], removed: [], changed: [],
      identityChanged: previousPrimary !== null && !previousPrimary.equals(list.devices[0]!.identityKey),
    };
    for (const id of [...this.devices.keys()].sort((a, b) => a - b)) {
      if (listed.has(id)) continue;
      this.devices.delete(id); // a device the primary did not sign: never encrypted to, its session dropped
      out.removed.push(id);
      this.stateDirty = true;
    }
    for (const [id, e] of listed) {
      const d = this.entry(id);
      const differs = !!d.listed && (d.listed.registrationId !== e.registrationId || !d.listed.identity.equals(e.identityKey));
      if (!d.listed) out.added.push(id);
      else if (differs) out.changed.push(id);
      if (!d.listed || differs) {
        d.listed = { identity: e.identityKey, registrationId: e.registrationId };
        this.stateDirty = true;
      }
      // A session not with the listed identity and registration id is not used again.
      if (this.record(id)?.hasCurrentState() && !this.matchesListing(id)) this.archive(id);
    }
    if (!this.primary || this.listCounter !== list.counter) this.stateDirty = true;
    this.primary = pin;
    this.listCounter = list.counter;
    return out;
  }

  /** True when the device's session (if any) is with the identity and registration id the accepted list names. */
  private matchesListing(deviceId: number): boolean {
    const d = this.devices.get(deviceId);
    if (!d?.listed || !same(d.identity, d.listed.identity)) return false;
    const r = this.record(deviceId);
    return !r || attempt(() => r.remoteRegistrationId() === d.listed!.registrationId);
  }

  /**
   * True when the device is on the accepted list and the identity it proved (if any: bundle or PreKey message)
   * is the listed one. Content from an unverified device is not the user's until a list says so.
   */
  verified(deviceId: number): boolean {
    const d = this.devices.get(deviceId);
    return !!d?.listed && (d.identity === null || d.identity.equals(d.listed.identity));
  }

  /** The registration id the accepted list names for the device, or null when it is not on it. */
  registrationId(deviceId: number): number | null {
    return this.devices.get(deviceId)?.listed?.registrationId ?? null;
  }

  /** The devices on the accepted list, ascending (empty before any list is accepted or after a re-pin). */
  listedDevices(): number[] {
    return [...this.devices.entries()].filter(([, d]) => d.listed).map(([id]) => id).sort((a, b) => a - b);
  }

  /** True when the device can be encrypted to now: listed, a current session with its listed identity. */
  hasSession(deviceId: number, now: Date = new Date()): boolean {
    return (this.record(deviceId)?.hasCurrentState(now) ?? false) && this.matchesListing(deviceId);
  }

  /** The listed devices without a usable session: each needs a bundle before the next send. */
  needsBundle(now: Date = new Date()): number[] {
    return this.listedDevices().filter((id) => !this.hasSession(id, now));
  }

  /**
   * Builds a session with a listed device from its freshly fetched bundle (PQXDH). Refuses a device not on the
   * accepted list, and a bundle whose identity or registration id is not the listed one.
   */
  async processBundle(deviceId: number, bundle: PreKeyBundle, now: Date = new Date()): Promise<void> {
    checkId(deviceId);
    const listed = this.devices.get(deviceId)?.listed;
    if (!listed) throw new DeviceSessionError('not_listed', deviceId, 'not on the accepted device list');
    if (bundle.deviceId() !== deviceId) throw new DeviceSessionError('bad_device', deviceId, `the bundle is for device ${bundle.deviceId()}`);
    if (!bundle.identityKey().equals(listed.identity)) throw new DeviceSessionError('identity_mismatch', deviceId, 'the bundle\'s identity is not the listed one');
    if (bundle.registrationId() !== listed.registrationId) throw new DeviceSessionError('registration_mismatch', deviceId, 'the bundle\'s registration id is not the listed one');
    await processPreKeyBundle(bundle, this.address(deviceId), this.local, this.sessionStore, this.identityStore, now);
  }

  /** Encrypts for one listed device; advances its session (in memory until committed). */
  async encrypt(deviceId: number, plaintext: Uint8Array, now: Date = new Date()): Promise<DeviceCiphertext> {
    checkId(deviceId);
    const d = this.devices.get(deviceId);
    if (!d?.listed) throw new DeviceSessionError('not_listed', deviceId, 'not on the accepted device list: never encrypted to');
    if (!this.hasSession(deviceId, now)) throw new DeviceSessionError('no_session', deviceId, 'no usable session with the listed identity: fetch a bundle');
    const c = await signalEncrypt(new Uint8Array(plaintext), this.address(deviceId), this.local, this.sessionStore, this.identityStore, now);
    return { deviceId, registrationId: d.listed.registrationId, type: c.type(), body: c.serialize() };
  }

  /**
   * Decrypts a message from a device. PreKey messages need the business's prekey stores; the identity such a
   * message proves is taken, and the device stays unverified (`verified`) until an accepted list names it.
   */
  async decrypt(deviceId: number, m: Ciphertext, prekeys?: BusinessPreKeys): Promise<Uint8Array> {
    checkId(deviceId);
    const body = new Uint8Array(m.body);
    const remote = this.address(deviceId);
    if (m.type === CiphertextMessageType.PreKey) {
      if (!prekeys) throw new Error('PreKey message received but the business has no prekey stores yet');
      return signalDecryptPreKey(PreKeySignalMessage.deserialize(body), remote, this.local, this.sessionStore,
        this.identityStore, prekeys.preKeys, prekeys.signedPreKeys, prekeys.kyberPreKeys);
    }
    return signalDecrypt(SignalMessage.deserialize(body), remote, this.local, this.sessionStore, this.identityStore);
  }

  /**
   * The next sequence number of a companion (1 for the first message encrypted to it); committed with the
   * sessions, so a number is never given twice. Device 1 counts with the conversation instead.
   */
  takeSeq(deviceId: number): number {
    const d = this.entry(deviceId);
    d.lastSeq += 1;
    this.stateDirty = true;
    return d.lastSeq;
  }

  /** True when `ratchetKey` (from a retry request) is the device's current session's. */
  ratchetKeyMatches(deviceId: number, ratchetKey: PublicKey | undefined | null): boolean {
    const r = this.record(deviceId);
    return !!ratchetKey && !!r && attempt(() => r.currentRatchetKeyMatches(ratchetKey));
  }

  /** Archives the device's current session (after a 410, a retry request): the next send needs a bundle. */
  archive(deviceId: number): void {
    const r = this.record(deviceId);
    if (r?.hasCurrentState()) {
      r.archiveCurrentState();
      this.devices.get(deviceId)!.bytes = null;
      this.stateDirty = true;
    }
  }

  /**
   * Pins a new primary identity, learned from device 1's freshly fetched bundle (a reinstalled phone): every
   * session is archived and the accepted list and its counter are forgotten, so nothing is encrypted to until
   * a list signed by the new key is accepted. Returns false (and changes nothing) for the key already pinned.
   */
  repin(newPrimaryIdentity: PublicKey): boolean {
    if (same(this.primary, newPrimaryIdentity)) return false;
    this.primary = newPrimaryIdentity;
    this.listCounter = null;
    for (const id of [...this.devices.keys()]) {
      const d = this.devices.get(id)!;
      d.listed = null;
      this.archive(id);
      if (!d.bytes && !d.parsed && !d.identity) this.devices.delete(id);
    }
    this.stateDirty = true;
    return true;
  }

  /** The pinned primary identity, or null before first contact. */
  primaryIdentity = (): PublicKey | null => this.primary;

  /** The counter of the last accepted list (null: none since first contact or the last re-pin). */
  lastListCounter = (): number | null => this.listCounter;

  /** A short fingerprint of the pinned primary identity (for the business's identity-change notice). */
  remoteIdentityHash(): string | null {
    const k = this.primary;
    return k ? createHash('sha256').update(k.serialize()).digest('base64').slice(0, 16) : null;
  }

  /** True when a decrypt saw device 1 prove another identity than the pinned one (not re-pinned: see repin). */
  get identityChangedOnReceive(): boolean { return this.primaryChangedOnReceive; }

  /** True when anything changed since load or the last markClean (and so must be committed). */
  get dirty(): boolean { return this.stateDirty; }

  /** Marks the current state as persisted. */
  markClean(): void {
    this.stateDirty = false;
    this.primaryChangedOnReceive = false;
  }

  /** The state to persist. */
  snapshot(): DeviceSessionsState {
    const devices: DeviceSnapshot[] = [...this.devices.entries()].sort(([a], [b]) => a - b).map(([deviceId, d]) => {
      if (!d.bytes && d.parsed) d.bytes = d.parsed.serialize();
      return {
        deviceId,
        session: d.bytes,
        identity: d.identity ? d.identity.serialize() : null,
        listed: d.listed ? { identity: d.listed.identity.serialize(), registrationId: d.listed.registrationId } : null,
        ...(d.lastSeq ? { lastSeq: d.lastSeq } : {}),
      };
    });
    return { primary: this.primary ? this.primary.serialize() : null, listCounter: this.listCounter, devices };
  }
}

/** The state of a conversation with no device yet. */
export const emptyState = (): DeviceSessionsState => ({ primary: null, listCounter: null, devices: [] });
