import { createHash } from 'node:crypto';
import { decryptAttachment, type AttachmentPointer } from '../media/attachment.ts';

/**
 * Media arrive as attachment pointers: the ciphertext is fetched from the transport (`blob`), its digest
 * checked, decrypted with the key the message carried, and shown as the file's type, hash and size (the key
 * is not kept in what the device shows). Rewrites `message` in place; `warn` gets the reason of a failure.
 */
export function openAttachments(message: Record<string, unknown>, blob: ((pointer: string) => Buffer | undefined) | undefined, warn: (err: string) => void): void {
  const kind = String(message.type);
  const media = message[kind] as { attachment?: AttachmentPointer } | undefined;
  if (!media?.attachment) return;
  const { attachment, ...rest } = media;
  try {
    const ciphertext = blob?.(attachment.pointer);
    if (!ciphertext) throw new Error('attachment not found');
    const bytes = decryptAttachment(attachment, ciphertext);
    const sha256 = createHash('sha256').update(bytes).digest('base64');
    if (sha256 !== attachment.sha256) throw new Error('attachment hash mismatch');
    message[kind] = { ...rest, mime_type: attachment.mime_type, sha256, file_size: bytes.length };
  } catch (e) {
    warn((e as Error).message);
    message[kind] = { ...rest, mime_type: attachment.mime_type, error: 'attachment could not be opened' };
  }
}
