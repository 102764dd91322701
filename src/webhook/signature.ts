import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * JSON with every non-ASCII UTF-16 code unit escaped as lowercase `\uXXXX` (astral characters as their two
 * surrogates), as Meta signs webhook bodies: verifiers that escape before hashing and verifiers that hash
 * the raw bytes then agree. DEL (0x7f) is escaped too, as Python's `ensure_ascii` and whatsapp-api-js's
 * `[^\0-~]` do, so the body is a fixed point of either escaper.
 * @example asciiJson({ t: 'äö' }) // '{"t":"\\u00e4\\u00f6"}'
 */
export function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const hmac = (appSecret: string, body: string | Buffer) => createHmac('sha256', appSecret).update(body).digest();

/** `sha256=<lowercase hex HMAC-SHA256(appSecret, exact body bytes)>`, the X-Hub-Signature-256 value. */
export function signBody(appSecret: string, body: string | Buffer): string {
  return `sha256=${hmac(appSecret, body).toString('hex')}`;
}

/**
 * Checks an X-Hub-Signature-256 header against the exact body bytes, in constant time. The digest is compared
 * as bytes, so upper-case hex from a third-party signer is accepted too.
 */
export function verifySignature(appSecret: string, body: string | Buffer, header: string | undefined): boolean {
  const m = /^sha256=([0-9a-fA-F]{64})$/.exec(header ?? '');
  return m !== null && timingSafeEqual(Buffer.from(m[1]!, 'hex'), hmac(appSecret, body));
}
