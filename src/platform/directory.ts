import { PreKeyBundle, type PublicKey } from '@signalapp/libsignal-client';
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

/** Every party has exactly one device in this transport (Signal's primary device id). */
export const DEVICE_ID = 1;

// An entry is what was uploaded; its one-time keys are stacks (handing out from the end is O(1), and which
// unused one-time key goes first does not matter).
type Entry = KeyUpload;

/**
 * The transport's prekey directory (Signal-Server `KeysController` semantics): one bundle per address;
 * each one-time EC and Kyber prekey is handed out once; without one-time Kyber keys the last-resort key
 * is served; uploading one-time keys replaces the earlier ones.
 */
export class KeyDirectory {
  private readonly entries = new Map<string, Entry>();

  /** `onTake` runs after every bundle handed out, so a device can replenish when its stock runs low. */
  constructor(private readonly onTake?: (address: string, left: PrekeyCounts) => void) {}

  /**
   * Stores an upload after verifying its signatures; throws BadSignatureError. A changed identity key
   * drops the one-time keys of the old identity even when the upload carries none.
   */
  publish(address: string, u: KeyUpload): void {
    const bad = findBadSignature(u);
    if (bad) throw new BadSignatureError(bad);
    const old = this.entries.get(address);
    const sameIdentity = old?.identityKey.equals(u.identityKey) ?? false;
    const keep = <T>(fresh: T[], previous: T[] | undefined): T[] =>
      fresh.length > 0 ? [...fresh].reverse() : sameIdentity && previous ? previous : [];
    this.entries.set(address, {
      registrationId: u.registrationId,
      identityKey: u.identityKey,
      signedPreKey: u.signedPreKey,
      kyberLastResort: u.kyberLastResort,
      preKeys: keep(u.preKeys, old?.preKeys),
      kyberPreKeys: keep(u.kyberPreKeys, old?.kyberPreKeys),
    });
  }

  /** Hands out the address's bundle, consuming one one-time key of each kind if any is left. */
  take(address: string): PreKeyBundle | undefined {
    const e = this.entries.get(address);
    if (!e) return undefined;
    const pre = e.preKeys.pop();
    const kyber = e.kyberPreKeys.pop() ?? e.kyberLastResort;
    const bundle = PreKeyBundle.new(
      e.registrationId,
      DEVICE_ID,
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
    this.onTake?.(address, this.countOf(e));
    return bundle;
  }

  /** One-time key counts for an address, or undefined when it never published. */
  count(address: string): PrekeyCounts | undefined {
    const e = this.entries.get(address);
    return e ? this.countOf(e) : undefined;
  }

  /** Whether an address has published a bundle. */
  has(address: string): boolean {
    return this.entries.has(address);
  }

  /** The identity key an address published, if any. */
  identityKey(address: string): PublicKey | undefined {
    return this.entries.get(address)?.identityKey;
  }

  private countOf(e: Entry): PrekeyCounts {
    return { prekeys: e.preKeys.length, kyber_prekeys: e.kyberPreKeys.length };
  }
}
