import type { IdentityKeyPair } from '@signalapp/libsignal-client';
import type { Logger } from 'pino';
import { maskPhone } from '../log.ts';
import {
  deviceListToWire,
  MAX_DEVICE_ID,
  PRIMARY_DEVICE_ID,
  signDeviceList,
  type DeviceList,
  type DeviceListEntry,
  type DeviceListWire,
  type SignedDeviceList,
} from '../signal/device-list.ts';
import type { Device } from './device.ts';
import type { KeyDirectory } from './directory.ts';

/** WhatsApp's limit: a phone plus up to four linked companions. */
export const MAX_COMPANIONS = 4;

/** How many of the lists the primary signed the transport keeps (the rollback fault serves an older one). */
const KEPT_LISTS = 8;

/** Who put a device on the account: the user (the phone, a companion it linked) or the transport alone. */
export type DeviceKind = 'primary' | 'companion' | 'ghost';

/**
 * What the transport may serve instead of the primary's latest list, for tests: `forged` is its own list
 * (ghosts included, counter + 1) signed with a key of its own; `rollback` is the list the primary signed
 * before the latest (a genuine signature over a counter that went back).
 */
export type DeviceListFault = 'forged' | 'rollback';

/** Why a multi-device message does not match the account: Signal-Server's 410 (first) and 409. */
export type DeviceMismatch = { stale: number[] } | { missing: number[]; extra: number[] };

/** One device envelope of a multi-device message, as the send check sees it. */
export interface AddressedEnvelope {
  device_id: number;
  registration_id: number;
}

/** What the account needs from the platform around it. */
export interface AccountDeps {
  directory: KeyDirectory;
  /** Builds (and publishes the keys of) a simulated device with this id. */
  makeDevice: (deviceId: number, kind: DeviceKind, prekeys?: number) => Device;
  /** The transport's own signing key, for the `forged` fault. */
  forgeKey: () => IdentityKeyPair;
  log: Logger;
}

const ascending = (ids: Iterable<number>): number[] => [...ids].sort((a, b) => a - b);

/**
 * A user account on the transport: the phone (device 1), up to four companions it linked (ids 2.., never
 * reused), ghosts the transport added on its own, and the device lists the primary signed. The transport
 * believes its own view (every live device, ghosts included) when it checks a message's envelopes; it
 * serves the primary's latest signed list with any ghosts added to it, which no longer verifies.
 */
export class Account {
  private readonly live = new Map<number, { device: Device; kind: DeviceKind }>();
  /** Unlinked companions: no longer addressable, but their views stay readable. */
  private readonly unlinked = new Map<number, Device>();
  private nextDeviceId = PRIMARY_DEVICE_ID + 1;
  /** Lists the primary signed, oldest first. */
  private readonly signed: SignedDeviceList[] = [];
  /** What `GET /v1/devices` serves instead of the honest list; null serves the honest one. */
  fault: DeviceListFault | null = null;

  constructor(
    readonly waId: string,
    private readonly deps: AccountDeps,
  ) {
    this.live.set(PRIMARY_DEVICE_ID, { device: deps.makeDevice(PRIMARY_DEVICE_ID, 'primary'), kind: 'primary' });
    this.resign();
  }

  /** The phone. */
  get primary(): Device {
    return this.live.get(PRIMARY_DEVICE_ID)!.device;
  }

  /** A device on the account now (primary, companion or ghost). */
  device(deviceId: number): Device | undefined {
    return this.live.get(deviceId)?.device;
  }

  /** A device whose view can be read: one on the account, or a companion unlinked since. */
  view(deviceId: number): Device | undefined {
    return this.device(deviceId) ?? this.unlinked.get(deviceId);
  }

  /** The devices on the account now (ghosts included: the transport relays to what it believes in), by id. */
  devices(): Device[] {
    return ascending(this.live.keys()).map((id) => this.live.get(id)!.device);
  }

  /** Every device ever on the account (the platform waits for all of them to be idle). */
  all(): Device[] {
    return [...[...this.live.values()].map((d) => d.device), ...this.unlinked.values()];
  }

  /** Companions the primary linked (ghosts not included). */
  get companions(): number {
    return [...this.live.values()].filter((d) => d.kind === 'companion').length;
  }

  /** Whether the primary has signed an earlier list the transport could serve instead (the rollback fault). */
  get canRollBack(): boolean {
    return this.signed.length >= 2;
  }

  /** Whether a new device can get an id (ids are never reused, and stop at 127). */
  get hasFreeDeviceId(): boolean {
    return this.nextDeviceId <= MAX_DEVICE_ID;
  }

  /** Links a companion: a new device with its own keys, a new id, and a list the primary signs afresh. */
  link(prekeys?: number): Device {
    const device = this.add('companion', prekeys);
    this.resign();
    return device;
  }

  /** The transport adds a device of its own, with keys it made; the primary signs nothing. */
  ghost(): Device {
    const device = this.add('ghost');
    this.deps.log.warn({ wa_id: maskPhone(this.waId), device: device.deviceId }, 'transport added a ghost device');
    return device;
  }

  /** Unlinks a companion (its keys leave the directory; the primary signs a list without it). */
  unlink(deviceId: number): 'unlinked' | 'primary' | 'unknown' {
    if (deviceId === PRIMARY_DEVICE_ID) return 'primary';
    const d = this.live.get(deviceId);
    if (!d || d.kind !== 'companion') return 'unknown';
    this.drop(deviceId, d.device);
    this.resign();
    return 'unlinked';
  }

  /**
   * A companion re-registers under its device id: fresh identity, registration id and prekeys, no sessions
   * (a sender's session with it goes stale: 410). The primary signs the new identity into its list.
   */
  async reinstallCompanion(deviceId: number, prekeys?: number): Promise<Device | undefined> {
    const d = this.live.get(deviceId);
    if (!d || d.kind !== 'companion') return undefined;
    await d.device.reinstall(prekeys);
    this.resign();
    return d.device;
  }

  /** The phone is reinstalled with a new identity: its companions are logged out, as WhatsApp does. */
  async reinstallPrimary(prekeys: number): Promise<void> {
    for (const [id, d] of this.live) if (d.kind === 'companion') this.drop(id, d.device);
    await this.primary.reinstall(prekeys);
    this.resign();
  }

  /**
   * Signal-Server's check of a message's envelopes against the devices the transport believes in (ghosts
   * included): registration ids first (410 `stale`), then the set of device ids (409 `missing`, `extra`).
   * Null when they match.
   */
  check(envelopes: readonly AddressedEnvelope[]): DeviceMismatch | null {
    const stale = envelopes.filter((e) => {
      const d = this.live.get(e.device_id);
      return d !== undefined && d.device.registrationId !== e.registration_id;
    });
    if (stale.length > 0) return { stale: ascending(stale.map((e) => e.device_id)) };
    const sent = new Set(envelopes.map((e) => e.device_id));
    const missing = ascending([...this.live.keys()].filter((id) => !sent.has(id)));
    const extra = ascending([...sent].filter((id) => !this.live.has(id)));
    return missing.length > 0 || extra.length > 0 ? { missing, extra } : null;
  }

  /** The list `GET /v1/devices/{address}` serves: the primary's latest, plus ghosts, unless a fault says otherwise. */
  served(): DeviceListWire {
    const latest = this.signed.at(-1)!;
    if (this.fault === 'rollback' && this.signed.length >= 2) return deviceListToWire(this.signed.at(-2)!);
    const ghosts = [...this.live.values()].filter((d) => d.kind === 'ghost').map((d) => this.entry(d.device));
    const list: DeviceList = { account: this.waId, counter: latest.counter, devices: [...latest.devices, ...ghosts] };
    // The transport claims a newer list and signs it itself: anyone pinned to the primary refuses it.
    if (this.fault === 'forged') return deviceListToWire(signDeviceList(this.deps.forgeKey().privateKey, { ...list, counter: list.counter + 1 }));
    // A ghost keeps the primary's signature, which was over a list without it.
    return deviceListToWire({ ...list, signature: latest.signature });
  }

  /** Every device with its kind, id, registration id and identity key (`GET /sim/devices/{wa_id}`). */
  describe(): { device_id: number; kind: DeviceKind; registration_id: number; identity_key: string }[] {
    return ascending(this.live.keys()).map((id) => {
      const d = this.live.get(id)!;
      return { device_id: id, kind: d.kind, registration_id: d.device.registrationId, identity_key: Buffer.from(d.device.identityKey).toString('base64') };
    });
  }

  /** The counter of the primary's latest signed list. */
  get counter(): number {
    return this.signed.at(-1)!.counter;
  }

  private add(kind: DeviceKind, prekeys?: number): Device {
    if (!this.hasFreeDeviceId) throw new Error('no device ids left on this account');
    const deviceId = this.nextDeviceId++;
    const device = this.deps.makeDevice(deviceId, kind, prekeys);
    this.live.set(deviceId, { device, kind });
    return device;
  }

  private drop(deviceId: number, device: Device): void {
    this.live.delete(deviceId);
    this.unlinked.set(deviceId, device);
    this.deps.directory.remove(this.waId, deviceId);
  }

  /** The primary signs the devices it linked (never ghosts) with the next counter. */
  private resign(): void {
    const devices = [...this.live.values()].filter((d) => d.kind !== 'ghost').map((d) => this.entry(d.device));
    const counter = (this.signed.at(-1)?.counter ?? 0) + 1;
    this.signed.push(this.primary.signDeviceList({ account: this.waId, counter, devices }));
    if (this.signed.length > KEPT_LISTS) this.signed.shift();
  }

  private entry(device: Device): DeviceListEntry {
    return { deviceId: device.deviceId, identityKey: device.identityPublicKey, registrationId: device.registrationId };
  }
}
