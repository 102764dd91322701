/**
 * The plaintext that travels inside a Signal message between the router and a device. The transport sees
 * only the envelope around the ciphertext (ids, addresses, type); everything here is encrypted.
 */

/** A message the business sent (router → device) or the user sent (device → router). */
export interface MessageContent {
  v: 1;
  kind: 'message';
  /** The wamid, the same id the envelope carries. */
  id: string;
  /** Position in the conversation (per direction, from 1); the receiver shows messages in seq order. */
  seq: number;
  /** The sender's display phone number (router → device) or wa_id (device → router). */
  from: string;
  /** Unix seconds, as a string like the Cloud API's. */
  timestamp: string;
  /** The Cloud API message object: `{ type, text?: { body }, context?, reaction?, ... }`. */
  message: Record<string, unknown> & { type: string };
  /** Device → router: the user's profile name, as the Cloud API's `contacts[].profile.name`. */
  profile_name?: string;
  /**
   * A group message (encrypted with the sender's sender key, `groupEncrypt`): the group it belongs to. Absent
   * in 1:1 messages. In a group message `seq` counts the sender's messages to that group (informational:
   * devices show group messages as they arrive, without holding for gaps).
   */
  group_id?: string;
}

/** Sent by a device after it decrypted a PreKey message, so the sender's session counts as acknowledged. */
export interface SessionAckContent {
  v: 1;
  kind: 'session_ack';
}

/** Router → device: sequence number `seq` will never arrive (its message failed); stop holding later ones. */
export interface SkipContent {
  v: 1;
  kind: 'skip';
  seq: number;
}

/** Router → device: the business read these messages of the user's. */
export interface ReceiptContent {
  v: 1;
  kind: 'receipt';
  status: 'read';
  ids: string[];
}

/**
 * A sender key for a group, carried over a pairwise session (business → each device of each member, or a
 * member's phone → the business and the other members' devices): the receiver processes `skdm` with the
 * sender's address (its number, device 1) and can then `groupDecrypt` the sender's messages of
 * `distribution_id`. A new distribution id replaces the sender's key for the group (after a member left).
 */
export interface SenderKeyContent {
  v: 1;
  kind: 'sender_key';
  group_id: string;
  /** The libsignal distribution id (a UUID); the same as inside `skdm`. */
  distribution_id: string;
  /** Standard base64 of the serialized SenderKeyDistributionMessage. */
  skdm: string;
}

/** Everything that may be inside a Signal message. */
export type Content = MessageContent | SessionAckContent | SkipContent | ReceiptContent | SenderKeyContent;

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

/** Serializes content for encryption. */
export function encodeContent(c: Content): Uint8Array {
  return enc.encode(JSON.stringify(c));
}

/** Parses decrypted bytes; throws on anything that is not well-formed content. */
export function decodeContent(bytes: Uint8Array): Content {
  const c = JSON.parse(dec.decode(bytes)) as Content;
  if (!c || c.v !== 1 || typeof c.kind !== 'string') throw new Error('malformed content');
  return c;
}
