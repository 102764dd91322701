import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * JSON with every non-ASCII UTF-16 code unit escaped as lowercase `\uXXXX` (astral characters as their two
 * surrogates), as Meta signs webhook bodies: verifiers that escape before hashing and verifiers that hash
 * the raw bytes then agree.
 * @example asciiJson({ t: 'äö' }) // '{"t":"\\u00e4\\u00f6"}'
 */
export function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u0080-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** `sha256=<lowercase hex HMAC-SHA256(appSecret, exact body bytes)>`, the X-Hub-Signature-256 value. */
export function signBody(appSecret: string, body: string | Buffer): string {
  return `sha256=${createHmac('sha256', appSecret).update(body).digest('hex')}`;
}

/** Checks an X-Hub-Signature-256 header against the exact body bytes, in constant time. */
export function verifySignature(appSecret: string, body: string | Buffer, header: string | undefined): boolean {
  if (!header) return false;
  const expected = Buffer.from(signBody(appSecret, body));
  const given = Buffer.from(header);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
