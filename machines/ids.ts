/**
 * Deterministic ids the machine derives itself (it may not draw random numbers): the same inputs always give
 * the same id, so a replayed trace produces the same commands.
 */

function fnv1a(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** A number in [0, 1) from a string: the machine's deterministic jitter. */
export function unitHash(s: string): number {
  return fnv1a(s, 7) / 0x1_0000_0000;
}

/**
 * A wamid-shaped id for a control message of conversation `conversationId` (30 hex chars), derived from
 * `seed`: it routes like any outbound wamid (the conversation id is inside).
 */
export function derivedWamid(conversationId: string, seed: string): string {
  const tail = new Uint8Array(9);
  const a = fnv1a(seed, 1), b = fnv1a(seed, 2), c = fnv1a(seed, 3);
  tail.set([a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255, b >>> 24, (b >>> 16) & 255, (b >>> 8) & 255, b & 255, c & 255]);
  const conv = /^[0-9a-f]{30}$/.test(conversationId) ? Buffer.from(conversationId, 'hex') : Buffer.alloc(15);
  return `wamid.${Buffer.concat([conv, tail]).toString('base64url')}`;
}
