/** Cloud API webhook payloads: the envelope and the status objects inside it. */

/** A status change as the runtime reports it. */
export interface StatusInput {
  wamid: string;
  status: 'sent' | 'delivered' | 'read' | 'failed';
  /** ms since the epoch. */
  at: number;
  recipientId: string;
  /** `group` for a message to a group (`recipientId` is then the group id). */
  recipientType?: 'group';
  bizOpaqueCallbackData?: string;
  errorCode?: number;
  /** Passed through as the Cloud API `pricing` object. */
  pricing?: StatusPricing;
}

/** The Cloud API `pricing` object of a status (billing is per business, so the router may report it). */
export interface StatusPricing {
  billable: boolean;
  pricing_model: string;
  type?: 'regular' | 'free_customer_service' | 'free_entry_point';
  category: string;
}

/** One `value` of a `messages` change, without the metadata (added at delivery time). */
export interface ChangeValue {
  statuses?: Record<string, unknown>[];
  messages?: Record<string, unknown>[];
  contacts?: Record<string, unknown>[];
  errors?: Record<string, unknown>[];
  /** A change of another field than `messages` (e.g. `phone_number_quality_update`), its value as Meta sends it. */
  other?: { field: string; value: Record<string, unknown> };
}

/** Who the webhook is about: the business account and the number. */
export interface EnvelopeTarget {
  wabaId: string;
  displayPhoneNumber: string;
  phoneNumberId: string;
}

const ERRORS: Record<number, { title: string; details: string }> = {
  131026: { title: 'Message undeliverable', details: 'Message could not be delivered to the recipient before its time-to-live ran out.' },
  131047: { title: 'Re-engagement message', details: 'More than 24 hours have passed since the recipient last replied to the sender number.' },
  131048: { title: 'Spam rate limit hit', details: 'Message failed to send because there are restrictions on how many messages can be sent from this phone number.' },
  131049: { title: 'This message was not delivered to maintain healthy ecosystem engagement.', details: 'In order to maintain a healthy ecosystem engagement, the message failed to be delivered.' },
  131051: { title: 'Message type unknown', details: 'Message type is currently not supported.' },
  131052: { title: 'Media download error', details: 'Unable to download the media sent by the user.' },
  368: { title: 'Temporarily blocked for policies violations', details: 'The WhatsApp Business Account is restricted from messaging users.' },
};

/** The Cloud API `errors[]` entry of a failed status or a refused inbound message; `details` says why when given. */
export function statusError(code: number, details?: string): Record<string, unknown> {
  const e = ERRORS[code] ?? { title: 'Unknown error', details: 'Message failed to send.' };
  return { code, title: e.title, message: e.title, error_data: { details: details ?? e.details }, href: '/documentation/business-messaging/whatsapp/support/error-codes' };
}

/**
 * One Cloud API status object; optional fields appear only when set, as Meta omits them.
 * @example statusUpdate({ wamid: 'wamid.X', status: 'read', at: Date.now(), recipientId: '15551234567' })
 */
export function statusUpdate(u: StatusInput): Record<string, unknown> {
  return {
    id: u.wamid,
    status: u.status,
    timestamp: String(Math.floor(u.at / 1000)),
    recipient_id: u.recipientId,
    ...(u.recipientType ? { recipient_type: u.recipientType } : {}),
    ...(u.bizOpaqueCallbackData !== undefined ? { biz_opaque_callback_data: u.bizOpaqueCallbackData } : {}),
    ...(u.errorCode ? { errors: [statusError(u.errorCode)] } : {}),
    ...(u.pricing ? { pricing: u.pricing } : {}),
  };
}

/** A `value` carrying status objects, in the order given. */
export function statusValue(updates: StatusInput[]): ChangeValue {
  return { statuses: updates.map(statusUpdate) };
}

/** The full webhook envelope for one business number. */
export function buildEnvelope(target: EnvelopeTarget, values: ChangeValue[]): Record<string, unknown> {
  return {
    object: 'whatsapp_business_account',
    entry: [{
      id: target.wabaId,
      changes: values.map((v) => v.other ? { field: v.other.field, value: v.other.value } : ({
        field: 'messages',
        value: {
          messaging_product: 'whatsapp',
          metadata: { display_phone_number: target.displayPhoneNumber, phone_number_id: target.phoneNumberId },
          ...v,
        },
      })),
    }],
  };
}

/**
 * The Cloud API's security notification: a `system` message telling the business that the user's identity
 * key (security code) changed, e.g. after a reinstall.
 */
export function identityChangedValue(waId: string, identityHash: string, at: number, conversationId: string): ChangeValue {
  return {
    contacts: [{ wa_id: waId }],
    messages: [{
      from: waId,
      id: `sys.${conversationId}.${at}`,
      timestamp: String(Math.floor(at / 1000)),
      type: 'system',
      system: { body: "User's security code changed", type: 'customer_identity_changed', identity: identityHash, customer: waId },
      identity: { acknowledged: true, created_timestamp: String(Math.floor(at / 1000)), hash: identityHash },
    }],
  };
}

/** A user's message as the Cloud API forwards it: the contact (wa_id, profile name) and the message. */
export function inboundMessageValue(
  waId: string,
  id: string,
  row: { message: Record<string, unknown> & { type: string }; timestamp: string; profileName?: string },
): ChangeValue {
  return {
    contacts: [{ profile: { name: row.profileName ?? '' }, wa_id: waId }],
    messages: [{ from: waId, id, timestamp: row.timestamp, ...row.message }],
  };
}
