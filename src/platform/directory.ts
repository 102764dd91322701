import { PreKeyBundle, type PublicKey } from '@signalapp/libsignal-client';
import { PRIMARY_DEVICE_ID } from '../signal/device-list.ts';
import { findBadSignature, type EcKey, type KeyUpload, type SignedEcKey, type SignedKemKey } from '../signal/bundle.ts';

/** An upload whose signed prekey or a Kyber key is not signed by its identity key. */
export class BadSignatureError extends Error {
  override readonly name = 'BadSignatureError';
  readonly code = 'bad_signature';
  constructor(readonly field: string) {
    super(`bad signature on ${field}`);
  }
}

/** How many one-time keys of each kind the directory still holds for an address. */
export interface PrekeyCounts {
  prekeys: number;
  kyber_prekeys: number;
}

/**
 * A party's primary device id (Signal's): a business has only this one; a user's phone is device 1 and its
 * linked companions are 2 and up.
 */
export const DEVICE_ID = PRIMARY_DEVICE_ID;

// An entry is what was uploaded; its one-time keys are stacks (handing out from the end is O(1), and which
// unused one-time key goes first does not matter).
type Entry = KeyUpload;

/**
 * The transport's prekey directory (Signal-Server `KeysController` semantics): one bundle per (address,
 * device); each one-time EC and Kyber prekey is handed out once; without one-time Kyber keys the
 * last-resort key is served; uploading one-time keys replaces the earlier ones.
 */
export class KeyDirectory {
  /** Address → device id → entry. */
  private readonly entries = new Map<string, Map<number, Entry>>();

  /** `onTake` runs after every bundle handed out, so a device can replenish when its stock runs low. */
  constructor(private readonly onTake?: (address: string, deviceId: number, left: PrekeyCounts) => void) {}

  /**
   * Stores an upload after verifying its signatures; throws BadSignatureError. A changed identity key
   * drops the one-time keys of the old identity even when the upload carries none.
   */
  publish(address: string, u: KeyUpload, deviceId = DEVICE_ID): void {
    const bad = findBadSignature(u);
    if (bad) throw new BadSignatureError(bad);
    let devices = this.entries.get(address);
    if (!devices) this.entries.set(address, (devices = new Map()));
    const old = devices.get(deviceId);
    const sameIdentity = old?.identityKey.equals(u.identityKey) ?? false;
    const keep = <T>(fresh: T[], previous: T[] | undefined): T[] =>
      fresh.length > 0 ? [...fresh].reverse() : sameIdentity && previous ? previous : [];
    devices.set(deviceId, {
      registrationId: u.registrationId,
      identityKey: u.identityKey,
      signedPreKey: u.signedPreKey,
      kyberLastResort: u.kyberLastResort,
      preKeys: keep(u.preKeys, old?.preKeys),
      kyberPreKeys: keep(u.kyberPreKeys, old?.kyberPreKeys),
    });
  }

  /** Removes a device's keys (it was unlinked); the address goes when its last device does. */
  remove(address: string, deviceId: number): void {
    const devices = this.entries.get(address);
    devices?.delete(deviceId);
    if (devices?.size === 0) this.entries.delete(address);
  }

  /** Hands out a device's bundle, consuming one one-time key of each kind if any is left. */
  take(address: string, deviceId = DEVICE_ID): PreKeyBundle | undefined {
    const e = this.entries.get(address)?.get(deviceId);
    if (!e) return undefined;
    const pre = e.preKeys.pop();
    const kyber = e.kyberPreKeys.pop() ?? e.kyberLastResort;
    const bundle = PreKeyBundle.new(
      e.registrationId,
      deviceId,
      pre ? pre.id : null,
      pre ? pre.publicKey : null,
      e.signedPreKey.id,
      e.signedPreKey.publicKey,
      e.signedPreKey.signature,
      e.identityKey,
      kyber.id,
      kyber.publicKey,
      kyber.signature,
    );
    this.onTake?.(address, deviceId, this.countOf(e));
    return bundle;
  }

  /** One-time key counts for a device, or undefined when it never published. */
  count(address: string, deviceId = DEVICE_ID): PrekeyCounts | undefined {
    const e = this.entries.get(address)?.get(deviceId);
    return e ? this.countOf(e) : undefined;
  }

  /** Whether an address has published a bundle (for any device, or for `deviceId`). */
  has(address: string, deviceId?: number): boolean {
    const devices = this.entries.get(address);
    return deviceId === undefined ? !!devices : !!devices?.has(deviceId);
  }

  /** The identity key a device published, if any. */
  identityKey(address: string, deviceId = DEVICE_ID): PublicKey | undefined {
    return this.entries.get(address)?.get(deviceId)?.identityKey;
  }

  private countOf(e: Entry): PrekeyCounts {
    return { prekeys: e.preKeys.length, kyber_prekeys: e.kyberPreKeys.length };
  }
}
