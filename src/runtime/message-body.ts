import { InvalidParameterError, UnsupportedTypeError } from './graph-errors.ts';

/** Message types of the Cloud API. */
export const MESSAGE_TYPES = ['text', 'image', 'audio', 'video', 'document', 'sticker', 'location', 'contacts', 'interactive', 'template', 'reaction'] as const;

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
    const ti = body.typing_indicator;
    if (ti !== undefined && (!isObject(ti) || ti.type !== 'text')) throw bad('Parameter typing_indicator must be {"type":"text"}');
    return { kind: 'read', read: { messageId: body.message_id, ...(ti !== undefined ? { typing: 'text' as const } : {}) } };
  }
  const recipientType = body.recipient_type ?? 'individual';
  if (recipientType === 'group') throw bad('Parameter recipient_type "group" is not supported yet: only "individual"');
  if (recipientType !== 'individual') throw bad('Parameter recipient_type must be "individual"');
  const waId = normaliseRecipient(body.to);
  // The Cloud API makes `type` optional and sends a text without it; SDKs rely on that.
  const type = body.type ?? 'text';
  if (typeof type !== 'string' || !(MESSAGE_TYPES as readonly string[]).includes(type)) throw bad(`Parameter type is invalid: ${String(type).slice(0, 40)}`);
  if (type === 'template') return { kind: 'send', send: { to: body.to as string, waId, message: validateTemplate(body.template), ...opaque(body) } };
  if (type !== 'text') {
    const validate = STRUCTURED[type];
    if (!validate) throw new UnsupportedTypeError(type);
    const message: SendBody['message'] = { type, [type]: validate(body[type]) };
    if (body.context !== undefined) message.context = contextOf(body.context);
    return { kind: 'send', send: { to: body.to as string, waId, message, ...opaque(body) } };
  }
  const text = body.text;
  if (!isObject(text) || typeof text.body !== 'string') throw bad('Parameter text.body is required');
  if (!text.body.trim()) throw bad('Parameter text.body must not be empty');
  if ([...text.body].length > 4096) throw bad('Parameter text.body is too long: at most 4096 characters');
  if (text.preview_url !== undefined && typeof text.preview_url !== 'boolean') throw bad('Parameter text.preview_url must be a boolean');
  const message: SendBody['message'] = { type: 'text', text: { body: text.body, ...(text.preview_url !== undefined ? { preview_url: text.preview_url } : {}) } };
  if (body.context !== undefined) message.context = contextOf(body.context);
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

function contextOf(context: unknown): { message_id: string } {
  if (!isObject(context) || typeof context.message_id !== 'string' || !context.message_id) throw bad('Parameter context.message_id is required');
  return { message_id: context.message_id };
}

const str = (v: unknown, field: string, max: number, optional = false): string | undefined => {
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'string' || !v.trim()) throw bad(`Parameter ${field} is required`);
  if ([...v].length > max) throw bad(`Parameter ${field} is too long: at most ${max} characters`);
  return v;
};
const url = (v: unknown, field: string): string => {
  const s = str(v, field, 2048)!;
  try {
    if (!['http:', 'https:'].includes(new URL(s).protocol)) throw new Error();
  } catch {
    throw bad(`Parameter ${field} must be an http(s) URL`);
  }
  return s;
};
const pick = (fields: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) as Record<string, unknown>;

/** Media by link or by an uploaded media id (exactly one): `{ link | id, caption?, filename? }`. */
function media(kind: string, captioned: boolean, named: boolean) {
  return (v: unknown) => {
    if (!isObject(v)) throw bad(`Parameter ${kind} is required`);
    if ((v.id === undefined) === (v.link === undefined)) throw bad(`Parameter ${kind} needs exactly one of id (an uploaded media id) or link`);
    if (v.id !== undefined && (typeof v.id !== 'string' || !/^\d{1,20}$/.test(v.id))) throw bad(`Parameter ${kind}.id must be a media id from POST /{phone_number_id}/media`);
    return pick({
      ...(v.id !== undefined ? { id: v.id } : { link: url(v.link, `${kind}.link`) }),
      caption: captioned ? str(v.caption, `${kind}.caption`, 1024, true) : undefined,
      filename: named ? str(v.filename, `${kind}.filename`, 240, true) : undefined,
    });
  };
}

const UNSUPPORTED_INTERACTIVE = new Set(['product', 'product_list', 'catalog_message', 'flow', 'cta_url', 'location_request_message', 'address_message', 'voice_call']);

/** Validators of the Cloud API's structured message types, by type. */
const STRUCTURED: Record<string, (v: unknown) => Record<string, unknown> | Record<string, unknown>[]> = {
  reaction: (v) => {
    if (!isObject(v)) throw bad('Parameter reaction is required');
    const emoji = typeof v.emoji === 'string' ? v.emoji : undefined;
    if (emoji === undefined || [...emoji].length > 10) throw bad('Parameter reaction.emoji must be an emoji (empty to remove the reaction)');
    return { message_id: str(v.message_id, 'reaction.message_id', 256)!, emoji };
  },
  location: (v) => {
    if (!isObject(v)) throw bad('Parameter location is required');
    const lat = v.latitude, lng = v.longitude;
    if (typeof lat !== 'number' || lat < -90 || lat > 90 || typeof lng !== 'number' || lng < -180 || lng > 180) {
      throw bad('Parameter location needs latitude (-90..90) and longitude (-180..180)');
    }
    return pick({ latitude: lat, longitude: lng, name: str(v.name, 'location.name', 1000, true), address: str(v.address, 'location.address', 1000, true) });
  },
  contacts: (v) => {
    if (!Array.isArray(v) || v.length === 0 || v.length > 257) throw bad('Parameter contacts must be a non-empty array');
    return v.map((c, i) => {
      if (!isObject(c) || !isObject(c.name) || typeof c.name.formatted_name !== 'string' || !c.name.formatted_name) throw bad(`Parameter contacts[${i}].name.formatted_name is required`);
      if (JSON.stringify(c).length > 8192) throw bad(`Parameter contacts[${i}] is too large`);
      return c;
    });
  },
  interactive: (v) => {
    // Interactive kinds the Cloud API has that Sealpost does not send (they need a catalogue, flows...): 131051.
    if (isObject(v) && typeof v.type === 'string' && UNSUPPORTED_INTERACTIVE.has(v.type)) throw new UnsupportedTypeError(`interactive ${v.type}`);
    if (!isObject(v) || (v.type !== 'button' && v.type !== 'list')) throw bad('Parameter interactive.type must be button or list');
    if (!isObject(v.body)) throw bad('Parameter interactive.body.text is required');
    str(v.body.text, 'interactive.body.text', 1024);
    if (!isObject(v.action)) throw bad('Parameter interactive.action is required');
    if (v.type === 'button') {
      const buttons = v.action.buttons;
      if (!Array.isArray(buttons) || buttons.length < 1 || buttons.length > 3) throw bad('Parameter interactive.action.buttons must have 1 to 3 buttons');
      buttons.forEach((b, i) => {
        if (!isObject(b) || b.type !== 'reply' || !isObject(b.reply)) throw bad(`Parameter interactive.action.buttons[${i}] must be a reply button`);
        str(b.reply.id, `interactive.action.buttons[${i}].reply.id`, 256);
        str(b.reply.title, `interactive.action.buttons[${i}].reply.title`, 20);
      });
    } else {
      str(v.action.button, 'interactive.action.button', 20);
      const sections = v.action.sections;
      if (!Array.isArray(sections) || sections.length < 1 || sections.length > 10) throw bad('Parameter interactive.action.sections must have 1 to 10 sections');
      const rows = sections.flatMap((sec, i) => {
        if (!isObject(sec) || !Array.isArray(sec.rows) || sec.rows.length < 1) throw bad(`Parameter interactive.action.sections[${i}].rows is required`);
        return sec.rows as unknown[];
      });
      if (rows.length > 10) throw bad('Parameter interactive.action.sections: at most 10 rows in all');
      rows.forEach((r, i) => {
        if (!isObject(r)) throw bad(`Parameter interactive row ${i} must be an object`);
        str(r.id, `interactive row ${i} id`, 200);
        str(r.title, `interactive row ${i} title`, 24);
      });
    }
    if (JSON.stringify(v).length > 16_384) throw bad('Parameter interactive is too large');
    return v;
  },
  image: media('image', true, false),
  video: media('video', true, false),
  audio: media('audio', false, false),
  sticker: media('sticker', false, false),
  document: media('document', true, true),
};
