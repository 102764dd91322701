import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { asciiJson, signBody, verifySignature } from '../../src/webhook/signature.ts';

describe('webhook body and signature', () => {
  it('escapes non-ASCII as lowercase \\uXXXX, astral characters as two surrogate escapes, and round-trips', () => {
    const value = { t: 'äöå', e: '👋', mixed: 'naïve ✓ ok', sep: '\u2028', del: '\x7f', lone: '\ud800' };
    const s = asciiJson(value);
    expect(s).toBe('{"t":"\\u00e4\\u00f6\\u00e5","e":"\\ud83d\\udc4b","mixed":"na\\u00efve \\u2713 ok","sep":"\\u2028","del":"\\u007f","lone":"\\ud800"}');
    expect([...Buffer.from(s)].every((b) => b < 0x7f)).toBe(true);
    expect(JSON.parse(s)).toEqual(value);
  });

  it('is a fixed point of the escapers verifiers run before hashing (Python ensure_ascii, [^\\0-~])', () => {
    const s = asciiJson({ x: 'grüße 👋\x7f', y: ['\\u00e4 stays literal'] });
    expect(s.replace(/[^\0-~]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`)).toBe(s);
  });

  it('signs the exact bytes with HMAC-SHA256, as an independent computation agrees', () => {
    const body = asciiJson({ x: 'grüße' });
    const independent = createHmac('sha256', 'app-secret').update(Buffer.from(body, 'utf8')).digest('hex');
    expect(signBody('app-secret', body)).toBe(`sha256=${independent}`);
    expect(signBody('app-secret', Buffer.from(body))).toBe(`sha256=${independent}`);
    expect(verifySignature('app-secret', body, `sha256=${independent}`)).toBe(true);
    expect(verifySignature('app-secret', body, `sha256=${independent.toUpperCase()}`)).toBe(true);
    expect(verifySignature('app-secret', body + ' ', `sha256=${independent}`)).toBe(false);
    expect(verifySignature('other', body, `sha256=${independent}`)).toBe(false);
    expect(verifySignature('app-secret', body, independent)).toBe(false);
    expect(verifySignature('app-secret', body, 'sha256=00')).toBe(false);
    expect(verifySignature('app-secret', body, undefined)).toBe(false);
  });
});
