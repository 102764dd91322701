import { randomUUID } from 'node:crypto';
import {
  ErrorCode,
  LibSignalErrorBase,
  ProtocolAddress,
  SenderKeyDistributionMessage,
  SenderKeyMessage,
  groupDecrypt,
  groupEncrypt,
  processSenderKeyDistributionMessage,
  type CiphertextMessage,
} from '@signalapp/libsignal-client';
import { maskPhone } from '../log.ts';
import { decodeContent, type Content, type MessageContent, type SenderKeyContent } from '../signal/content.ts';
import type { PartyStores } from './device-stores.ts';
import { DEVICE_ID } from './directory.ts';
import { unixSeconds } from './events.ts';
import { newWamid } from './ids.ts';
import { maskNumbers } from './mask.ts';
import { b64, failureReason, plaintext, type DeviceDeps, type DeviceStats, type FailureReason, type GroupEnvelope, type Received } from './device-model.ts';

/** Most group messages a device holds while it waits for their senders' keys; later ones are dropped (and logged). */
export const MAX_HELD_GROUP_MESSAGES = 256;

/** One device of another member, as the transport's directory and accounts name it. */
export interface GroupPeer {
  waId: string;
  deviceId: number;
  registrationId: number;
}

/** Where a member's group message goes: the group, its owner, and every device of every other member. */
export interface GroupSendTarget {
  groupId: string;
  owner: string;
  peers: GroupPeer[];
}

/** What a device's group logic needs from the device around it. */
export interface GroupHost {
  readonly waId: string;
  readonly deviceId: number;
  readonly address: ProtocolAddress;
  readonly deps: DeviceDeps;
  readonly profileName: string;
  /** The device's current stores (replaced when it is reinstalled). */
  stores(): PartyStores;
  /** Encrypts content on the pairwise session with (waId, deviceId), building one from the directory if needed. */
  encryptTo(waId: string, deviceId: number, content: Content): Promise<CiphertextMessage>;
  /** Shows a decrypted group message in the device's view. */
  show(r: Received): void;
  /** A `delivered` receipt for group message `id` to the group's owner, naming the group. */
  groupReceipt(id: string, owner: string, groupId: string): void;
  /** The device's counters (`decrypted`, `duplicates`, `held`, `key_reuse`) and failure buckets. */
  readonly counters: Omit<DeviceStats, 'failures'>;
  readonly failures: Partial<Record<FailureReason, number>>;
}

/** The phone's own sender key for a group: its distribution id, who has it, and its message counter. */
interface OwnKey {
  distributionId: string;
  /** Members the key was distributed among; one of them leaving makes the phone start a new key. */
  members: Set<string>;
  /** `owner` and `waId.deviceId.registrationId` of every device the key was sent to. */
  sentTo: Set<string>;
  seq: number;
}

const seenKey = (groupId: string, id: string): string => `${groupId}\n${id}`;

/**
 * A device's side of groups: its SenderKeyStore (in its PartyStores), the groups it holds keys for, the group
 * messages it shows once each (keyed by group and message id), messages held until their sender's key arrives,
 * and, on a phone, its own sender key per group, distributed over pairwise sessions before its first message.
 * Runs inside the device's serial chain (libsignal does no locking).
 */
export class DeviceGroups {
  private readonly seen = new Map<string, Received>();
  /** Group messages waiting for a key, by `sender/distribution id`. */
  private readonly held = new Map<string, GroupEnvelope[]>();
  private heldCount = 0;
  private readonly own = new Map<string, OwnKey>();
  /** Groups the device holds a sender key for, with the senders whose keys it has. */
  private readonly known = new Map<string, Set<string>>();
  /** Groups the user left: their messages are no longer shown. */
  private readonly left = new Set<string>();

  constructor(private readonly host: GroupHost) {}

  /** The groups this device knows, for `GET /sim/devices/{wa_id}/groups`. */
  describe(): { group_id: string; senders: string[]; left: boolean; own_distribution_id: string | null }[] {
    const ids = new Set([...this.known.keys(), ...this.own.keys(), ...this.left]);
    return [...ids].sort().map((id) => ({
      group_id: id, senders: [...(this.known.get(id) ?? [])].sort(), left: this.left.has(id), own_distribution_id: this.own.get(id)?.distributionId ?? null,
    }));
  }

  /** Everything forgotten: the device was reinstalled (its stores, sender keys included, are new). */
  reset(): void {
    this.held.clear();
    this.counters.held -= this.heldCount;
    this.heldCount = 0;
    this.own.clear();
    this.known.clear();
  }

  /** The user left the group: its messages are no longer shown, and the phone's own key for it is dropped. */
  leave(groupId: string): void {
    this.left.add(groupId);
    this.own.delete(groupId);
  }

  /**
   * A sender key arrived over a pairwise session from `sender` (device 1): processed into the SenderKeyStore,
   * then every group message held for it is decrypted. A key from the owner for a group the user left means
   * the business added the user again. Throws on a malformed distribution message.
   */
  async onSenderKey(content: SenderKeyContent, sender: string, fromBusiness: boolean): Promise<void> {
    const skdm = SenderKeyDistributionMessage.deserialize(new Uint8Array(Buffer.from(content.skdm, 'base64')));
    if (skdm.distributionId() !== content.distribution_id) throw new Error('distribution id differs from the one inside the key');
    const address = ProtocolAddress.new(sender, DEVICE_ID);
    await processSenderKeyDistributionMessage(address, skdm, this.stores.senderKeys);
    if (fromBusiness) this.left.delete(content.group_id);
    const senders = this.known.get(content.group_id) ?? new Set<string>();
    senders.add(sender);
    this.known.set(content.group_id, senders);
    const waiting = this.held.get(`${sender}/${content.distribution_id}`);
    if (!waiting) return;
    this.held.delete(`${sender}/${content.distribution_id}`);
    this.heldCount -= waiting.length;
    this.counters.held -= waiting.length;
    for (const env of waiting) await this.receive(env);
  }

  /**
   * A relayed group message: shown once (further copies count as `duplicates` and are acknowledged again),
   * held when the sender's key for its distribution id has not arrived yet, counted as a failure (no receipt,
   * so the business resends it) when it does not decrypt.
   */
  async receive(env: GroupEnvelope): Promise<void> {
    if (this.left.has(env.group_id)) return;
    const existing = this.seen.get(seenKey(env.group_id, env.id));
    if (existing) return this.duplicate(existing, env);
    let distributionId: string;
    try {
      distributionId = SenderKeyMessage.deserialize(env.body).distributionId();
    } catch (err) {
      return this.failed(env, 'invalid_message', err);
    }
    const sender = ProtocolAddress.new(env.from, DEVICE_ID);
    if (!this.stores.senderKeys.has(sender, distributionId)) return this.hold(env, `${env.from}/${distributionId}`);
    let bytes: Uint8Array;
    try {
      bytes = await groupDecrypt(sender, this.stores.senderKeys, env.body);
    } catch (err) {
      if (LibSignalErrorBase.is(err, ErrorCode.DuplicatedMessage)) {
        this.counters.key_reuse++;
        this.host.deps.log.error({ ...this.logId, envelope: env.id, group: maskNumbers(env.group_id) }, 'group message key reused');
        return;
      }
      return this.failed(env, failureReason(err), err);
    }
    this.counters.decrypted++;
    let content: Content;
    try {
      content = decodeContent(bytes);
    } catch (err) {
      return this.failed(env, 'other', err);
    }
    // The transport names the group and the sender; what is inside must agree (a member cannot post elsewhere).
    if (content.kind !== 'message' || content.group_id !== env.group_id || content.from !== env.from) {
      return this.failed(env, 'other', new Error('group content does not match its envelope'));
    }
    const again = this.seen.get(seenKey(env.group_id, content.id));
    if (again) return this.duplicate(again, env);
    const r: Received = { content, arrivals: 1, shown: true, sender: env.from };
    this.seen.set(seenKey(env.group_id, env.id), r);
    this.seen.set(seenKey(env.group_id, content.id), r);
    this.host.show(r);
    if (env.fromOwner) this.host.groupReceipt(content.id, env.from, env.group_id);
  }

  /**
   * The phone writes to a group: it makes its sender key for the group if it has none (or a new one when a
   * member it distributed to is no longer listed), sends it over pairwise sessions to the owner (an `envelope`
   * event to the router) and to every device of every other member it has not reached yet, then encrypts the
   * text once with `groupEncrypt` and hands it to the transport. Returns the message id.
   */
  async send(target: GroupSendTarget, text: string): Promise<string> {
    const { deps, waId } = this.host;
    const members = new Set(target.peers.map((p) => p.waId));
    let own = this.own.get(target.groupId);
    if (!own || [...own.members].some((m) => !members.has(m))) {
      own = { distributionId: randomUUID(), members: new Set(), sentTo: new Set(), seq: own?.seq ?? 0 };
      this.own.set(target.groupId, own);
    }
    for (const m of members) own.members.add(m);
    this.left.delete(target.groupId);
    const skdm = await SenderKeyDistributionMessage.create(this.host.address, own.distributionId, this.stores.senderKeys);
    const key: SenderKeyContent = { v: 1, kind: 'sender_key', group_id: target.groupId, distribution_id: own.distributionId, skdm: b64(skdm.serialize()) };
    if (!own.sentTo.has(target.owner)) {
      const ct = await this.host.encryptTo(target.owner, DEVICE_ID, key);
      deps.toRouter({
        kind: 'envelope', id: newWamid(), from: waId, device_id: this.host.deviceId, to: target.owner,
        type: ct.type() as 2 | 3, body: b64(ct.serialize()), timestamp: unixSeconds(deps.clock()),
      });
      own.sentTo.add(target.owner);
    }
    for (const p of target.peers) {
      const reached = `${p.waId}.${p.deviceId}.${p.registrationId}`;
      if (own.sentTo.has(reached)) continue;
      try {
        const ct = await this.host.encryptTo(p.waId, p.deviceId, key);
        deps.toPeer?.({ id: newWamid(), from: waId, to: p.waId, deviceId: p.deviceId, type: ct.type() as 2 | 3, body: new Uint8Array(ct.serialize()) });
        own.sentTo.add(reached);
      } catch (err) {
        // A device without keys (unlinked meanwhile): it cannot read this member's messages; tried again next time.
        deps.log.warn({ ...this.logId, group: maskNumbers(target.groupId), peer_device: p.deviceId, err: maskNumbers((err as Error).message) }, 'sender key not sent to a member device');
      }
    }
    own.seq++;
    const id = newWamid();
    const content: MessageContent = {
      v: 1, kind: 'message', id, seq: own.seq, from: waId, timestamp: unixSeconds(deps.clock()),
      message: { type: 'text', text: { body: text } }, profile_name: this.host.profileName, group_id: target.groupId,
    };
    const ct = await groupEncrypt(this.host.address, own.distributionId, this.stores.senderKeys, plaintext(content));
    deps.toGroup?.({ id, group_id: target.groupId, from: waId, body: new Uint8Array(ct.serialize()) });
    return id;
  }

  private get stores(): PartyStores {
    return this.host.stores();
  }

  private get counters(): Omit<DeviceStats, 'failures'> {
    return this.host.counters;
  }

  private get logId(): { wa_id: string; device: number } {
    return { wa_id: maskPhone(this.host.waId), device: this.host.deviceId };
  }

  private duplicate(r: Received, env: GroupEnvelope): void {
    r.arrivals++;
    this.counters.duplicates++;
    if (env.fromOwner) this.host.groupReceipt(r.content.id, env.from, env.group_id);
  }

  private hold(env: GroupEnvelope, key: string): void {
    if (this.heldCount >= MAX_HELD_GROUP_MESSAGES) {
      this.host.deps.log.warn({ ...this.logId, envelope: env.id, group: maskNumbers(env.group_id) }, 'group message dropped: too many waiting for a sender key');
      return;
    }
    this.held.set(key, [...(this.held.get(key) ?? []), env]);
    this.heldCount++;
    this.counters.held++;
  }

  private failed(env: GroupEnvelope, reason: FailureReason, err: unknown): void {
    this.host.failures[reason] = (this.host.failures[reason] ?? 0) + 1;
    this.host.deps.log.warn({ ...this.logId, envelope: env.id, group: maskNumbers(env.group_id), reason, err: maskNumbers(String((err as Error)?.message)) }, 'group message not decrypted');
  }
}
