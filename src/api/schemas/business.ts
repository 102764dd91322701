import { z } from 'zod';

/**
 * The Business API's answers and the Graph error envelope, as schemas for the OpenAPI document (the requests'
 * schemas are in src/runtime/message-schemas.ts, where validation runs them), and the media upload's form
 * fields, which media.ts parses with it.
 */

/** The Cloud API error codes Sealpost answers with (CONTRACT.md), each with what it means. */
export const GRAPH_ERROR_CODES: Record<number, string> = {
  4: 'too many refused requests from this client address (HTTP 429, Retry-After)',
  100: 'invalid parameter: the body, a field, the path, or an object the token cannot reach (HTTP 400; 404 for an unknown path; 413 for a body over the limit)',
  190: 'missing, malformed, unknown, revoked or expired access token (HTTP 401)',
  368: 'the account is blocked for policy violations (HTTP 403)',
  130429: 'the number\'s throughput was exceeded (HTTP 429)',
  131000: 'something went wrong (HTTP 500); nothing internal is disclosed',
  131016: 'the store refuses writes for now; nothing was kept (HTTP 503, Retry-After)',
  131026: 'message undeliverable (in status webhooks)',
  131047: 'a free-form message more than 24 hours after the user last wrote (HTTP 400)',
  131048: 'spam rate limit: the number is restricted (HTTP 400)',
  131051: 'a message type, or form of one, Sealpost does not send (HTTP 400)',
  131053: 'media upload error (HTTP 400)',
  131056: '(business, consumer) pair rate limit: too many messages to one user in a short time (HTTP 429)',
  131059: 'groups: a paging cursor the API did not give out (HTTP 400)',
  131204: 'groups: more participants than a group may have (8) (HTTP 400; in group_participants_update webhooks for a join beyond it)',
  131211: 'groups: the number has as many groups as it may (10,000) (HTTP 400)',
  131212: 'groups: a user named is not a participant (HTTP 400)',
};

/** The Graph error envelope every refusal has, on every route. */
export const GraphErrorEnvelope = z.strictObject({
  error: z.strictObject({
    message: z.string().regex(/^\(#\d+\) \S/).meta({ description: '`(#code) title`', examples: ['(#100) Invalid parameter'] }),
    type: z.string().meta({ examples: ['OAuthException', 'GraphMethodException'] }),
    code: z.literal(Object.keys(GRAPH_ERROR_CODES).map(Number) as [number, ...number[]]).meta({
      description: Object.entries(GRAPH_ERROR_CODES).map(([c, d]) => `${c}: ${d}`).join('; '),
    }),
    error_subcode: z.number().int().optional(),
    error_data: z.strictObject({ messaging_product: z.literal('whatsapp'), details: z.string() }),
    fbtrace_id: z.string().regex(/^[\w-]{10,}$/).meta({ description: 'The same id is in the API\'s log line of the request.' }),
  }),
}).meta({ description: 'The Graph API error envelope, with the Cloud API\'s codes.' });

/** The answers, by name (each becomes a component of the OpenAPI document). */
export const BUSINESS_ANSWERS = {
  SendAccepted: z.strictObject({
    messaging_product: z.literal('whatsapp'),
    contacts: z.array(z.strictObject({ input: z.string().meta({ description: '`to` as given' }), wa_id: z.string().regex(/^[1-9]\d{6,14}$/) })).length(1),
    messages: z.array(z.strictObject({ id: z.string().startsWith('wamid.') })).length(1),
  }).meta({ description: 'Accepted: delivery is reported by status webhooks (sent, delivered, read or failed).' }),
  Success: z.strictObject({ success: z.literal(true) }),
  PhoneNumber: z.strictObject({
    id: z.string(), display_phone_number: z.string(), verified_name: z.string(), quality_rating: z.enum(['GREEN', 'YELLOW', 'RED']),
    throughput: z.strictObject({ level: z.string() }), whatsapp_business_manager_messaging_limit: z.string(),
  }),
  MediaObject: z.strictObject({
    messaging_product: z.literal('whatsapp'), url: z.url().meta({ description: 'Downloads the bytes with the same bearer token.' }),
    mime_type: z.string(), sha256: z.string(), file_size: z.number().int(), id: z.string(),
  }),
  MediaUploaded: z.strictObject({ id: z.string().regex(/^\d{1,20}$/) }),
  GroupCreated: z.strictObject({ messaging_product: z.literal('whatsapp'), request_id: z.string() })
    .meta({ description: 'Accepted: the group id and invite link follow in a `group_lifecycle_update` webhook carrying this `request_id`.' }),
  GroupList: z.strictObject({
    data: z.array(z.strictObject({ id: z.string(), subject: z.string(), created_at: z.string() })),
    paging: z.strictObject({ cursors: z.strictObject({ before: z.string().optional(), after: z.string().optional() }), next: z.literal(true).optional(), previous: z.literal(true).optional() }),
  }).meta({ description: 'The number\'s groups, oldest first; `after`/`before` take the cursors (131059 for any other).' }),
  GroupInfo: z.strictObject({
    id: z.string(), subject: z.string().optional(), description: z.string().optional(), join_approval_mode: z.enum(['auto_approve', 'approval_required']).optional(),
    participants: z.array(z.strictObject({ wa_id: z.string() })).optional(), total_participant_count: z.number().int().optional(),
    creation_timestamp: z.string().optional(), suspended: z.boolean().optional(),
  }).meta({ description: 'The fields named in `fields` (all of them when none are); `total_participant_count` leaves the business out.' }),
  InviteLink: z.strictObject({ messaging_product: z.literal('whatsapp'), invite_link: z.string().startsWith('https://chat.whatsapp.com/') }),
  JoinRequestList: z.strictObject({ data: z.array(z.strictObject({ join_request_id: z.string(), wa_id: z.string(), creation_timestamp: z.string() })) }),
  JoinRequestsAnswer: z.strictObject({
    messaging_product: z.literal('whatsapp'), approved_join_requests: z.array(z.string()).optional(), rejected_join_requests: z.array(z.string()).optional(),
    failed_join_requests: z.array(z.strictObject({ join_request_id: z.string(), errors: z.array(z.record(z.string(), z.unknown())) })).optional(),
  }),
  Health: z.strictObject({ ok: z.literal(true) }),
  Readiness: z.strictObject({ ready: z.boolean(), checks: z.record(z.string(), z.string()), warnings: z.array(z.string()) }),
} as const;

/** The form fields of a media upload besides the file (multipart/form-data). */
export const MediaUploadFields = z.looseObject({
  messaging_product: z.literal('whatsapp', { error: 'messaging_product must be "whatsapp"' }),
  type: z.string().optional().meta({ description: 'The MIME type; default the file part\'s.' }),
});
