import { randomUUID } from 'node:crypto';
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import type { Logger } from 'pino';
import { createLogger, maskPhone } from '../log.ts';
import { PRIMARY_DEVICE_ID } from '../signal/device-list.ts';
import { Account, type DeviceKind } from './account.ts';
import { Device } from './device.ts';
import type { DeviceEnvelope, GroupEnvelope, MemberGroupMessage, PeerEnvelope } from './device-model.ts';
import type { GroupPeer } from './device-groups.ts';
import { GroupRegistry, type Group } from './groups.ts';
import { KeyDirectory } from './directory.ts';
import { EventQueue } from './event-queue.ts';
import { Faults } from './faults.ts';
import { Relay } from './relay.ts';
import { unixSeconds, type RouterEvent } from './events.ts';
import { Integrity } from './integrity.ts';
import { maskNumbers } from './mask.ts';

/** Knobs for building a platform; all optional. */
export interface PlatformOptions {
  /** Sees every request the platform receives (method, route, body): privacy tests scan the traffic. */
  tap?: (method: string, url: string, body: unknown) => void;
  /** Random source for faults (tests pass a seeded one). */
  random?: () => number;
  /** Clock in ms (event timestamps, leases, outages). */
  clock?: () => number;
  logger?: Logger;
  /** How long the transport keeps an attachment's ciphertext (default 30 days, as WhatsApp's servers do). */
  attachmentTtlMs?: number;
  /** Upper bound of all attachments kept, in bytes (default 1 GiB); the oldest go first past it. */
  attachmentMaxBytes?: number;
}

/** An envelope the router handed to the transport, decoded. */
export interface RelayedEnvelope {
  id: string;
  from: string;
  to: string;
  /** The recipient's device (1 when absent: `POST /v1/envelopes` reaches the phone only). */
  deviceId?: number;
  type: 2 | 3;
  body: Uint8Array<ArrayBuffer>;
}

/** A multi-device message as `POST /v1/messages` takes it (validated). */
export interface DeviceMessage {
  id: string;
  from: string;
  to: string;
  envelopes: { device_id: number; registration_id: number; type: 2 | 3; body: string }[];
}

/** Why the transport took none of a message's envelopes: the HTTP status, the error and its details. */
export interface MessageRefusal {
  status: 403 | 404 | 409 | 410;
  error: string;
  details: { to?: string; stale?: number[]; missing?: number[]; extra?: number[] };
}

/**
 * All state of the platform process: the prekey directory, the router's event queue, the faulty relay
 * and the simulated devices. Kept in this process's memory, never in the router's store.
 */
export class PlatformState {
  readonly clock: () => number;
  readonly log: Logger;
  readonly faults: Faults;
  readonly relay: Relay;
  readonly queue: EventQueue;
  readonly directory: KeyDirectory;
  /** Messaging limits, blocks, spam reports and quality per business number (src/platform/integrity.ts). */
  readonly integrity: Integrity;
  /** The groups the router registered (`PUT /v1/groups/{group_id}`): who gets each group message. */
  readonly groups = new GroupRegistry();
  /**
   * Attachment ciphertexts (the keys never reach the transport), by pointer, in upload order: each kept until
   * its TTL ends, the oldest dropped first when the total passes the byte bound.
   */
  private readonly blobs = new Map<string, { bytes: Buffer; until: number }>();
  private blobBytes = 0;
  private readonly attachmentTtlMs: number;
  private readonly attachmentMaxBytes: number;
  private readonly accounts = new Map<string, Account>();
  /** The transport's own signing key (made on first use): what it would sign a forged device list with. */
  private forger: IdentityKeyPair | undefined;

  constructor(opts: PlatformOptions = {}) {
    this.clock = opts.clock ?? Date.now;
    this.attachmentTtlMs = opts.attachmentTtlMs ?? 30 * 86_400_000;
    this.attachmentMaxBytes = opts.attachmentMaxBytes ?? 1 << 30;
    this.log = opts.logger ?? createLogger('platform');
    this.faults = new Faults(opts.random, this.clock);
    this.relay = new Relay(this.faults);
    this.queue = new EventQueue(this.clock);
    this.directory = new KeyDirectory((address, deviceId, left) => this.accounts.get(address)?.device(deviceId)?.replenishIfLow(left));
    // The transport's own notices go straight to the router's queue (not across the faulty relay).
    this.integrity = new Integrity(this.clock, (c) => this.queue.push({
      kind: 'integrity', to: c.number, event: c.event, quality_rating: c.quality_rating, current_limit: c.current_limit, blocked: c.blocked,
      timestamp: unixSeconds(this.clock()),
    }));
  }

  /**
   * Registers the account for `waId` with its phone (device 1), or returns the existing one unchanged;
   * `reinstall` gives an existing phone a fresh identity (and logs out its companions). `prekeys` is the
   * one-time key batch size of each of the account's devices.
   */
  async registerDevice(waId: string, opts: { prekeys: number; reinstall: boolean; name?: string; autoReply?: boolean }): Promise<{ device: Device; created: boolean }> {
    const existing = this.accounts.get(waId);
    if (existing) {
      if (opts.reinstall) await existing.reinstallPrimary(opts.prekeys);
      return { device: existing.primary, created: false };
    }
    const user = { name: opts.name ?? `User ${waId.slice(-4)}`, autoReply: !!opts.autoReply };
    const deps = {
      directory: this.directory,
      toRouter: (event: RouterEvent) => this.toRouter(event),
      blob: (pointer: string) => this.blob(pointer),
      putBlob: (bytes: Buffer) => this.putBlob(bytes),
      toPeer: (env: PeerEnvelope) => this.toPeer(env),
      toGroup: (m: MemberGroupMessage) => this.fromMember(m),
      clock: this.clock,
      log: this.log,
    };
    // Only the phone answers automatically (demos); a companion replying too would answer every message twice.
    const makeDevice = (deviceId: number, kind: DeviceKind, prekeys = opts.prekeys): Device =>
      new Device(waId, deviceId, prekeys, deps, { ...user, autoReply: user.autoReply && kind === 'primary' });
    const account = new Account(waId, { directory: this.directory, makeDevice, forgeKey: () => (this.forger ??= IdentityKeyPair.generate()), log: this.log });
    this.accounts.set(waId, account);
    this.log.info({ wa_id: maskPhone(waId) }, 'device registered');
    return { device: account.primary, created: true };
  }

  /** A device of the account with this wa_id (default: the phone), if registered and on the account. */
  device(waId: string, deviceId = PRIMARY_DEVICE_ID): Device | undefined {
    return this.accounts.get(waId)?.device(deviceId);
  }

  /** The account with this wa_id, if registered. */
  account(waId: string): Account | undefined {
    return this.accounts.get(waId);
  }

  /** Keeps an attachment's ciphertext until its TTL ends; answers its pointer. */
  putBlob(bytes: Buffer): string {
    const now = this.clock();
    this.expireBlobs(now);
    const pointer = randomUUID();
    this.blobs.set(pointer, { bytes, until: now + this.attachmentTtlMs });
    this.blobBytes += bytes.length;
    // Past the bound the oldest go (never the one just stored: a single upload may exceed it alone).
    for (const [p, b] of this.blobs) {
      if (this.blobBytes <= this.attachmentMaxBytes || p === pointer) break;
      this.dropBlob(p, b.bytes.length);
    }
    return pointer;
  }

  /** An attachment's ciphertext, unless its TTL ended (or it was never stored). */
  blob(pointer: string): Buffer | undefined {
    const b = this.blobs.get(pointer);
    if (!b) return undefined;
    if (b.until <= this.clock()) {
      this.dropBlob(pointer, b.bytes.length);
      return undefined;
    }
    return b.bytes;
  }

  /** Attachments kept now (count, bytes). */
  blobStats(): { count: number; bytes: number } {
    this.expireBlobs(this.clock());
    return { count: this.blobs.size, bytes: this.blobBytes };
  }

  /** Drops expired attachments: all share one TTL, so upload order is expiry order. */
  private expireBlobs(now: number): void {
    for (const [p, b] of this.blobs) {
      if (b.until > now) break;
      this.dropBlob(p, b.bytes.length);
    }
  }

  private dropBlob(pointer: string, size: number): void {
    this.blobs.delete(pointer);
    this.blobBytes -= size;
  }

  /** Whether `to` is a registered account (envelopes to anything else are refused). */
  hasDevice(waId: string): boolean {
    return this.accounts.has(waId);
  }

  /**
   * Carries an accepted envelope to its device across the faulty transport (after the HTTP answer); each
   * device envelope of a multi-device message travels, and meets the faults, on its own.
   */
  toDevice(env: RelayedEnvelope): void {
    const device = this.device(env.to, env.deviceId ?? PRIMARY_DEVICE_ID);
    if (!device) return;
    const acceptedAt = this.clock();
    this.relay.send(() => {
      const body = this.maybeCorrupt(env.body);
      const delivery: DeviceEnvelope = { id: env.id, from: env.from, type: env.type, body, acceptedAt };
      device.receive(delivery).catch((err: unknown) => {
        this.log.error({ wa_id: maskPhone(env.to), device: device.deviceId, envelope: env.id, err: maskNumbers((err as Error).message) }, 'device failed on envelope');
      });
    });
  }

  /**
   * Takes a multi-device message, all or nothing, as Signal-Server does: an unknown recipient (404), a
   * registration id that differs (410 `stale`, checked first), device ids other than the account's current
   * ones, ghosts included (409 `missing`/`extra`), or an integrity refusal (403, decided per message id)
   * deliver nothing; otherwise every device envelope is carried on its own. Null when taken.
   */
  acceptMessage(m: DeviceMessage): MessageRefusal | null {
    const account = this.accounts.get(m.to);
    if (!account) return { status: 404, error: 'unknown_recipient', details: { to: m.to } };
    const mismatch = account.check(m.envelopes);
    if (mismatch && 'stale' in mismatch) return { status: 410, error: 'stale_devices', details: mismatch };
    if (mismatch) return { status: 409, error: 'mismatched_devices', details: mismatch };
    const refusal = this.integrity.decide(m.id, m.from, m.to);
    if (refusal) return { status: 403, error: refusal, details: { to: m.to } };
    for (const e of m.envelopes) {
      this.toDevice({ id: m.id, from: m.from, to: m.to, deviceId: e.device_id, type: e.type, body: new Uint8Array(Buffer.from(e.body, 'base64')) });
    }
    return null;
  }

  /**
   * Relays one group message (the same SenderKeyMessage bytes) to every current device of every registered
   * member except `except` (the member who wrote it); each copy meets the faults on its own, as device envelopes
   * do. Members without an account are skipped. Returns how many device copies were sent.
   */
  /** Each member's devices as the transport knows them now (those a group message is copied to). */
  groupDevices(group: Group): Record<string, number[]> {
    return Object.fromEntries(group.members.map((wa) => [wa, (this.accounts.get(wa)?.devices() ?? []).map((d) => d.deviceId)]));
  }

  toGroupDevices(group: Group, m: { id: string; from: string; body: Uint8Array<ArrayBuffer> }, except?: string): number {
    const acceptedAt = this.clock();
    let copies = 0;
    for (const waId of group.members) {
      if (waId === except) continue;
      for (const device of this.accounts.get(waId)?.devices() ?? []) {
        copies++;
        this.relay.send(() => {
          const env: GroupEnvelope = {
            id: m.id, group_id: group.id, from: m.from, fromOwner: m.from === group.owner, type: 7, body: this.maybeCorrupt(m.body), acceptedAt,
          };
          device.receiveGroup(env).catch((err: unknown) => {
            this.log.error({ wa_id: maskPhone(waId), device: device.deviceId, envelope: m.id, err: maskNumbers((err as Error).message) }, 'device failed on group message');
          });
        });
      }
    }
    return copies;
  }

  /**
   * Every device of every member of the group other than `waId`, as a writing member's phone fetches them to
   * distribute its sender key (the transport's directory, like a sender's device-list and key fetch).
   */
  groupPeers(group: Group, waId: string): GroupPeer[] {
    return group.members.filter((m) => m !== waId).flatMap((m) =>
      (this.accounts.get(m)?.devices() ?? []).map((d) => ({ waId: m, deviceId: d.deviceId, registrationId: d.registrationId })));
  }

  /** A member's group message: a `group_envelope` event to the owner and a copy to every other member's device. */
  private fromMember(m: MemberGroupMessage): void {
    const group = this.groups.get(m.group_id);
    if (!group) return;
    this.toRouter({
      kind: 'group_envelope', id: m.id, group_id: group.id, from: m.from, device_id: PRIMARY_DEVICE_ID, to: group.owner, type: 7,
      body: Buffer.from(m.body).toString('base64'), timestamp: unixSeconds(this.clock()),
    });
    this.toGroupDevices(group, m, m.from);
  }

  /** Carries a pairwise envelope between users' devices (a member's sender key) across the faulty transport. */
  private toPeer(env: PeerEnvelope): void {
    const device = this.device(env.to, env.deviceId);
    if (!device) return;
    const acceptedAt = this.clock();
    this.relay.send(() => {
      const delivery: DeviceEnvelope = { id: env.id, from: env.from, type: env.type, body: this.maybeCorrupt(env.body), acceptedAt, peer: true };
      device.receive(delivery).catch((err: unknown) => {
        this.log.error({ wa_id: maskPhone(env.to), device: device.deviceId, envelope: env.id, err: maskNumbers((err as Error).message) }, 'device failed on peer envelope');
      });
    });
  }

  /** The bytes as one copy on the wire carries them: with a byte flipped when the corrupt fault hits it. */
  private maybeCorrupt(body: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
    if (!this.faults.corrupts()) return body;
    // Flip a byte near the end (inside the ciphertext/MAC or signature), as a damaged copy on the wire would be.
    const copy = new Uint8Array(body);
    copy[Math.max(0, copy.length - 12)]! ^= 0x01;
    return copy;
  }

  /** Carries a device's event to the router's queue across the faulty transport. */
  toRouter(event: RouterEvent): void {
    this.relay.send(() => this.queue.push(event));
  }

  /**
   * Resolves once nothing is in flight on the transport and every device is idle (tests and demos wait
   * on it instead of sleeping). Messages delayed by faults are waited for too.
   */
  async settled(): Promise<void> {
    for (;;) {
      const busy = [...this.accounts.values()].flatMap((a) => a.all()).filter((d) => d.busy);
      if (this.relay.inFlight === 0 && busy.length === 0) return;
      if (busy.length > 0) await Promise.all(busy.map((d) => d.idle()));
      else await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** Stops timers and answers waiting pulls; in-flight messages are lost, as in a real outage. */
  close(): void {
    this.relay.close();
    this.queue.close();
  }
}
