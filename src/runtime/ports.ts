/**
 * The interfaces the API layer calls into the runtime with. The API validates and authorizes; the runtime
 * accepts durably and answers with ids.
 */

/** A validated send request, as the API hands it over. */
export interface OutboundRequest {
  businessId: string;
  phoneNumberId: string;
  /** The recipient's wa_id: digits only, already normalised from `to`. */
  waId: string;
  /** The Cloud API message object without envelope fields: `{ type: 'text', text: { body, preview_url? }, context? }`. */
  message: Record<string, unknown> & { type: string };
  bizOpaqueCallbackData?: string;
  /** Delivery TTL in ms (message_send_ttl_seconds), bounded by the business's retention. */
  ttlMs?: number;
  /** A client-chosen idempotency key (direct enqueue); the same key returns the same wamid. */
  idempotencyKey?: string;
}

/** The outcome of accepting a message. */
export interface Accepted {
  /** The conversation the message went to (for logs and the inspector; not shown to the business). */
  conversationId?: string;
  wamid: string;
  waId: string;
}

/** What the API needs from the runtime to send and to mark messages read. */
export interface OutboundPort {
  /** Stores the message durably (encrypted) and queues it for its conversation; resolves once durable. */
  accept(req: OutboundRequest): Promise<Accepted>;
  /** Marks an inbound message read; false when the business has no such message. */
  markRead(businessId: string, phoneNumberId: string, messageId: string): Promise<boolean>;
}

/** A free-form message outside the 24-hour customer-service window (Cloud API 131047); templates pass. */
export class WindowClosedError extends Error {
  constructor() {
    super('more than 24 hours have passed since the recipient last replied');
    this.name = 'WindowClosedError';
  }
}

/** The transport has blocked the sending number for policy violations (Cloud API 368). */
export class NumberBlockedError extends Error {
  constructor() {
    super('the phone number is blocked for policy violations');
    this.name = 'NumberBlockedError';
  }
}

/** A message names an uploaded media id the business does not have, or of the wrong kind (Graph 100). */
export class MediaRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MediaRefusedError';
  }
}

/** The attachment could not be handed to the transport (Graph 131053). */
export class MediaUploadFailedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MediaUploadFailedError';
  }
}

/** The customer-service window: a user's message opens it for this long (Cloud API: 24 hours). */
export const SERVICE_WINDOW_MS = 24 * 3600_000;
