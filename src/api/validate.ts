import { InvalidParameterError, GraphError } from './errors.ts';

/** Message types of the Cloud API. */
export const MESSAGE_TYPES = ['text', 'image', 'audio', 'video', 'document', 'sticker', 'location', 'contacts', 'interactive', 'template', 'reaction'] as const;

/** 131051: a type the Cloud API has but Sealpost does not send yet. */
export class UnsupportedTypeError extends GraphError {
  constructor(type: string) {
    super(131051, 'Unsupported message type', `Message type ${type} is not currently supported.`, 400);
  }
}

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
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const bad = (details: string) => new InvalidParameterError(details);

/**
 * Normalises `to`: `+`, `-`, `(`, `)` and spaces are dropped; what is left must be 7–15 digits of an
 * international number (Sealpost treats `to` as a full international number with or without the `+`).
 */
export function normaliseRecipient(to: unknown): string {
  if (typeof to !== 'string' || !to.trim()) throw bad('Parameter to is required and must be a phone number');
  const digits = to.replace(/[\s+\-()]/g, '');
  if (!/^[1-9]\d{6,14}$/.test(digits)) throw bad(`Parameter to is not a valid phone number`);
  return digits;
}

/** Validates a POST …/messages body: a send, or a mark-as-read. */
export function validateMessagesBody(body: unknown): { kind: 'send'; send: SendBody } | { kind: 'read'; read: ReadBody } {
  if (!isObject(body)) throw bad('Request body must be a JSON object');
  if (body.messaging_product !== 'whatsapp') throw bad('Parameter messaging_product is required and must be "whatsapp"');
  if (body.status !== undefined) {
    if (body.status !== 'read') throw bad('Parameter status must be "read"');
    if (typeof body.message_id !== 'string' || !body.message_id) throw bad('Parameter message_id is required');
    return { kind: 'read', read: { messageId: body.message_id } };
  }
  const recipientType = body.recipient_type ?? 'individual';
  if (recipientType !== 'individual') throw bad('Parameter recipient_type must be "individual"');
  const waId = normaliseRecipient(body.to);
  const type = body.type ?? 'text';
  if (typeof type !== 'string' || !(MESSAGE_TYPES as readonly string[]).includes(type)) throw bad(`Parameter type is invalid: ${String(type).slice(0, 40)}`);
  if (type === 'template') return { kind: 'send', send: { to: body.to as string, waId, message: validateTemplate(body.template), ...opaque(body) } };
  if (type !== 'text') throw new UnsupportedTypeError(type);
  const text = body.text;
  if (!isObject(text) || typeof text.body !== 'string') throw bad('Parameter text.body is required');
  if (!text.body.trim()) throw bad('Parameter text.body must not be empty');
  if ([...text.body].length > 4096) throw bad('Parameter text.body is too long: at most 4096 characters');
  if (text.preview_url !== undefined && typeof text.preview_url !== 'boolean') throw bad('Parameter text.preview_url must be a boolean');
  const message: SendBody['message'] = { type: 'text', text: { body: text.body, ...(text.preview_url !== undefined ? { preview_url: text.preview_url } : {}) } };
  if (body.context !== undefined) {
    if (!isObject(body.context) || typeof body.context.message_id !== 'string' || !body.context.message_id) throw bad('Parameter context.message_id is required');
    message.context = { message_id: body.context.message_id };
  }
  return { kind: 'send', send: { to: body.to as string, waId, message, ...opaque(body) } };
}

function opaque(body: Record<string, unknown>): { bizOpaqueCallbackData?: string } {
  if (body.biz_opaque_callback_data === undefined) return {};
  if (typeof body.biz_opaque_callback_data !== 'string') throw bad('Parameter biz_opaque_callback_data must be a string');
  if (Buffer.byteLength(body.biz_opaque_callback_data) > 512) throw bad('Parameter biz_opaque_callback_data is too long: at most 512 bytes');
  return { bizOpaqueCallbackData: body.biz_opaque_callback_data };
}

/** A template message: `{ name, language: { code }, components? }`, sendable outside the service window. */
function validateTemplate(t: unknown): SendBody['message'] {
  if (!isObject(t)) throw bad('Parameter template is required');
  if (typeof t.name !== 'string' || !/^[a-z0-9_]{1,512}$/.test(t.name)) throw bad('Parameter template.name must be a template name (lowercase letters, digits, _)');
  if (!isObject(t.language) || typeof t.language.code !== 'string' || !/^[a-z]{2,3}(_[A-Z]{2})?$/.test(t.language.code)) throw bad('Parameter template.language.code must be a language code such as en_US');
  if (t.components !== undefined && !Array.isArray(t.components)) throw bad('Parameter template.components must be an array');
  const template: Record<string, unknown> = { name: t.name, language: { code: t.language.code } };
  if (t.components !== undefined) template.components = t.components;
  if (JSON.stringify(template).length > 16_384) throw bad('Parameter template is too large');
  return { type: 'template', template };
}
