/** The events the platform queues for the router (`POST /v1/events/pull`), before they get an `event_id`. */

/** The device got (`delivered`, when it shows the message) or its user read (`read`) message `id`. */
export interface ReceiptEvent {
  kind: 'receipt';
  status: 'delivered' | 'read';
  id: string;
  /** The device's wa_id. */
  from: string;
  /** Which of the user's devices: 1 the phone (the primary), 2 and up a linked companion. */
  device_id: number;
  /** The business address the message came from. */
  to: string;
  /** Present when `id` is a group message (relayed by `POST /v1/groups/{group_id}/messages`). */
  group_id?: string;
  timestamp: string;
}

/**
 * A Signal message from a device to a business: type 2 (Whisper), 3 (PreKey) or 8 (PlaintextContent
 * carrying a DecryptionErrorMessage, a retry request; its `id` is the id of the envelope that failed).
 */
export interface EnvelopeEvent {
  kind: 'envelope';
  id: string;
  from: string;
  /** The sending device (1 the phone, 2 and up a companion): the router decrypts with its session. */
  device_id: number;
  to: string;
  type: 2 | 3 | 8;
  /** Standard base64 of the ciphertext. */
  body: string;
  timestamp: string;
}

/** The user reported the business as spam. */
export interface SpamReportEvent {
  kind: 'spam_report';
  from: string;
  to: string;
  timestamp: string;
}

/**
 * A business number's standing changed (quality rating, messaging-limit tier, blocked for policy
 * violations): aggregates only, never which users reported or blocked it.
 */
export interface IntegrityEvent {
  kind: 'integrity';
  /** The business number (display number, digits). */
  to: string;
  event: 'FLAGGED' | 'UNFLAGGED' | 'UPGRADE' | 'DOWNGRADE' | 'BLOCKED' | 'UNBLOCKED';
  quality_rating: 'GREEN' | 'YELLOW' | 'RED';
  current_limit: string;
  blocked: boolean;
  timestamp: string;
}

/**
 * A member's group message (device → business): one SenderKeyMessage (type 7), encrypted once with the
 * member's sender key for the group; the business decrypts it with the key the member's phone distributed
 * to it in a `sender_key` content over their pairwise session.
 */
export interface GroupEnvelopeEvent {
  kind: 'group_envelope';
  id: string;
  group_id: string;
  /** The member's wa_id. */
  from: string;
  /** The sending device: always 1, the phone (only the phone keeps a sender key for a group). */
  device_id: number;
  /** The group's owner (the business's display number). */
  to: string;
  type: 7;
  /** Standard base64 of the SenderKeyMessage. */
  body: string;
  timestamp: string;
}

/** A user opened a group's invite link: the business decides (approval_required) or adds them (auto_approve). */
export interface GroupJoinEvent {
  kind: 'group_join';
  group_id: string;
  /** The user's wa_id. */
  from: string;
  /** The group's owner. */
  to: string;
  invite_code: string;
  /** Whether the group asks for the business's approval (the sim route answered `pending: true`). */
  pending: boolean;
  timestamp: string;
}

/** A member left the group; the router registers the list without them and replaces its sender key. */
export interface GroupLeaveEvent {
  kind: 'group_leave';
  group_id: string;
  from: string;
  to: string;
  timestamp: string;
}

/** Anything a device (or the transport itself) tells the router. */
export type RouterEvent = ReceiptEvent | EnvelopeEvent | SpamReportEvent | IntegrityEvent | GroupEnvelopeEvent | GroupJoinEvent | GroupLeaveEvent;

/** A router event as pulled: with the queue's unique id. */
export type QueuedEvent = RouterEvent & { event_id: string };

/** Unix seconds as a string, the Cloud API's timestamp format. */
export function unixSeconds(ms: number): string {
  return String(Math.floor(ms / 1000));
}
