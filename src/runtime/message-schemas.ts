import { z } from 'zod';
import { InvalidParameterError } from './graph-errors.ts';

/**
 * The zod schemas of a `POST …/messages` body: validation runs them (message-body.ts) and the OpenAPI
 * document is generated from them (src/api/openapi.ts), so what is documented is what is checked. Each schema
 * carries the Graph error detail a client gets when it fails; a few rules JSON Schema cannot say (a blank
 * string, bytes rather than characters) are refinements, with the nearest JSON Schema keyword as metadata.
 */

/** Message types of the Cloud API. */
export const MESSAGE_TYPES = ['text', 'image', 'audio', 'video', 'document', 'sticker', 'location', 'contacts', 'interactive', 'template', 'reaction'] as const;

/** An issue path as the error details name fields: `interactive.action.buttons[0].reply.id`. */
export function fieldName(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`)).join('');
}

const required = (name?: string) => (iss: { path?: PropertyKey[] }) => `Parameter ${name ?? fieldName(iss.path ?? [])} is required`;

/**
 * A string with something besides whitespace, of at most `max` characters counted in code points (as the Cloud
 * API and JSON Schema's `maxLength` count them, not UTF-16 units). Named by its path unless `name` is given.
 */
export function chars(max: number, name?: string) {
  const named = (iss: { path?: PropertyKey[] }) => name ?? fieldName(iss.path ?? []);
  return z.string({ error: required(name) })
    .refine((s) => s.trim().length > 0, { error: required(name), abort: true })
    .refine((s) => [...s].length <= max, { error: (iss) => `Parameter ${named(iss)} is too long: at most ${max} characters` })
    .meta({ minLength: 1, maxLength: max, pattern: '\\S' });
}

/** An http(s) URL of at most 2048 characters. */
function httpUrl(name: string) {
  return chars(2048, name).refine((s) => {
    try {
      return ['http:', 'https:'].includes(new URL(s).protocol);
    } catch {
      return false;
    }
  }, { error: `Parameter ${name} must be an http(s) URL` }).meta({ format: 'uri', pattern: '^https?://' });
}

/** `messaging_product`: always `"whatsapp"`. */
export const MessagingProduct = z.literal('whatsapp', { error: 'Parameter messaging_product is required and must be "whatsapp"' });

/** Every messages body: a JSON object naming the product. */
export const MessagesHead = z.looseObject({ messaging_product: MessagingProduct }, { error: 'Request body must be a JSON object' });

/** Mark as read: `{ messaging_product, status: "read", message_id, typing_indicator? }`. */
export const ReadRequest = z.object({
  messaging_product: MessagingProduct,
  status: z.literal('read', { error: 'Parameter status must be "read"' }),
  message_id: z.string({ error: 'Parameter message_id is required' }).min(1, { error: 'Parameter message_id is required' }),
  typing_indicator: z.object({ type: z.literal('text', { error: 'Parameter typing_indicator must be {"type":"text"}' }) }, { error: 'Parameter typing_indicator must be {"type":"text"}' }).optional(),
}).meta({ description: 'Marks a message the number received as read (blue ticks), optionally showing a typing indicator.' });

/** `recipient_type`: `individual` here; `group` sends take their own path (src/runtime/group-send.ts). */
export const RecipientType = z.literal('individual', { error: 'Parameter recipient_type must be "individual" or "group"' });

/** A full international number; `+`, `-`, `(`, `)` and spaces are ignored. */
export const RECIPIENT = /^[1-9]\d{6,14}$/;
export const Recipient = z.string({ error: 'Parameter to is required and must be a phone number' })
  .refine((s) => s.trim().length > 0, { error: 'Parameter to is required and must be a phone number', abort: true })
  .refine((s) => RECIPIENT.test(s.replace(/[\s+\-()]/g, '')), { error: 'Parameter to is not a valid phone number' })
  .meta({ pattern: '^[\\s+\\-()]*[1-9](?:[\\s\\-()]*\\d){6,14}[\\s\\-()]*$', description: 'The user\'s international number, with or without +; spaces, dashes and brackets are ignored.', examples: ['+1 (555) 123-4567'] });

/** `type`: one of the Cloud API's message types (text when absent). */
export const MessageType = z.enum(MESSAGE_TYPES, { error: (iss) => `Parameter type is invalid: ${String(iss.input).slice(0, 40)}` });

/** `context`: the message this one replies to. */
export const Context = z.object({ message_id: z.string({ error: 'Parameter context.message_id is required' }).min(1, { error: 'Parameter context.message_id is required' }) }, { error: 'Parameter context.message_id is required' });

/** `biz_opaque_callback_data`: echoed in status webhooks; at most 512 bytes of UTF-8 (hence at most 512 characters). */
export const OpaqueData = z.string({ error: 'Parameter biz_opaque_callback_data must be a string' })
  .refine((s) => Buffer.byteLength(s) <= 512, { error: 'Parameter biz_opaque_callback_data is too long: at most 512 bytes' })
  .meta({ maxLength: 512, description: 'At most 512 bytes of UTF-8; returned with this message\'s status webhooks.' });

/** The fields every send has besides its type's object. */
export const SendHead = z.looseObject({ messaging_product: MessagingProduct, recipient_type: RecipientType.nullish(), to: Recipient, type: MessageType.nullish() });

/** `text`: `{ body, preview_url? }`. */
export const Text = z.object({
  body: z.string({ error: 'Parameter text.body is required' })
    .refine((s) => s.trim().length > 0, { error: 'Parameter text.body must not be empty', abort: true })
    .refine((s) => [...s].length <= 4096, { error: 'Parameter text.body is too long: at most 4096 characters' })
    .meta({ minLength: 1, maxLength: 4096, pattern: '\\S' }),
  preview_url: z.boolean({ error: 'Parameter text.preview_url must be a boolean' }).optional(),
}, { error: 'Parameter text.body is required' });

/** `template`: `{ name, language: { code }, components? }`, sendable outside the customer-service window. */
export const Template = z.object({
  name: z.string({ error: 'Parameter template.name must be a template name (lowercase letters, digits, _)' }).regex(/^[a-z0-9_]{1,512}$/, { error: 'Parameter template.name must be a template name (lowercase letters, digits, _)' }),
  language: z.object({
    code: z.string({ error: 'Parameter template.language.code must be a language code such as en_US' }).regex(/^[a-z]{2,3}(_[A-Z]{2})?$/, { error: 'Parameter template.language.code must be a language code such as en_US' }),
  }, { error: 'Parameter template.language.code must be a language code such as en_US' }),
  components: z.array(z.unknown(), { error: 'Parameter template.components must be an array' }).optional(),
}, { error: 'Parameter template is required' }).refine((t) => JSON.stringify(t).length <= 16_384, { error: 'Parameter template is too large' });

/** Media by an uploaded id or by link (exactly one), with a caption and a file name where the kind has them. */
function media(kind: string, captioned: boolean, named: boolean) {
  return z.object({
    id: z.string({ error: `Parameter ${kind}.id must be a media id from POST /{phone_number_id}/media` }).regex(/^\d{1,20}$/, { error: `Parameter ${kind}.id must be a media id from POST /{phone_number_id}/media` }).optional(),
    link: httpUrl(`${kind}.link`).optional(),
    ...(captioned ? { caption: chars(1024, `${kind}.caption`).optional() } : {}),
    ...(named ? { filename: chars(240, `${kind}.filename`).optional() } : {}),
  }, { error: `Parameter ${kind} is required` })
    .refine((v) => (v.id === undefined) !== (v.link === undefined), { error: `Parameter ${kind} needs exactly one of id (an uploaded media id) or link` })
    .meta({ oneOf: [{ required: ['id'] }, { required: ['link'] }] });
}

/** `reaction`: an emoji on a message (empty removes it). */
export const Reaction = z.object({
  message_id: chars(256, 'reaction.message_id'),
  emoji: z.string({ error: 'Parameter reaction.emoji must be an emoji (empty to remove the reaction)' })
    .refine((s) => [...s].length <= 10, { error: 'Parameter reaction.emoji must be an emoji (empty to remove the reaction)' }).meta({ maxLength: 10 }),
}, { error: 'Parameter reaction is required' });

const LOCATION = 'Parameter location needs latitude (-90..90) and longitude (-180..180)';
/** `location`: a point, with an optional name and address. */
export const Location = z.object({
  latitude: z.number({ error: LOCATION }).min(-90, { error: LOCATION }).max(90, { error: LOCATION }),
  longitude: z.number({ error: LOCATION }).min(-180, { error: LOCATION }).max(180, { error: LOCATION }),
  name: chars(1000, 'location.name').optional(),
  address: chars(1000, 'location.address').optional(),
}, { error: 'Parameter location is required' });

const formattedName = (iss: { path?: PropertyKey[] }) => `Parameter ${fieldName((iss.path ?? []).slice(0, 2))}.name.formatted_name is required`;
/** `contacts`: 1 to 257 contact cards, each with at least `name.formatted_name`. */
export const Contacts = z.array(
  z.looseObject({ name: z.looseObject({ formatted_name: z.string({ error: formattedName }).min(1, { error: formattedName }) }, { error: formattedName }) }, { error: formattedName })
    .refine((c) => JSON.stringify(c).length <= 8192, { error: (iss) => `Parameter ${fieldName(iss.path ?? [])} is too large` }),
  { error: 'Parameter contacts must be a non-empty array' },
).min(1, { error: 'Parameter contacts must be a non-empty array' }).max(257, { error: 'Parameter contacts must be a non-empty array' });

const replyButton = (iss: { path?: PropertyKey[] }) => `Parameter ${fieldName((iss.path ?? []).slice(0, 4))} must be a reply button`;
const BUTTONS = 'Parameter interactive.action.buttons must have 1 to 3 buttons';
const SECTIONS = 'Parameter interactive.action.sections must have 1 to 10 sections';
const interactiveBody = z.looseObject({ text: chars(1024, 'interactive.body.text') }, { error: 'Parameter interactive.body.text is required' });
const interactiveType = 'Parameter interactive.type must be button or list';

/** `interactive` with reply buttons (1 to 3). */
export const InteractiveButton = z.looseObject({
  type: z.literal('button', { error: interactiveType }),
  body: interactiveBody,
  action: z.looseObject({
    buttons: z.array(z.looseObject({
      type: z.literal('reply', { error: replyButton }),
      reply: z.looseObject({ id: chars(256), title: chars(20) }, { error: replyButton }),
    }, { error: replyButton }), { error: BUTTONS }).min(1, { error: BUTTONS }).max(3, { error: BUTTONS }),
  }, { error: 'Parameter interactive.action is required' }),
}, { error: interactiveType });

/** `interactive` with a list: a button opening 1 to 10 sections of rows (10 rows in all). */
export const InteractiveList = z.looseObject({
  type: z.literal('list', { error: interactiveType }),
  body: interactiveBody,
  action: z.looseObject({
    button: chars(20, 'interactive.action.button'),
    sections: z.array(z.looseObject({
      rows: z.array(z.looseObject({ id: chars(200), title: chars(24) }, { error: (iss) => `Parameter ${fieldName(iss.path ?? [])} must be an object` }), { error: required() })
        .min(1, { error: required() }).max(10, { error: 'Parameter interactive.action.sections: at most 10 rows in all' }),
    }, { error: (iss) => `Parameter ${fieldName(iss.path ?? [])}.rows is required` }), { error: SECTIONS }).min(1, { error: SECTIONS }).max(10, { error: SECTIONS }),
  }, { error: 'Parameter interactive.action is required' }),
}, { error: interactiveType });

/** `interactive`: reply buttons or a list, at most 16 KiB as JSON. */
export const Interactive = z.discriminatedUnion('type', [InteractiveButton, InteractiveList], { error: interactiveType })
  .refine((v) => JSON.stringify(v).length <= 16_384, { error: 'Parameter interactive is too large' });

/** The object each message type carries under its own name. */
export const TYPE_OBJECTS = {
  text: Text,
  image: media('image', true, false),
  audio: media('audio', false, false),
  video: media('video', true, false),
  document: media('document', true, true),
  sticker: media('sticker', false, false),
  location: Location,
  contacts: Contacts,
  interactive: Interactive,
  template: Template,
  reaction: Reaction,
} as const satisfies Record<(typeof MESSAGE_TYPES)[number], z.ZodType>;

/** A send of one type: the head, the type's object, and (templates aside) an optional reply context. */
export function sendRequest(type: (typeof MESSAGE_TYPES)[number]) {
  return z.object({
    messaging_product: MessagingProduct,
    // null is taken as absent, as the Cloud API takes it.
    recipient_type: RecipientType.nullish(),
    to: Recipient,
    // The Cloud API sends a text without `type`; SDKs rely on that.
    type: type === 'text' ? z.literal('text').nullish() : z.literal(type),
    [type]: TYPE_OBJECTS[type],
    ...(type === 'template' ? {} : { context: Context.optional() }),
    biz_opaque_callback_data: OpaqueData.optional(),
  }).meta({ description: `Sends a ${type} message.` });
}

/** The send request of each type. */
export const SEND_REQUESTS = Object.fromEntries(MESSAGE_TYPES.map((t) => [t, sendRequest(t)])) as Record<(typeof MESSAGE_TYPES)[number], ReturnType<typeof sendRequest>>;

/** Every body `POST …/messages` takes: a send of one of the types, or a mark-as-read. */
export const MessagesRequest = z.union([...MESSAGE_TYPES.map((t) => SEND_REQUESTS[t]), ReadRequest]);

/**
 * Parses `value` with `schema`; a failure becomes a 100 whose details are the first issue's message (the
 * schemas list fields in the order clients are told about them).
 * @example const text = parseOr100(Text, body.text);
 */
export function parseOr100<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new InvalidParameterError(r.error.issues[0]?.message ?? 'Invalid parameter');
  return r.data;
}
