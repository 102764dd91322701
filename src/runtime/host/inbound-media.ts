import { createHash } from 'node:crypto';
import { decryptAttachment, type AttachmentPointer } from '../../media/attachment.ts';
import { ATTACHMENT_OVERHEAD_BYTES, checkInboundMedia, inboundMaxBytes, storedMimeType, type MediaRefusal } from '../../media/limits.ts';
import { MediaQuotaError } from '../../media/store.ts';
import { statusError } from '../../webhook/envelope.ts';
import { AttachmentTooLargeError } from '../transport-client.ts';
import { keyTtlMs, type Loaded } from './loaded.ts';
import type { HostParts } from './parts.ts';

/**
 * A user's file arrives as an attachment pointer: its declared type and size are checked against the Cloud
 * API's limits before anything is fetched; the ciphertext is fetched from the transport (no more than the
 * limit allows), checked and decrypted with the key the message carried, its real size checked, and stored
 * as the business's media within its quota; the business gets the Cloud API's `{id, mime_type, sha256,
 * caption}`. A refused file is not kept: a type that is not supported arrives as an `unsupported` message
 * with error 131051; a file too large, over the quota, or that cannot be fetched or opened, with 131052.
 */
export async function receiveAttachments<M extends Record<string, unknown> & { type: string }>(h: HostParts, c: Loaded, message: M): Promise<M> {
  const kind = message.type;
  const part = message[kind] as { attachment?: AttachmentPointer } | undefined;
  if (!part?.attachment) return message;
  const { attachment, ...rest } = part;
  const mimeType = storedMimeType(String(attachment.mime_type ?? ''));
  const refuse = (r: MediaRefusal): M => {
    h.log.info({ conversation_id: c.id, code: r.code, details: r.details }, 'inbound media refused');
    // The Cloud API delivers a type it does not support without its content: only the error (and a reply's context).
    if (r.code === 131051) return { ...(message.context ? { context: message.context } : {}), type: 'unsupported', errors: [statusError(131051, r.details)] } as unknown as M;
    return { ...message, [kind]: { ...rest, mime_type: mimeType }, errors: [statusError(131052, r.details)] };
  };
  const declared = checkInboundMedia(kind, mimeType, typeof attachment.file_size === 'number' ? attachment.file_size : undefined);
  if (declared) return refuse(declared);
  const max = inboundMaxBytes(kind, mimeType)!;
  try {
    if (!h.media) throw new Error('media are not carried by this worker');
    const ciphertext = await h.transport.downloadAttachment(attachment.pointer, max + ATTACHMENT_OVERHEAD_BYTES);
    if (!ciphertext) throw new Error('the transport has no such attachment');
    const bytes = decryptAttachment(attachment, ciphertext);
    // The pointer's size is the sender's word: the file itself decides.
    const actual = checkInboundMedia(kind, mimeType, bytes.length);
    if (actual) return refuse(actual);
    const sha256 = createHash('sha256').update(bytes).digest('base64');
    if (sha256 !== attachment.sha256) throw new Error('attachment hash mismatch');
    const filename = typeof (rest as { filename?: unknown }).filename === 'string' ? (rest as { filename: string }).filename : undefined;
    const stored = await h.media.put(c.meta.businessId, c.meta.phoneNumberId, bytes, mimeType, c.retentionMs, filename);
    // Remembered with the conversation, so the file goes with it (an erase, or the end of its retention).
    await c.redis.multi().sadd(h.keys.conversationMedia(c.id), stored.id).pexpire(h.keys.conversationMedia(c.id), keyTtlMs(c)).exec();
    return { ...message, [kind]: { ...rest, id: stored.id, mime_type: mimeType, sha256 } };
  } catch (e) {
    if (e instanceof AttachmentTooLargeError) return refuse({ code: 131052, details: `${kind} files are at most ${max} bytes; this one has more` });
    if (e instanceof MediaQuotaError) return refuse({ code: 131052, details: e.message });
    h.log.warn({ conversation_id: c.id, err: (e as Error).message }, 'inbound media could not be received');
    return { ...message, [kind]: { ...rest, mime_type: mimeType }, errors: [statusError(131052)] };
  }
}
