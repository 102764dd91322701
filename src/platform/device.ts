import {
  DecryptionErrorMessage,
  ErrorCode,
  LibSignalErrorBase,
  PlaintextContent,
  PreKeySignalMessage,
  ProtocolAddress,
  SignalMessage,
  type CiphertextMessage,
  type PublicKey,
  processPreKeyBundle,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
} from '@signalapp/libsignal-client';
import { maskPhone } from '../log.ts';
import { keyUploadFromRecords } from '../signal/bundle.ts';
import { signDeviceList, type DeviceList, type SignedDeviceList } from '../signal/device-list.ts';
import { decodeContent, type Content, type MessageContent } from '../signal/content.ts';
import { generateKeys, generateKyberPreKeys, generatePreKeys, nextKeyId, type GeneratedKeys } from '../signal/prekeys.ts';
import { openAttachments } from './device-media.ts';
import { DeviceGroups, type GroupSendTarget } from './device-groups.ts';
import { PartyStores } from './device-stores.ts';
// DEVICE_ID: a business has one device, so a business's address is always its device 1.
import { DEVICE_ID, type PrekeyCounts } from './directory.ts';
import { unixSeconds } from './events.ts';
import { newWamid } from './ids.ts';
import { maskNumbers } from './mask.ts';
import {
  b64, failureReason, plaintext, REPLENISH_BELOW, SESSION_ACK_REPEAT_MS, UnknownAddressError, UnknownMessageError,
  type DeviceDeps, type DeviceEnvelope, type DeviceStats, type FailureReason, type GroupEnvelope, type Inbox, type OutgoingMessage, type Received, type ShownMessage,
} from './device-model.ts';

/**
 * A simulated user phone: its own libsignal identity and prekeys, a decrypting inbox that shows messages
 * in sequence order, and a user who can reply, read and report. libsignal does no locking, so every
 * operation touching the stores runs on one promise chain per device.
 */
export class Device {
  readonly address: ProtocolAddress;
  private keys!: GeneratedKeys;
  private stores!: PartyStores;
  private nextPreKeyId = 1;
  private nextKyberId = 2;
  private replenishing = false;
  private pending = 0;
  private tail: Promise<unknown> = Promise.resolve();

  private readonly received = new Map<string, Received>();
  private readonly shown: Received[] = [];
  private readonly inboxes = new Map<string, Inbox>();
  /** Envelope ids decrypted at least once, each with the id of the message it carried (null: not a message). */
  private readonly decryptedIds = new Map<string, string | null>();
  private readonly outSeq = new Map<string, number>();
  private readonly lastSessionAck = new Map<string, { key: string; at: number }>();
  private readonly counters = { decrypted: 0, duplicates: 0, key_reuse: 0, held: 0, identity_changes: 0 };
  private readonly failures: Partial<Record<FailureReason, number>> = {};

  /** What the user sent, by id: to whom, and whether the business read it. */
  private readonly outbox = new Map<string, { to: string; read: boolean }>();
  /** Sender keys, group messages and the phone's own key per group (src/platform/device-groups.ts). */
  private readonly groups: DeviceGroups;

  constructor(
    readonly waId: string,
    /** 1 for the phone (the primary), 2 and up for linked companions (and ghosts the transport makes). */
    readonly deviceId: number,
    private prekeyBatch: number,
    private readonly deps: DeviceDeps,
    private readonly user: { name: string; autoReply: boolean } = { name: `User ${waId.slice(-4)}`, autoReply: false },
  ) {
    this.address = ProtocolAddress.new(waId, deviceId);
    this.install();
    this.groups = new DeviceGroups({
      waId, deviceId, address: this.address, deps, profileName: user.name, counters: this.counters, failures: this.failures,
      stores: () => this.stores,
      encryptTo: (to, toDevice, content) => this.encryptTo(to, toDevice, content),
      show: (r) => this.shown.push(r),
      groupReceipt: (id, owner, groupId) => this.receipt('delivered', id, owner, groupId),
    });
  }

  /** The device's current identity public key, serialized. */
  get identityKey(): Uint8Array {
    return this.keys.identity.publicKey.serialize();
  }

  /** The device's current identity public key. */
  get identityPublicKey(): PublicKey {
    return this.keys.identity.publicKey;
  }

  /** The device's current registration id. */
  get registrationId(): number {
    return this.keys.registrationId;
  }

  /** How logs name this device: the masked number and the device id. */
  private get logId(): { wa_id: string; device: number } {
    return { wa_id: maskPhone(this.waId), device: this.deviceId };
  }

  /** Signs a device list with this device's identity key (the primary's job); the private key never leaves. */
  signDeviceList(list: DeviceList): SignedDeviceList {
    return signDeviceList(this.keys.identity.privateKey, list);
  }

  /** A fresh identity, registration id and prekeys, and no sessions: the app was reinstalled. */
  reinstall(prekeys?: number): Promise<void> {
    return this.serial(async () => {
      if (prekeys !== undefined) this.prekeyBatch = prekeys;
      this.install();
      this.groups.reset();
      this.lastSessionAck.clear();
      this.deps.log.info(this.logId, 'device reinstalled');
    });
  }

  /** Loses every session but keeps the identity (a restore without session state): senders must repair. */
  forgetSessions(): Promise<void> {
    return this.serial(async () => {
      this.stores.sessions.clear();
      this.lastSessionAck.clear();
      this.deps.log.info(this.logId, 'device forgot its sessions');
    });
  }

  /** Takes an envelope from the transport; it is decrypted after everything queued before it. */
  receive(env: DeviceEnvelope): Promise<void> {
    return this.serial(() => this.decrypt(env));
  }

  /**
   * The user writes to a business: builds a session from the directory if there is none, encrypts and
   * sends it towards the router. Returns the new message id; throws UnknownAddressError.
   */
  send(to: string, message: OutgoingMessage, chosenId?: string): Promise<string> {
    return this.serial(async () => {
      const remote = await this.sessionWith(to, DEVICE_ID);
      const s = this.stores;
      const seq = (this.outSeq.get(to) ?? 0) + 1;
      const id = chosenId ?? newWamid();
      const now = this.deps.clock();
      const content: MessageContent = { v: 1, kind: 'message', id, seq, from: this.waId, timestamp: unixSeconds(now), message, profile_name: this.user.name };
      const ct = await signalEncrypt(plaintext(content), remote, this.address, s.sessions, s.identities);
      this.outSeq.set(to, seq);
      this.outbox.set(id, { to, read: false });
      this.deps.toRouter({
        kind: 'envelope',
        id,
        from: this.waId,
        device_id: this.deviceId,
        to,
        type: ct.type() as 2 | 3,
        body: b64(ct.serialize()),
        timestamp: unixSeconds(now),
      });
      return id;
    });
  }

  /** A relayed group message; decrypted after everything queued before it (src/platform/device-groups.ts). */
  receiveGroup(env: GroupEnvelope): Promise<void> {
    return this.serial(() => this.groups.receive(env));
  }

  /**
   * The user writes `text` to a group from this device (the phone): its sender key goes pairwise to the owner
   * and to each of `target.peers` not reached yet, then one `groupEncrypt`ed message to the transport. Returns its id.
   */
  sendGroup(target: GroupSendTarget, text: string): Promise<string> {
    return this.serial(() => this.groups.send(target, text));
  }

  /** The user left the group on this device: no more of its messages are shown. */
  leaveGroup(groupId: string): Promise<void> {
    return this.serial(async () => this.groups.leave(groupId));
  }

  /** The groups this device holds sender keys for (`GET /sim/devices/{wa_id}/groups`). */
  groupsView(): ReturnType<DeviceGroups['describe']> {
    return this.groups.describe();
  }

  /** The user opened message `id`: a `read` receipt goes to its sender. Throws UnknownMessageError. */
  markRead(id: string): void {
    const r = this.received.get(id);
    if (!r) throw new UnknownMessageError(`no message ${id}`);
    this.receipt('read', id, r.sender);
  }

  /** The user reports business `from` as spam. */
  reportSpam(from: string): void {
    this.deps.toRouter({ kind: 'spam_report', from: this.waId, to: from, timestamp: unixSeconds(this.deps.clock()) });
  }

  /** Messages shown to the user, in the order shown, one per distinct id. */
  messages(): ShownMessage[] {
    return this.shown.map((r) => {
      const { id: _id, from: _from, type, timestamp: _ts, arrivals: _a, ...rest } = r.content.message;
      const group = r.content.group_id === undefined ? {} : { group_id: r.content.group_id };
      return { id: r.content.id, from: r.content.from, type, ...rest, ...group, timestamp: r.content.timestamp, arrivals: r.arrivals };
    });
  }

  /** What the user sent, oldest first, with the business's read state. */
  sent(): { id: string; to: string; read: boolean }[] {
    return [...this.outbox].map(([id, m]) => ({ id, ...m }));
  }

  /** Counters for tests and demos. */
  stats(): DeviceStats {
    return { ...this.counters, failures: { ...this.failures } };
  }

  /** Uploads a new batch of one-time prekeys when the directory runs low (called after each bundle taken). */
  replenishIfLow(left: PrekeyCounts): void {
    if (this.prekeyBatch <= 0 || this.replenishing) return;
    if (left.prekeys >= REPLENISH_BELOW && left.kyber_prekeys >= REPLENISH_BELOW) return;
    this.replenishing = true;
    // Queued, not inline: the bundle answer need not wait for key generation.
    this.serial(async () => {
      try {
        this.publishOneTimeBatch();
      } finally {
        this.replenishing = false;
      }
    }).catch((err: unknown) => this.deps.log.error({ ...this.logId, err: maskNumbers((err as Error).message) }, 'prekey replenish failed'));
  }

  /** Whether an operation is queued or running. */
  get busy(): boolean {
    return this.pending > 0;
  }

  /** Resolves when everything queued so far has run. */
  idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }

  /**
   * The address of (waId, deviceId) with a usable session, built from the directory's bundle if there is none;
   * the user accepts a changed safety number, as a phone lets its user do. Throws UnknownAddressError.
   */
  private async sessionWith(waId: string, deviceId: number): Promise<ProtocolAddress> {
    const remote = ProtocolAddress.new(waId, deviceId);
    const s = this.stores;
    const session = await s.sessions.getSession(remote);
    if (session?.hasCurrentState()) return remote;
    const bundle = this.deps.directory.take(waId, deviceId);
    if (!bundle) throw new UnknownAddressError(`no bundle for ${waId}.${deviceId}`);
    const known = await s.identities.getIdentity(remote);
    if (known && !known.equals(bundle.identityKey())) await s.identities.saveIdentity(remote, bundle.identityKey());
    await processPreKeyBundle(bundle, remote, this.address, s.sessions, s.identities);
    return remote;
  }

  /** Encrypts content on the pairwise session with (waId, deviceId) (a sender key for a group). */
  private async encryptTo(waId: string, deviceId: number, content: Content): Promise<CiphertextMessage> {
    const remote = await this.sessionWith(waId, deviceId);
    return signalEncrypt(plaintext(content), remote, this.address, this.stores.sessions, this.stores.identities);
  }

  private install(): void {
    this.keys = generateKeys({ oneTime: 0 });
    this.stores = new PartyStores(this.keys, () => this.counters.identity_changes++);
    this.nextPreKeyId = 1;
    this.nextKyberId = 2;
    this.publishOneTimeBatch();
  }

  private publishOneTimeBatch(): void {
    const preKeys = generatePreKeys(this.nextPreKeyId, this.prekeyBatch);
    const kyberPreKeys = generateKyberPreKeys(this.keys.identity, this.nextKyberId, this.prekeyBatch);
    for (let i = 0; i < this.prekeyBatch; i++) {
      this.nextPreKeyId = nextKeyId(this.nextPreKeyId);
      this.nextKyberId = nextKeyId(this.nextKyberId);
      // Kyber id 1 is the last-resort key; a wrapped counter must not hand it out as one-time.
      if (this.nextKyberId === 1) this.nextKyberId = 2;
    }
    this.stores.addOneTimeKeys(preKeys, kyberPreKeys);
    this.deps.directory.publish(this.waId, keyUploadFromRecords({ ...this.keys, preKeys, kyberPreKeys }), this.deviceId);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    this.pending++;
    const run = this.tail.then(fn).finally(() => this.pending--);
    this.tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async decrypt(env: DeviceEnvelope): Promise<void> {
    const s = this.stores;
    const remote = ProtocolAddress.new(env.from, DEVICE_ID);
    const known = this.decryptedIds.has(env.id);
    let bytes: Uint8Array;
    try {
      bytes =
        env.type === 3
          ? await signalDecryptPreKey(PreKeySignalMessage.deserialize(env.body), remote, this.address,
              s.sessions, s.identities, s.preKeys, s.signedPreKeys, s.kyberPreKeys)
          : await signalDecrypt(SignalMessage.deserialize(env.body), remote, this.address, s.sessions, s.identities);
    } catch (err) {
      // Any copy of an envelope already decrypted is a duplicate, whatever libsignal says about it.
      if (known) return this.duplicate(env);
      if (LibSignalErrorBase.is(err, ErrorCode.DuplicatedMessage)) {
        this.counters.key_reuse++;
        this.deps.log.error({ ...this.logId, envelope: env.id }, 'message key reused');
        return;
      }
      return this.failed(env, failureReason(err), err);
    }
    this.counters.decrypted++;
    if (!known) this.decryptedIds.set(env.id, null);
    if (env.type === 3 && !env.peer) await this.maybeAckSession(env, remote);
    let content: Content;
    try {
      content = decodeContent(bytes);
    } catch {
      this.failures.other = (this.failures.other ?? 0) + 1;
      this.deps.log.warn({ ...this.logId, envelope: env.id }, 'undecodable content');
      return;
    }
    if (content.kind === 'sender_key') {
      try {
        await this.groups.onSenderKey(content, env.from, !env.peer);
      } catch (err) {
        // Decrypted but not a usable key: a retry request would bring the same bytes back, so only count it.
        this.failures.invalid_message = (this.failures.invalid_message ?? 0) + 1;
        this.deps.log.warn({ ...this.logId, envelope: env.id, err: maskNumbers(String((err as Error)?.message)) }, 'sender key not processed');
        return;
      }
      if (!env.peer) this.receipt('delivered', env.id, env.from);
    } else if (env.peer) {
      // Between users' phones only sender keys travel; anything else from a peer is ignored.
      this.deps.log.warn({ ...this.logId, envelope: env.id, kind: content.kind }, 'unexpected content from another user');
    } else if (content.kind === 'message') {
      this.decryptedIds.set(env.id, content.id);
      this.onMessage(content, env.from);
    } else if (content.kind === 'skip') {
      this.onSkip(env.from, content.seq);
      this.receipt('delivered', env.id, env.from);
    } else if (content.kind === 'receipt') {
      for (const id of content.ids) {
        const m = this.outbox.get(id);
        if (m && m.to === env.from) m.read = true;
      }
      this.receipt('delivered', env.id, env.from);
    }
  }

  private duplicate(env: DeviceEnvelope): void {
    const messageId = this.decryptedIds.get(env.id);
    const r = messageId ? this.received.get(messageId) : undefined;
    // A known non-message envelope (a skip notice, a sender key): acknowledged again, so the sender stops
    // retransmitting it (a peer's gets no receipt: receipts are the router's events).
    if (!r) return env.peer ? undefined : this.receipt('delivered', env.id, env.from);
    r.arrivals++;
    this.counters.duplicates++;
    if (r.shown) this.receipt('delivered', r.content.id, r.sender);
  }

  private failed(env: DeviceEnvelope, reason: FailureReason, err: unknown): void {
    this.failures[reason] = (this.failures[reason] ?? 0) + 1;
    this.deps.log.warn(
      { ...this.logId, envelope: env.id, reason, err: maskNumbers(String((err as Error)?.message)) },
      env.peer ? 'decrypt of a peer envelope failed' : 'decrypt failed; sending retry request',
    );
    if (env.peer) return;
    let body: Uint8Array;
    try {
      body = PlaintextContent.from(DecryptionErrorMessage.forOriginal(env.body, env.type, env.acceptedAt, DEVICE_ID)).serialize();
    } catch {
      return; // bytes too broken to quote: nothing useful to ask for
    }
    this.deps.toRouter({
      kind: 'envelope',
      id: env.id,
      from: this.waId,
      device_id: this.deviceId,
      to: env.from,
      type: 8,
      body: b64(body),
      timestamp: unixSeconds(this.deps.clock()),
    });
  }

  /**
   * Acknowledges a session the business started, so it switches to Whisper messages. The business keeps
   * sending PreKey messages until the ack arrives, so one ack per new session, repeated only after a
   * pause (the first one may have been lost), keeps the router's inbound traffic small.
   */
  private async maybeAckSession(env: DeviceEnvelope, remote: ProtocolAddress): Promise<void> {
    const m = PreKeySignalMessage.deserialize(env.body);
    const key = `${m.registrationId()}:${m.signedPreKeyId()}:${m.preKeyId() ?? '-'}`;
    const now = this.deps.clock();
    const last = this.lastSessionAck.get(env.from);
    if (last && last.key === key && now - last.at < SESSION_ACK_REPEAT_MS) return;
    this.lastSessionAck.set(env.from, { key, at: now });
    let ct;
    try {
      ct = await signalEncrypt(plaintext({ v: 1, kind: 'session_ack' }), remote, this.address, this.stores.sessions, this.stores.identities);
    } catch (err) {
      this.deps.log.error({ ...this.logId, err: maskNumbers((err as Error).message) }, 'session ack not encrypted');
      return;
    }
    this.deps.toRouter({
      kind: 'envelope',
      id: newWamid(),
      from: this.waId,
      device_id: this.deviceId,
      to: env.from,
      type: ct.type() as 2 | 3,
      body: b64(ct.serialize()),
      timestamp: unixSeconds(now),
    });
  }

  private inbox(sender: string): Inbox {
    let box = this.inboxes.get(sender);
    if (!box) {
      box = { next: 1, held: new Map(), skipped: new Set() };
      this.inboxes.set(sender, box);
    }
    return box;
  }

  private onMessage(content: MessageContent, sender: string): void {
    openAttachments(content.message as Record<string, unknown>, this.deps.blob, (err) =>
      this.deps.log.warn({ ...this.logId, err }, 'attachment could not be opened'));
    const existing = this.received.get(content.id);
    if (existing) {
      // A re-encrypted copy (after a retry request) of a message the device already has.
      existing.arrivals++;
      this.counters.duplicates++;
      if (existing.shown) this.receipt('delivered', content.id, existing.sender);
      return;
    }
    const r: Received = { content, arrivals: 1, shown: false, sender };
    this.received.set(content.id, r);
    const box = this.inbox(sender);
    // Late (its seq was skipped) or a sequence number used twice: show it rather than lose it.
    if (content.seq < box.next || box.held.has(content.seq)) return this.show(r);
    box.held.set(content.seq, r);
    this.counters.held++;
    this.release(box);
  }

  private onSkip(sender: string, seq: number): void {
    const box = this.inbox(sender);
    if (seq < box.next || box.held.has(seq)) return;
    box.skipped.add(seq);
    this.release(box);
  }

  private release(box: Inbox): void {
    for (;;) {
      const r = box.held.get(box.next);
      if (r) {
        box.held.delete(box.next);
        this.counters.held--;
        this.show(r);
      } else if (!box.skipped.delete(box.next)) {
        return;
      }
      box.next++;
    }
  }

  private show(r: Received): void {
    r.shown = true;
    this.shown.push(r);
    this.receipt('delivered', r.content.id, r.sender);
    if (this.user.autoReply) {
      // Queued behind the current decryption on the device's own chain; a failure only costs the reply.
      void this.send(r.sender, { type: 'text', text: { body: 'Thanks, got your message!' }, context: { from: r.sender, id: r.content.id } }).catch(() => undefined);
    }
  }

  private receipt(status: 'delivered' | 'read', id: string, business: string, groupId?: string): void {
    this.deps.toRouter({
      kind: 'receipt', status, id, from: this.waId, device_id: this.deviceId, to: business,
      ...(groupId === undefined ? {} : { group_id: groupId }), timestamp: unixSeconds(this.deps.clock()),
    });
  }
}
