import type { Logger } from 'pino';
import { classifySignalError } from '../signal/classify.ts';
import { encodeContent, type Content, type MessageContent } from '../signal/content.ts';
import type { KeyDirectory } from './directory.ts';
import type { RouterEvent } from './events.ts';

/**
 * What a simulated phone is made of besides its behaviour (src/platform/device.ts): the shapes it takes and
 * shows, its errors, its dependencies and its constants.
 */

/** A Signal message from a business on its way into a device. */
export interface DeviceEnvelope {
  id: string;
  /** The business address (its display phone number digits). */
  from: string;
  type: 2 | 3;
  body: Uint8Array<ArrayBuffer>;
  /** When the transport accepted it (ms); a retry request quotes it as the original's timestamp. */
  acceptedAt: number;
  /**
   * From another user's phone (`from` is its wa_id, device 1), not from a business: a member's sender key for
   * a group. Such an envelope gets no receipt, session ack or retry request (those are events for a router).
   */
  peer?: boolean;
}

/** A group message (a SenderKeyMessage, type 7) the transport relays to one device of a member. */
export interface GroupEnvelope {
  id: string;
  group_id: string;
  /** The sender (device 1 of it): the group's owner (a business's display number) or a member's wa_id. */
  from: string;
  /** Whether `from` is the group's owner: the device acknowledges it with a `delivered` receipt naming the group. */
  fromOwner: boolean;
  type: 7;
  body: Uint8Array<ArrayBuffer>;
  acceptedAt: number;
}

/** A pairwise envelope from a user's phone to one device of another user (a member's sender key). */
export interface PeerEnvelope {
  id: string;
  from: string;
  to: string;
  deviceId: number;
  type: 2 | 3;
  body: Uint8Array<ArrayBuffer>;
}

/** A member's group message as its phone hands it to the transport (one ciphertext for everyone). */
export interface MemberGroupMessage {
  id: string;
  group_id: string;
  from: string;
  body: Uint8Array<ArrayBuffer>;
}

/** Why a device could not decrypt an envelope. */
export type FailureReason = 'no_session' | 'invalid_message' | 'missing_prekey' | 'untrusted_identity' | 'other';

/** `GET /sim/devices/:wa_id/stats`. */
export interface DeviceStats {
  /** Envelopes libsignal decrypted. */
  decrypted: number;
  /** Further copies of messages the device already had. */
  duplicates: number;
  /** DuplicatedMessage for a message never decrypted: the sender reused a message key. Must stay 0. */
  key_reuse: number;
  failures: Partial<Record<FailureReason, number>>;
  /** Messages waiting for an earlier sequence number, and group messages waiting for their sender key. */
  held: number;
  /** Times a business's identity key was replaced (trusted on receive, or accepted before sending). */
  identity_changes: number;
}

/** A message as `GET /sim/devices/:wa_id/messages` lists it. */
export type ShownMessage = Record<string, unknown> & {
  id: string;
  from: string;
  type: string;
  timestamp: string;
  arrivals: number;
};

/** What the device's user sends: a Cloud API message object. */
export type OutgoingMessage = Record<string, unknown> & { type: string };

/** Thrown when the user writes to an address with no bundle in the directory. */
export class UnknownAddressError extends Error {
  override readonly name = 'UnknownAddressError';
  readonly code = 'unknown_address';
}

/** Thrown when the user marks as read a message the device never received. */
export class UnknownMessageError extends Error {
  override readonly name = 'UnknownMessageError';
  readonly code = 'unknown_message';
}

/** Everything a device needs from the platform around it. */
export interface DeviceDeps {
  directory: KeyDirectory;
  /** Sends an event to the router across the (faulty) transport. */
  toRouter: (event: RouterEvent) => void;
  clock: () => number;
  log: Logger;
  /** An attachment's ciphertext from the transport's blob store. */
  blob?: (pointer: string) => Buffer | undefined;
  /** Puts an attachment's ciphertext in the transport's blob store (the user sends media). */
  putBlob?: (bytes: Buffer) => string;
  /** Carries a pairwise envelope to another user's device across the (faulty) transport (groups). */
  toPeer?: (env: PeerEnvelope) => void;
  /** Hands a member's group message to the transport, which relays it to the business and the other members. */
  toGroup?: (m: MemberGroupMessage) => void;
}

/** A device tops up its one-time prekeys when the directory holds fewer than this many of either kind. */
export const REPLENISH_BELOW = 5;

/** A repeated PreKey message in the same session is acknowledged again only after this long. */
export const SESSION_ACK_REPEAT_MS = 1000;

/** A message the device decrypted, until and after it is shown. */
export interface Received {
  content: MessageContent;
  arrivals: number;
  shown: boolean;
  /** The business address, where receipts go. */
  sender: string;
}

/** What a device holds per business: the next sequence number to show, messages held for a gap, skipped ones. */
export interface Inbox {
  /** The sequence number the device shows next. */
  next: number;
  held: Map<number, Received>;
  skipped: Set<number>;
}

/** Bytes as base64, without copying. */
export const b64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
/** A content object as the bytes to encrypt. */
export const plaintext = (c: Content): Uint8Array<ArrayBuffer> => new Uint8Array(encodeContent(c));

/** The device's failure buckets from the shared classifier (the one place that reads libsignal's error texts). */
export function failureReason(err: unknown): FailureReason {
  const kind = classifySignalError(err);
  switch (kind) {
    case 'no_session':
    case 'invalid_message':
    case 'missing_prekey':
    case 'untrusted_identity':
      return kind;
    case 'malformed':
      return 'invalid_message';
    default:
      return 'other';
  }
}
