import { InvalidParameterError, UnsupportedTypeError } from './graph-errors.ts';
import { MESSAGE_TYPES, MessagesHead, parseOr100, ReadRequest, Recipient, SEND_REQUESTS, SendHead, TYPE_OBJECTS } from './message-schemas.ts';

export { MESSAGE_TYPES } from './message-schemas.ts';

/** A validated send request. */
export interface SendBody {
  to: string;
  waId: string;
  message: Record<string, unknown> & { type: string };
  bizOpaqueCallbackData?: string;
}

/** A validated mark-as-read request. */
export interface ReadBody {
  messageId: string;
  /** `typing_indicator: { type: 'text' }`: the business asked for a typing bubble along with the receipt. */
  typing?: 'text';
}

type MessageType = (typeof MESSAGE_TYPES)[number];

/**
 * Normalises `to`: `+`, `-`, `(`, `)` and spaces are dropped; what is left must be 7–15 digits of an
 * international number (Sealpost treats `to` as a full international number with or without the `+`).
 */
export function normaliseRecipient(to: unknown): string {
  return parseOr100(Recipient, to).replace(/[\s+\-()]/g, '');
}

/** Interactive kinds the Cloud API has that Sealpost does not send (they need a catalogue, flows...): 131051. */
const UNSUPPORTED_INTERACTIVE = new Set(['product', 'product_list', 'catalog_message', 'flow', 'cta_url', 'location_request_message', 'address_message', 'voice_call']);

/**
 * Validates a POST …/messages body, a send or a mark-as-read, with the schemas of message-schemas.ts (the same
 * ones the OpenAPI document shows) and then the rules a schema does not hold. What is handed on is built from
 * the fields the Cloud API defines, so nothing else a client sent travels further.
 */
export function validateMessagesBody(body: unknown): { kind: 'send'; send: SendBody } | { kind: 'read'; read: ReadBody } {
  const head = parseOr100(MessagesHead, body);
  if (head.status !== undefined) {
    const read = parseOr100(ReadRequest, body);
    return { kind: 'read', read: { messageId: read.message_id, ...(read.typing_indicator !== undefined ? { typing: 'text' as const } : {}) } };
  }
  const send = parseOr100(SendHead, body);
  const waId = normaliseRecipient(send.to);
  const type: MessageType = send.type ?? 'text';
  const given = body as Record<string, unknown>;
  const object = given[type] as Record<string, unknown>;
  if (type === 'interactive' && typeof object === 'object' && object !== null && UNSUPPORTED_INTERACTIVE.has(object.type as string)) {
    throw new UnsupportedTypeError(`interactive ${String(object.type)}`);
  }
  if (!TYPE_OBJECTS[type]) throw new UnsupportedTypeError(type);
  const parsed = parseOr100(SEND_REQUESTS[type], body) as Record<string, unknown> & { context?: { message_id: string }; biz_opaque_callback_data?: string };
  if (type === 'interactive') checkListRows(object);
  const message: SendBody['message'] = { type, [type]: payloadOf(type, object) };
  if (parsed.context !== undefined) message.context = { message_id: parsed.context.message_id };
  return { kind: 'send', send: { to: send.to, waId, message, ...(parsed.biz_opaque_callback_data !== undefined ? { bizOpaqueCallbackData: parsed.biz_opaque_callback_data } : {}) } };
}

/** What of a validated type object is handed on: the fields the Cloud API defines (interactive and contacts as given). */
export function payloadOf(type: MessageType, v: Record<string, unknown>): Record<string, unknown> | unknown[] {
  const pick = (...keys: string[]) => Object.fromEntries(keys.filter((k) => v[k] !== undefined).map((k) => [k, v[k]]));
  switch (type) {
    case 'text': return pick('body', 'preview_url');
    case 'template': return { name: v.name, language: { code: (v.language as { code: string }).code }, ...pick('components') };
    case 'reaction': return { message_id: v.message_id, emoji: v.emoji };
    case 'location': return pick('latitude', 'longitude', 'name', 'address');
    case 'image': case 'video': return pick(v.id !== undefined ? 'id' : 'link', 'caption');
    case 'document': return pick(v.id !== undefined ? 'id' : 'link', 'caption', 'filename');
    case 'audio': case 'sticker': return pick(v.id !== undefined ? 'id' : 'link');
    case 'contacts': case 'interactive': return v;
  }
}

/** A list message has at most 10 rows across all its sections (the schema holds each section to 10). */
function checkListRows(v: Record<string, unknown>): void {
  if (v.type !== 'list') return;
  const sections = (v.action as { sections: { rows: unknown[] }[] }).sections;
  if (sections.reduce((n, s) => n + s.rows.length, 0) > 10) throw new InvalidParameterError('Parameter interactive.action.sections: at most 10 rows in all');
}
