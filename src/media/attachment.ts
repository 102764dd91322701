import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * Media travel as Signal does it: the file is encrypted with a fresh key (AES-256-GCM) and only the
 * ciphertext goes to the transport's blob store; the key, the ciphertext's digest and the file's details
 * ride inside the end-to-end encrypted message. The transport never sees the key or the plaintext.
 */
export interface AttachmentPointer {
  /** Where the transport keeps the ciphertext. */
  pointer: string;
  /** Base64 key (32 bytes) and IV (12 bytes). */
  key: string;
  iv: string;
  /** Base64 SHA-256 of the ciphertext (checked before decrypting). */
  digest: string;
  mime_type: string;
  /** Base64 SHA-256 of the plaintext file (what the Cloud API reports as `sha256`). */
  sha256: string;
  file_size: number;
}

export function encryptAttachment(bytes: Buffer): { ciphertext: Buffer; key: Buffer; iv: Buffer; digest: string } {
  const key = randomBytes(32);
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  const ciphertext = Buffer.concat([c.update(bytes), c.final(), c.getAuthTag()]);
  return { ciphertext, key, iv, digest: createHash('sha256').update(ciphertext).digest('base64') };
}

/** The file, after checking the ciphertext's digest and its authentication tag; throws when either fails. */
export function decryptAttachment(p: Pick<AttachmentPointer, 'key' | 'iv' | 'digest'>, ciphertext: Buffer): Buffer {
  if (createHash('sha256').update(ciphertext).digest('base64') !== p.digest) throw new Error('attachment digest mismatch');
  const d = createDecipheriv('aes-256-gcm', Buffer.from(p.key, 'base64'), Buffer.from(p.iv, 'base64'));
  d.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  return Buffer.concat([d.update(ciphertext.subarray(0, ciphertext.length - 16)), d.final()]);
}
