import { CiphertextMessageType, DecryptionErrorMessage, PlaintextContent, type PreKeyBundle } from '@signalapp/libsignal-client';
import { DeviceListError } from '../../signal/device-list.ts';
import { DeviceSessionError } from '../../signal/device-sessions.ts';
import { maskNumbers } from '../../log.ts';
import type { Command } from '../../../machines/commands.ts';
import type { ConversationEvent, OutboundMessage } from '../../../machines/conversation.ts';
import type { BusinessPreKeys } from '../../signal/business-prekeys.ts';
import { classifySignalError } from '../../signal/classify.ts';
import { decodeContent, encodeContent, type SenderKeyContent } from '../../signal/content.ts';
import { GROUP_ID } from '../../store/groups.ts';
import { open, seal } from '../../store/sealer.ts';
import { isInboundMessageId } from '../ids.ts';
import { TransportUnavailableError, UnknownAddressError, UnknownDeviceError } from '../transport-client.ts';
import { CIPHERTEXT_FIELDS, parseCiphertexts, readCiphertexts, type DeviceCiphertexts } from './device-envelopes.ts';
import { receiveAttachments } from './inbound-media.ts';
import { keepRowInfo, type Loaded, type RowOp } from './loaded.ts';
import type { HostParts } from './parts.ts';

/** The user's phone, the primary device (1): its list signs the others in, its identity is pinned. */
export const PRIMARY = 1;

/**
 * Fetches the user's device list and verifies it against the primary identity pinned for the conversation
 * (first use pins it), then the prekey bundle of every listed device without a usable session, and starts
 * those sessions; the result is the machine's next event. A companion whose bundle cannot be had (unlinked
 * meanwhile, or a bundle that is not the listed device's) is left without a session: the message goes to the
 * others, and the transport's 409 brings the router back here. A list that does not verify is either forged (the primary's own
 * bundle still has the pinned identity: refused, nothing is encrypted) or the phone's reinstall (a new
 * identity in its bundle: re-pinned, reported to the business as an identity change, as for one device).
 */
export async function fetchBundle(h: HostParts, c: Loaded, at: number): Promise<ConversationEvent> {
  try {
    const now = new Date(at);
    const list = await h.transport.fetchDeviceList(c.meta.waId);
    let identityChanged = false;
    let primaryBundle: PreKeyBundle | undefined;
    try {
      c.crypto.acceptList(list);
    } catch (e) {
      if (!(e instanceof DeviceListError) || (e.reason !== 'bad_signature' && e.reason !== 'primary_mismatch')) throw e;
      primaryBundle = await h.transport.fetchDeviceBundle(c.meta.waId, PRIMARY);
      const pinned = c.crypto.primaryIdentity();
      if (!pinned || pinned.equals(primaryBundle.identityKey())) throw e;
      c.crypto.repin(primaryBundle.identityKey());
      identityChanged = true;
      c.crypto.acceptList(list);
    }
    for (const device of c.crypto.needsBundle(now)) {
      if (device === PRIMARY) {
        await c.crypto.processBundle(PRIMARY, primaryBundle ?? (await h.transport.fetchDeviceBundle(c.meta.waId, PRIMARY)), now);
        continue;
      }
      try {
        await c.crypto.processBundle(device, await h.transport.fetchDeviceBundle(c.meta.waId, device), now);
      } catch (e) {
        if (!(e instanceof UnknownDeviceError) && !(e instanceof DeviceSessionError)) throw e;
        h.log.warn({ conversation_id: c.id, device, failure: e instanceof DeviceSessionError ? `device_${e.reason}` : 'unknown_device' }, 'companion keys not usable');
      }
    }
    return { type: 'BUNDLE_FETCHED', at, ...(identityChanged ? { identityChanged } : {}) };
  } catch (e) {
    if (e instanceof UnknownAddressError) return { type: 'BUNDLE_FAILED', at, reason: 'unknown_recipient' };
    if (e instanceof TransportUnavailableError) return { type: 'BUNDLE_FAILED', at, reason: 'unavailable' };
    const reason = e instanceof DeviceListError ? `device_list_${e.reason}` : e instanceof DeviceSessionError ? `device_${e.reason}` : classifySignalError(e);
    h.log.warn({ conversation_id: c.id, failure: reason, err: maskNumbers((e as Error).message) }, 'keys refused');
    return { type: 'BUNDLE_FAILED', at, reason: 'bad_bundle' };
  }
}

/**
 * Encrypts a message (or a skip, or a read receipt) for every device of the user the accepted list names and
 * a session reaches; the ciphertexts go into the row via `op`. A device that has one for it already keeps it
 * (a retransmission after a 409 is the same bytes for them), unless `redo` names it or its registration id
 * changed. Device 1 shows the conversation's sequence number; a companion gets its own, taken once per
 * message (`m.dseq` keeps those given before), so each device sees 1, 2, 3... whenever it was linked.
 */
export async function encrypt(
  h: HostParts, c: Loaded, cmd: Extract<Command, { type: 'message.encrypt' }>, at: number, op: RowOp, m: Pick<OutboundMessage, 'dseq' | 'redo'> = {},
): Promise<ConversationEvent> {
  const { wamid, seq } = cmd;
  const now = new Date(at);
  let message: { message: Record<string, unknown> & { type: string }; ts: string } | null = null;
  let senderKey: string | null = null;
  // The row's ciphertexts when read with its content (undefined: not read yet).
  let stored: ReturnType<typeof parseCiphertexts> | undefined;
  if (cmd.senderKey) {
    // The group's distribution message for this member (src/runtime/group-commands.ts); a newer one replaced it: dropped.
    const key = h.keys.groupMemberKey(c.meta.businessId, cmd.senderKey.group, c.id);
    const sealed = await c.redis.hget(key, 'd');
    const held = sealed ? (JSON.parse(open(c.dk, sealed, `${key}:d`).toString()) as { d: string; s: string }) : null;
    if (!held || held.d !== cmd.senderKey.dist) return { type: 'ENCRYPT_FAILED', wamid, at, reason: 'sender_key_replaced' };
    senderKey = held.s;
  } else if (!cmd.skip && !cmd.read) {
    // One read: the content, the ciphertexts made before (a retransmission's), and what statuses report.
    const rowKey = h.keys.message(c.id, wamid);
    const [sealed, cd, ct, ty, bo, k, acceptedAt, tp] = await c.redis.hmget(rowKey, 'c', ...CIPHERTEXT_FIELDS, 'bo', 'k', 'at', 'tp');
    if (!sealed) return { type: 'ENCRYPT_FAILED', wamid, at, reason: 'message_missing' };
    message = JSON.parse(open(c.dk, sealed, `${rowKey}:c`).toString()) as typeof message;
    stored = parseCiphertexts(c, cd ?? null, ct ?? null, ty ?? null);
    keepRowInfo(c, wamid, { bo: bo ?? null, k: k ?? null, at: acceptedAt ?? null, tp: tp ?? null });
  }
  const plaintext = (deviceSeq: number): Uint8Array => {
    if (cmd.skip) return encodeContent({ v: 1, kind: 'skip', seq: deviceSeq });
    if (cmd.read) return encodeContent({ v: 1, kind: 'receipt', status: 'read', ids: cmd.read });
    if (cmd.senderKey) return encodeContent({ v: 1, kind: 'sender_key', group_id: cmd.senderKey.group, distribution_id: cmd.senderKey.dist, skdm: senderKey! });
    return encodeContent({ v: 1, kind: 'message', id: wamid, seq: deviceSeq, from: c.meta.display, timestamp: message!.ts, message: message!.message });
  };
  // No verified list or no session with the phone yet (a user who wrote first): the machine fetches the keys
  // and tries again.
  if (!c.crypto.hasSession(PRIMARY, now)) {
    return { type: 'ENCRYPT_FAILED', wamid, at, reason: c.crypto.verified(PRIMARY) ? 'no_session' : 'not_listed' };
  }
  const kept = c.ciphertexts.has(wamid) ? { cts: c.ciphertexts.get(wamid)!, legacy: false } : stored !== undefined ? stored : await readCiphertexts(h, c, wamid);
  const before = kept?.cts ?? {};
  const cts: DeviceCiphertexts = {};
  const added: number[] = [];
  const seqs: Record<string, number> = {};
  let current = PRIMARY;
  try {
    for (const device of c.crypto.listedDevices()) {
      current = device;
      if (!c.crypto.hasSession(device, now)) continue;
      const had = before[device];
      if (had && !m.redo?.includes(device) && had[1] === c.crypto.registrationId(device)) {
        cts[device] = had;
        continue;
      }
      if (!had) added.push(device);
      // A skip names the seq this device got for the message it replaces (0, ignored, for one that got none);
      // a new message takes the device's next one.
      let deviceSeq = device === PRIMARY ? seq : m.dseq?.[device];
      if (deviceSeq === undefined) deviceSeq = cmd.skip || cmd.read || cmd.senderKey ? 0 : (seqs[device] = c.crypto.takeSeq(device));
      const ct = await c.crypto.encrypt(device, plaintext(deviceSeq), now);
      cts[device] = [ct.type, ct.registrationId, Buffer.from(ct.body).toString('base64')];
    }
  } catch (e) {
    const reason = e instanceof DeviceSessionError ? e.reason : classifySignalError(e);
    if (reason === 'untrusted_identity') c.crypto.archive(current);
    // Sequence numbers taken are the message's from now on (a device must never see one twice or miss one).
    return { type: 'ENCRYPT_FAILED', wamid, at, reason, ...(Object.keys(seqs).length ? { seqs } : {}) };
  }
  c.ciphertexts.set(wamid, cts);
  op.set = { ...op.set, cd: JSON.stringify(cts) };
  // A skip, a read receipt or a sender key has no accepted row: this makes it, with its TTL backstop.
  if (cmd.skip || cmd.read || cmd.senderKey) op.made = true;
  if (kept?.legacy) op.del = [...new Set([...(op.del ?? []), ...CIPHERTEXT_FIELDS.filter((f) => f !== 'cd')])];
  return {
    type: 'ENCRYPTED', wamid, at, messageType: cts[PRIMARY]![0], devices: Object.keys(cts).map(Number),
    ...(added.length && Object.keys(before).length ? { added } : {}), ...(Object.keys(seqs).length ? { seqs } : {}),
  };
}

/** Decrypts an envelope from the user (a message, a session ack, or a retry request); the result is the next event. */
export async function decrypt(h: HostParts, c: Loaded, id: string, at: number): Promise<ConversationEvent> {
  const env = c.envelopes.get(id);
  if (!env) return { type: 'DECRYPT_FAILED', id, at, reason: 'envelope_missing' };
  // Which of the user's devices wrote: its own session (a companion's only once its list names it).
  const device = env.device ?? PRIMARY;
  if (env.messageType === CiphertextMessageType.Plaintext) {
    // A retry request: the device could not decrypt message `id`; it is not encrypted (PlaintextContent). Only
    // a device on the accepted list is answered (one the transport made up gets nothing encrypted to it).
    if (device !== PRIMARY && !c.crypto.verified(device)) return { type: 'DECRYPT_FAILED', id, at, reason: 'unverified_device' };
    try {
      const dem = DecryptionErrorMessage.extractFromSerializedBody(PlaintextContent.deserialize(new Uint8Array(Buffer.from(env.body, 'base64'))).body());
      return { type: 'RETRY_REQUESTED', wamid: id, at, ratchetMatches: c.crypto.ratchetKeyMatches(device, dem.ratchetKey()), ...(device !== PRIMARY ? { device } : {}) };
    } catch {
      return { type: 'DECRYPT_FAILED', id, at, reason: 'malformed' };
    }
  }
  try {
    let prekeys: ReturnType<BusinessPreKeys['stores']> | undefined;
    if (env.messageType === CiphertextMessageType.PreKey && h.preKeysOf) {
      prekeys = (await h.preKeysOf(c.meta.phoneNumberId)).stores();
      c.afterCommit.push(prekeys.commit);
    }
    const bytes = await c.crypto.decrypt(device, { type: env.messageType, body: Buffer.from(env.body, 'base64') }, prekeys);
    const content = decodeContent(bytes);
    if (content.kind === 'session_ack') return { type: 'SESSION_ACK', at };
    if (content.kind === 'sender_key') return forwardSenderKey(h, c, id, device, content, at);
    if (content.kind !== 'message') return { type: 'DECRYPT_FAILED', id, at, reason: `unsupported_${content.kind}` };
    // A device that wrote first is believed only once the user's signed list names it with the identity it
    // proved (a device the transport added on its own never is).
    if (!c.crypto.verified(device) && !(await verifyWriter(h, c, device))) return { type: 'DECRYPT_FAILED', id, at, reason: 'unverified_device' };
    // The id is the device's to choose: it must be the envelope's (what the transport routed and may be
    // asked about) and shaped like a user's message id, never like one Sealpost makes.
    if (content.id !== id || !isInboundMessageId(content.id)) return { type: 'DECRYPT_FAILED', id, at, reason: 'bad_message_id' };
    // The same message again (a re-encrypted copy): one webhook message, not two.
    if (c.inbound.has(content.id) || (await c.redis.exists(h.keys.message(c.id, content.id)))) {
      return { type: 'MESSAGE_DUPLICATE', id: content.id, at };
    }
    // An id another conversation's message already has (mark-as-read finds messages by id) is refused.
    const owner = await c.redis.get(h.keys.messageIndex(content.id));
    if (owner && (JSON.parse(owner) as { c?: string }).c !== c.id) return { type: 'DECRYPT_FAILED', id, at, reason: 'message_id_taken' };
    c.inbound.set(content.id, {
      message: await receiveAttachments(h, c, content.message), timestamp: content.timestamp,
      ...(content.profile_name ? { profileName: content.profile_name } : {}),
    });
    return { type: 'MESSAGE_RECEIVED', id: content.id, at, seq: content.seq, messageType: content.message.type };
  } catch (e) {
    const reason = classifySignalError(e);
    // A copy of a message already decrypted: libsignal recognises the counter.
    if (reason === 'duplicate') return { type: 'MESSAGE_DUPLICATE', id, at };
    return { type: 'DECRYPT_FAILED', id, at, reason };
  }
}

/**
 * Fetches and accepts the user's signed device list after a device wrote first; false when the list refuses
 * it.
 */
async function verifyWriter(h: HostParts, c: Loaded, device: number): Promise<boolean> {
  try {
    c.crypto.acceptList(await h.transport.fetchDeviceList(c.meta.waId));
  } catch (e) {
    // The phone, as before lists: trust on first use, the list checked before any reply. A companion waits
    // for the list (the drain fails and is retried; nothing was committed).
    if (e instanceof TransportUnavailableError) {
      if (device === PRIMARY) return true;
      throw e;
    }
    h.log.warn({ conversation_id: c.id, err: maskNumbers((e as Error).message) }, 'device that wrote first is not on the user\'s list');
    return false;
  }
  return c.crypto.verified(device);
}

/**
 * The user's phone sent its sender key for a group (docs/groups.md, "Members write"): handed, sealed, to the
 * group's actor, which checks membership. Posted before this step commits (at least once: the actor keeps
 * one key per member, so a repeat changes nothing).
 */
async function forwardSenderKey(h: HostParts, c: Loaded, id: string, device: number, content: SenderKeyContent, at: number): Promise<ConversationEvent> {
  if (device !== PRIMARY || !GROUP_ID.test(content.group_id) || !h.sinks.group) return { type: 'DECRYPT_FAILED', id, at, reason: 'unsupported_sender_key' };
  const key = seal(c.dk, content.skdm, `member-key:${content.group_id}:${c.id}`);
  await h.sinks.group(c.meta.businessId, content.group_id, { type: 'MEMBER_KEY', at, member: c.id, dist: content.distribution_id, key });
  return { type: 'SENDER_KEY_RECEIVED', id, at };
}
