import type { OutgoingDeviceMessage } from '../transport-client.ts';
import type { HostParts } from './parts.ts';
import type { Loaded } from './loaded.ts';

/**
 * A message's ciphertexts, one per device of the user: device id → [Signal message type, the device's
 * registration id it was made for, base64 body]. Kept in the message row's `cd` field (JSON) until every
 * device acknowledged it, so a retransmission hands the transport the same bytes again (no re-encryption,
 * every device keeps the sequence number it got).
 */
export type DeviceCiphertexts = Record<string, [type: number, registrationId: number, body: string]>;

/** The row fields a message's ciphertexts live in (`ct`/`ty`: device 1's, as rows made before linked devices keep it). */
export const CIPHERTEXT_FIELDS = ['cd', 'ct', 'ty'] as const;

/**
 * The ciphertexts a message's row keeps (made in an earlier drain), or null when it has none. A row from before
 * linked devices holds device 1's alone; its registration id is the one the accepted list names (a wrong one
 * is answered 410 by the transport, and the message is encrypted again).
 */
export async function readCiphertexts(h: HostParts, c: Loaded, wamid: string): Promise<{ cts: DeviceCiphertexts; legacy: boolean } | null> {
  const [cd, ct, ty] = await c.redis.hmget(h.keys.message(c.id, wamid), ...CIPHERTEXT_FIELDS);
  return parseCiphertexts(c, cd ?? null, ct ?? null, ty ?? null);
}

/** The ciphertexts of a row's fields `cd`, `ct`, `ty` (see {@link readCiphertexts}). */
export function parseCiphertexts(c: Loaded, cd: string | null, ct: string | null, ty: string | null): { cts: DeviceCiphertexts; legacy: boolean } | null {
  if (cd) return { cts: JSON.parse(cd) as DeviceCiphertexts, legacy: false };
  if (ct && ty) return { cts: { 1: [Number(ty), c.crypto.registrationId(1) ?? 1, ct] }, legacy: true };
  return null;
}

/** The transport's form of a message to every device it was encrypted for (`POST /v1/messages`). */
export function outgoing(c: Loaded, wamid: string, cts: DeviceCiphertexts): OutgoingDeviceMessage {
  return {
    id: wamid, from: c.meta.display, to: c.meta.waId,
    envelopes: Object.entries(cts).map(([d, [type, registrationId, body]]) => ({ device_id: Number(d), registration_id: registrationId, type, body })),
  };
}
