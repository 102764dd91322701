/**
 * The stored form of a conversation's Signal state: the remote identity's length (2 bytes), the identity,
 * then the session record, all raw bytes (the record is ~4 KB with its post-quantum ratchet state).
 */
export interface SessionKeys {
  session: Uint8Array | null;
  remoteIdentity: Uint8Array | null;
}

/** Encodes a conversation's Signal state in its stored form (before sealing). */
export function encodeSession(k: SessionKeys): Buffer {
  const identity = k.remoteIdentity ?? new Uint8Array(0);
  const head = Buffer.alloc(2);
  head.writeUInt16BE(identity.length);
  return Buffer.concat([head, identity, k.session ?? new Uint8Array(0)]);
}

/** Decodes a conversation's stored Signal state (after opening), the binary form or the JSON one before it. */
export function decodeSession(raw: Buffer): SessionKeys {
  if (raw[0] === 0x7b) {
    // Written before the binary form: JSON {s, i} with base64 fields.
    const parsed = JSON.parse(raw.toString()) as { s?: string; i?: string };
    return {
      session: parsed.s ? new Uint8Array(Buffer.from(parsed.s, 'base64')) : null,
      remoteIdentity: parsed.i ? new Uint8Array(Buffer.from(parsed.i, 'base64')) : null,
    };
  }
  const n = raw.readUInt16BE(0);
  const identity = raw.subarray(2, 2 + n);
  const session = raw.subarray(2 + n);
  return { session: session.length ? new Uint8Array(session) : null, remoteIdentity: n ? new Uint8Array(identity) : null };
}
