import { randomBytes } from 'node:crypto';
import type { DataKeys } from '../store/sealer.ts';

const CONV_BYTES = 15;

/**
 * The conversation id of (business phone number, user): a keyed hash under the business's data key, so ids
 * in logs, traces and keys reveal no phone number and cannot be linked across businesses.
 */
export async function conversationId(dataKeys: DataKeys, businessId: string, phoneNumberId: string, waId: string): Promise<string> {
  const mac = await dataKeys.mac(businessId, `conv:${phoneNumberId}:${waId}`);
  return mac.subarray(0, CONV_BYTES).toString('hex');
}

/** A new outbound message id (`wamid.` + base64url) that carries its conversation id, so receipts route without a lookup. */
export function newWamid(convId: string): string {
  return `wamid.${Buffer.concat([Buffer.from(convId, 'hex'), randomBytes(9)]).toString('base64url')}`;
}

/**
 * The wamid of a message sent with a client-chosen idempotency key: the same (number, key) always gives the
 * same wamid (a keyed hash under the business's data key, so keys cannot be guessed from wamids).
 */
export async function idempotentWamid(dataKeys: DataKeys, businessId: string, phoneNumberId: string, convId: string, key: string): Promise<string> {
  const mac = await dataKeys.mac(businessId, `idem:${phoneNumberId}:${key}`);
  return `wamid.${Buffer.concat([Buffer.from(convId, 'hex'), mac.subarray(0, 9)]).toString('base64url')}`;
}

/** The conversation id inside an outbound wamid, or null for ids Sealpost did not make. */
export function conversationOfWamid(wamid: string): string | null {
  if (!wamid.startsWith('wamid.')) return null;
  const raw = Buffer.from(wamid.slice(6), 'base64url');
  if (raw.length !== CONV_BYTES + 9) return null;
  return raw.subarray(0, CONV_BYTES).toString('hex');
}

const WAMID_SHAPE = /^wamid\.[A-Za-z0-9_-]{16,64}$/;

/** True for a string shaped like a message id (`wamid.` and 16 to 64 URL-safe characters), whoever made it. */
export function isWamidShaped(id: string): boolean {
  return WAMID_SHAPE.test(id);
}

/**
 * True for an id a user's message may carry: shaped like a wamid and not like one Sealpost makes (those name
 * a conversation, and receipts, mark-as-read and the inspector route by them).
 */
export function isInboundMessageId(id: string): boolean {
  return WAMID_SHAPE.test(id) && conversationOfWamid(id) === null;
}

/** True for a string shaped like a conversation id. */
export function isConversationId(s: string): boolean {
  return /^[0-9a-f]{30}$/.test(s);
}
