import { CiphertextMessageType, DecryptionErrorMessage, PlaintextContent } from '@signalapp/libsignal-client';
import type { Command } from '../../../machines/commands.ts';
import type { ConversationEvent } from '../../../machines/conversation.ts';
import type { BusinessPreKeys } from '../../signal/business-prekeys.ts';
import { classifySignalError } from '../../signal/classify.ts';
import { decodeContent, encodeContent } from '../../signal/content.ts';
import { open } from '../../store/sealer.ts';
import { isInboundMessageId } from '../ids.ts';
import { TransportUnavailableError, UnknownAddressError } from '../transport-client.ts';
import { receiveAttachments } from './inbound-media.ts';
import type { Loaded, RowOp } from './loaded.ts';
import type { HostParts } from './parts.ts';

/** Fetches the user's prekey bundle and starts a session with it; the result is the machine's next event. */
export async function fetchBundle(h: HostParts, c: Loaded, at: number): Promise<ConversationEvent> {
  try {
    const bundle = await h.transport.fetchBundle(c.meta.waId);
    const { identityChanged } = await c.crypto.processBundle(bundle, new Date(at));
    return { type: 'BUNDLE_FETCHED', at, ...(identityChanged ? { identityChanged } : {}) };
  } catch (e) {
    if (e instanceof UnknownAddressError) return { type: 'BUNDLE_FAILED', at, reason: 'unknown_recipient' };
    if (e instanceof TransportUnavailableError) return { type: 'BUNDLE_FAILED', at, reason: 'unavailable' };
    h.log.warn({ conversation_id: c.id, failure: classifySignalError(e), err: (e as Error).message }, 'bundle rejected');
    return { type: 'BUNDLE_FAILED', at, reason: 'bad_bundle' };
  }
}

/** Encrypts a message (or a skip, or a read receipt) for the user; the ciphertext goes into the row via `op`. */
export async function encrypt(h: HostParts, c: Loaded, cmd: Extract<Command, { type: 'message.encrypt' }>, at: number, op: RowOp): Promise<ConversationEvent> {
  const { wamid, seq } = cmd;
  let plaintext: Uint8Array;
  if (cmd.skip) {
    plaintext = encodeContent({ v: 1, kind: 'skip', seq });
  } else if (cmd.read) {
    plaintext = encodeContent({ v: 1, kind: 'receipt', status: 'read', ids: cmd.read });
  } else {
    const rowKey = h.keys.message(c.id, wamid);
    const sealed = await c.redis.hget(rowKey, 'c');
    if (!sealed) return { type: 'ENCRYPT_FAILED', wamid, at, reason: 'message_missing' };
    const stored = JSON.parse(open(c.dk, sealed, `${rowKey}:c`).toString()) as { message: Record<string, unknown> & { type: string }; ts: string };
    plaintext = encodeContent({ v: 1, kind: 'message', id: wamid, seq, from: c.meta.display, timestamp: stored.ts, message: stored.message });
  }
  try {
    const ct = await c.crypto.encrypt(plaintext, new Date(at));
    const body = Buffer.from(ct.body).toString('base64');
    c.ciphertexts.set(wamid, { type: ct.type, body });
    op.set = { ...op.set, ct: body, ty: String(ct.type) };
    return { type: 'ENCRYPTED', wamid, at, messageType: ct.type };
  } catch (e) {
    const reason = classifySignalError(e);
    if (reason === 'no_session' || reason === 'untrusted_identity') c.crypto.archive();
    return { type: 'ENCRYPT_FAILED', wamid, at, reason };
  }
}

/** Decrypts an envelope from the user (a message, a session ack, or a retry request); the result is the next event. */
export async function decrypt(h: HostParts, c: Loaded, id: string, at: number): Promise<ConversationEvent> {
  const env = c.envelopes.get(id);
  if (!env) return { type: 'DECRYPT_FAILED', id, at, reason: 'envelope_missing' };
  if (env.messageType === CiphertextMessageType.Plaintext) {
    // A retry request: the device could not decrypt message `id`; it is not encrypted (PlaintextContent).
    try {
      const dem = DecryptionErrorMessage.extractFromSerializedBody(PlaintextContent.deserialize(new Uint8Array(Buffer.from(env.body, 'base64'))).body());
      return { type: 'RETRY_REQUESTED', wamid: id, at, ratchetMatches: c.crypto.ratchetKeyMatches(dem.ratchetKey()) };
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
    const bytes = await c.crypto.decrypt({ type: env.messageType, body: Buffer.from(env.body, 'base64') }, prekeys);
    const content = decodeContent(bytes);
    if (content.kind === 'session_ack') return { type: 'SESSION_ACK', at };
    if (content.kind !== 'message') return { type: 'DECRYPT_FAILED', id, at, reason: `unsupported_${content.kind}` };
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
