import { GROUP_MESSAGE_TYPES, GROUP_SEND_REQUESTS } from '../runtime/group-send.ts';
import { z } from 'zod';
import { MediaUploadFields, BUSINESS_ANSWERS, GraphErrorEnvelope, GRAPH_ERROR_CODES } from './schemas/business.ts';
import { CreateGroupRequest, JoinRequestsRequest, ListGroupsQuery, RemoveParticipantsRequest, UpdateGroupRequest } from '../runtime/groups.ts';
import { ADMIN_ANSWERS, AddNumberBody, AppSecretBody, BillingQuery, CreateBusinessBody, IssueTokenBody, NumberWebhookBody, PatchBusinessBody, StatsQuery, UserQuery } from './schemas/admin.ts';
import { MESSAGE_TYPES, ReadRequest, SEND_REQUESTS } from '../runtime/message-schemas.ts';
import { ADMIN_COOKIE } from '../ops/admin-auth.ts';

/**
 * The OpenAPI 3.1 document of the HTTP API (`GET /openapi.json`), generated from the zod schemas that validate
 * the requests (src/runtime/message-schemas.ts, src/api/schemas/) and describe the answers. The list of
 * operations below is checked against the routes the server really has by test/api/openapi.test.ts.
 */

type Json = Record<string, unknown>;
type Security = 'business' | 'admin' | 'public';

/** One operation: what it takes and what it answers. */
interface Operation {
  method: 'get' | 'post' | 'patch' | 'delete';
  /** Fastify's form (`/:version/:phone_number_id`). */
  path: string;
  tag: 'Messages' | 'Phone numbers' | 'Media' | 'Groups' | 'Admin: businesses' | 'Admin: data' | 'Operator' | 'Documentation';
  summary: string;
  security: Security;
  /** A request body: a component name (JSON) or content as it is. */
  body?: string | Json;
  query?: z.ZodObject;
  /** The 200 answer: a component name (JSON) or content as it is. */
  ok: string | Json;
  /** Other answers than 200 and the Graph errors (a redirect, a 204). */
  more?: Record<string, Json>;
}

const PUBLIC_TAGS = ['Messages', 'Phone numbers', 'Media', 'Groups', 'Documentation'];

const json = (schema: Json) => ({ 'application/json': { schema } });
const text = (type: string, description: string) => ({ [type]: { schema: { type: 'string', description } } });

/** The two forms of a Cloud API route: with the Graph version segment and without it. */
function versioned(op: Omit<Operation, 'path'> & { path: string }): Operation[] {
  return [{ ...op, path: `/:version${op.path}` }, { ...op, path: op.path }];
}

const admin = (method: Operation['method'], path: string, summary: string, ok: string, extra: Partial<Operation> = {}): Operation =>
  ({ method, path: `/admin/businesses${path}`, tag: 'Admin: businesses', summary, security: 'admin', ok, ...extra });

/** Every documented operation. */
export const OPERATIONS: readonly Operation[] = [
  ...versioned({ method: 'post', path: '/:phone_number_id/messages', tag: 'Messages', summary: 'Send a message, or mark a received message as read', security: 'business', body: 'MessagesRequest', ok: json({ oneOf: [{ $ref: '#/components/schemas/SendAccepted' }, { $ref: '#/components/schemas/Success' }] }) }),
  ...versioned({ method: 'get', path: '/:phone_number_id', tag: 'Phone numbers', summary: 'A phone number of the token\'s business; given a media id, the media object; given a group id (`G…`), the group (`?fields=subject,description,join_approval_mode,participants,total_participant_count,creation_timestamp,suspended`)', security: 'business', query: z.object({ fields: z.string().optional() }), ok: json({ oneOf: [{ $ref: '#/components/schemas/PhoneNumber' }, { $ref: '#/components/schemas/MediaObject' }, { $ref: '#/components/schemas/GroupInfo' }] }) }),
  ...versioned({ method: 'post', path: '/:phone_number_id/media', tag: 'Media', summary: 'Upload media (sealed at rest, kept for the business\'s retention)', security: 'business', body: { 'multipart/form-data': { schema: { $ref: '#/components/schemas/MediaUploadForm' } } }, ok: 'MediaUploaded' }),
  ...versioned({ method: 'delete', path: '/:phone_number_id', tag: 'Media', summary: 'Delete media by its id, or a group by its id (`G…`: off the transport, then a `group_lifecycle_update` group_delete webhook)', security: 'business', ok: 'Success' }),
  ...versioned({ method: 'post', path: '/:phone_number_id/groups', tag: 'Groups', summary: 'Create a group (its id and invite link follow in a `group_lifecycle_update` webhook); at most 10,000 per number (131211)', security: 'business', body: 'CreateGroupRequest', ok: 'GroupCreated' }),
  ...versioned({ method: 'get', path: '/:phone_number_id/groups', tag: 'Groups', summary: 'The number\'s groups, paged (`limit` 1..1024, `after`/`before` cursors; 131059 for a bad cursor)', security: 'business', query: ListGroupsQuery, ok: 'GroupList' }),
  ...versioned({ method: 'post', path: '/:group_id', tag: 'Groups', summary: 'Change a group\'s subject, description or join approval mode (`group_settings_update` webhook)', security: 'business', body: 'UpdateGroupRequest', ok: 'Success' }),
  ...versioned({ method: 'post', path: '/:group_id/invite_link', tag: 'Groups', summary: 'A new invite link; the old one stops working', security: 'business', ok: 'InviteLink' }),
  ...versioned({ method: 'delete', path: '/:group_id/invite_link', tag: 'Groups', summary: 'Revoke the invite link (nobody can join by it any more; POST makes a new one)', security: 'business', ok: 'Success' }),
  ...versioned({ method: 'get', path: '/:group_id/join_requests', tag: 'Groups', summary: 'Pending join requests of an `approval_required` group', security: 'business', ok: 'JoinRequestList' }),
  ...versioned({ method: 'post', path: '/:group_id/join_requests', tag: 'Groups', summary: 'Approve join requests (131204 for those beyond 8 participants, in `failed_join_requests`)', security: 'business', body: 'JoinRequestsRequest', ok: 'JoinRequestsAnswer' }),
  ...versioned({ method: 'delete', path: '/:group_id/join_requests', tag: 'Groups', summary: 'Reject join requests', security: 'business', body: 'JoinRequestsRequest', ok: 'JoinRequestsAnswer' }),
  ...versioned({ method: 'delete', path: '/:group_id/participants', tag: 'Groups', summary: 'Remove participants (at most 8 a request; 131212 if any is not a participant, nothing removed)', security: 'business', body: 'RemoveParticipantsRequest', ok: 'Success' }),
  { method: 'get', path: '/media/download/:media_id', tag: 'Media', summary: 'The bytes of a media object (its `url`), for the owning business\'s token', security: 'business', ok: { '*/*': { schema: { type: 'string', contentMediaType: 'application/octet-stream' } } } },

  admin('get', '', 'List businesses', 'BusinessList'),
  admin('post', '', 'Create a business with one phone number (the webhook URL must pass the subscription check)', 'CreatedBusiness', { body: 'CreateBusinessBody' }),
  admin('get', '/:business_id', 'A business and its numbers (no secrets)', 'Business'),
  admin('patch', '/:business_id', 'Change name, retention, or webhook URL with its verify token', 'Success', { body: 'PatchBusinessBody' }),
  admin('delete', '/:business_id', 'Delete a business: its tokens stop working, its data key is destroyed', 'Success'),
  admin('post', '/:business_id/app_secret', 'Rotate the app secret (generated and shown once, or chosen)', 'AppSecretRotated', { body: 'AppSecretBody' }),
  admin('post', '/:business_id/data-key/rotate', 'Add a data key version; it starts sealing at `active_at`', 'DataKeyRotated'),
  admin('get', '/:business_id/phone_numbers', 'The business\'s phone numbers', 'NumberList'),
  admin('post', '/:business_id/phone_numbers', 'Add a phone number (its own Signal identity)', 'AddedNumber', { body: 'AddNumberBody' }),
  admin('patch', '/:business_id/phone_numbers/:phone_number_id', 'Give a number its own webhook, or `null` for its business\'s', 'Success', { body: 'NumberWebhookBody' }),
  admin('delete', '/:business_id/phone_numbers/:phone_number_id', 'Remove a number (never the last one)', 'Success'),
  admin('get', '/:business_id/tokens', 'The business\'s access tokens (ids and state only)', 'TokenList'),
  admin('post', '/:business_id/tokens', 'Issue an access token (shown once)', 'IssuedToken', { body: 'IssueTokenBody' }),
  admin('delete', '/:business_id/tokens/:token_id', 'Revoke an access token', 'Success'),
  admin('get', '/:business_id/stats', 'Daily statistics (aggregates only)', 'Stats', { query: StatsQuery }),
  admin('get', '/:business_id/billing', 'Billable and free messages of a month, by category', 'Billing', { query: BillingQuery }),
  admin('get', '/:business_id/users/:wa_id', 'Export what Sealpost holds about one user (a data request)', 'UserExport', { query: UserQuery, tag: 'Admin: data' }),
  admin('delete', '/:business_id/users/:wa_id', 'Erase one user (a data request)', 'UserErased', { query: UserQuery, tag: 'Admin: data' }),

  { method: 'get', path: '/admin/conversations/:id', tag: 'Operator', summary: 'The conversation inspector, by conversation id or wamid: a page for browsers, JSON for `Accept: application/json` or `?format=json`', security: 'admin', ok: { 'application/json': { schema: { type: 'object', description: 'state, active states, the user\'s devices (numbers and flags), messages and trace of the conversation (no plaintext, no keys)' } }, ...text('text/html', 'the inspector page') } },
  { method: 'get', path: '/admin/groups/:group_id', tag: 'Operator', summary: 'A group actor (docs/groups.md): state, members by conversation id, the sender key\'s distribution id, what each message waits for, the mailbox and the trace\'s tail', security: 'admin', ok: json({ type: 'object', description: 'no plaintext, no phone numbers, no keys' }) },
  { method: 'get', path: '/admin/login', tag: 'Operator', summary: 'The sign-in page for operator pages in a browser', security: 'public', ok: text('text/html', 'the sign-in form') },
  { method: 'post', path: '/admin/login', tag: 'Operator', summary: 'Sign in with the admin token: sets the session cookie (a form post is redirected to `next`)', security: 'public', body: { 'application/x-www-form-urlencoded': { schema: { type: 'object', properties: { token: { type: 'string' }, next: { type: 'string' } }, required: ['token'] } }, ...json({ type: 'object', properties: { token: { type: 'string' } }, required: ['token'] }) }, ok: 'Success', more: { 303: { description: 'Signed in; on to `next` (default /admin/queues)' } } },
  { method: 'get', path: '/admin/queues', tag: 'Operator', summary: 'The queue board (BullMQ): jobs by queue and state; retry, promote, clean', security: 'admin', ok: text('text/html', 'the board'), more: { 303: { description: 'A browser without the session cookie: to the sign-in page' } } },
  { method: 'get', path: '/metrics', tag: 'Operator', summary: 'Prometheus metrics', security: 'admin', ok: text('text/plain', 'Prometheus text format') },
  { method: 'get', path: '/healthz', tag: 'Operator', summary: 'Liveness', security: 'public', ok: 'Health' },
  { method: 'get', path: '/readyz', tag: 'Operator', summary: 'Readiness: Redis and the platform answer; settings that put data at risk as warnings', security: 'public', ok: 'Readiness', more: { 503: { description: 'Not ready', content: json({ $ref: '#/components/schemas/Readiness' }) } } },

  { method: 'get', path: '/openapi.json', tag: 'Documentation', summary: 'This document', security: 'public', ok: { 'application/json': { schema: { type: 'object' } } } },
  { method: 'get', path: '/docs', tag: 'Documentation', summary: 'This document as a page (Swagger UI)', security: 'public', ok: text('text/html', 'Swagger UI') },
];

/** Request schemas (generated for input: optional fields are optional) and answer schemas, by component name. */
function components(): Record<string, Json> {
  const requests = z.registry<{ id: string }>();
  for (const t of MESSAGE_TYPES) requests.add(SEND_REQUESTS[t], { id: `Send${t[0]!.toUpperCase()}${t.slice(1)}Request` });
  requests.add(ReadRequest, { id: 'MarkReadRequest' });
  for (const t of GROUP_MESSAGE_TYPES) requests.add(GROUP_SEND_REQUESTS[t], { id: `SendGroup${t[0]!.toUpperCase()}${t.slice(1)}Request` });
  Object.entries({ CreateGroupRequest, UpdateGroupRequest, JoinRequestsRequest, RemoveParticipantsRequest, CreateBusinessBody, PatchBusinessBody, AppSecretBody, AddNumberBody, NumberWebhookBody, IssueTokenBody }).forEach(([id, s]) => requests.add(s, { id }));
  requests.add(MediaUploadFields.extend({ file: z.string().meta({ contentMediaType: 'application/octet-stream', description: 'The file (one part)' }) }), { id: 'MediaUploadForm' });
  const answers = z.registry<{ id: string }>();
  Object.entries({ ...BUSINESS_ANSWERS, ...ADMIN_ANSWERS, GraphErrorEnvelope }).forEach(([id, s]) => answers.add(s, { id }));
  const uri = (id: string) => `#/components/schemas/${id}`;
  const out = {
    ...z.toJSONSchema(requests, { target: 'draft-2020-12', io: 'input', uri, unrepresentable: 'any' }).schemas,
    ...z.toJSONSchema(answers, { target: 'draft-2020-12', io: 'output', uri, unrepresentable: 'any' }).schemas,
  } as Record<string, Json>;
  for (const s of Object.values(out)) {
    delete s.$schema;
    delete s.$id;
  }
  out.MessagesRequest = { oneOf: [...MESSAGE_TYPES.map((t) => ({ $ref: uri(`Send${t[0]!.toUpperCase()}${t.slice(1)}Request`) })), ...GROUP_MESSAGE_TYPES.map((t) => ({ $ref: uri(`SendGroup${t[0]!.toUpperCase()}${t.slice(1)}Request`) })), { $ref: uri('MarkReadRequest') }] };
  return out;
}

const content = (c: string | Json) => (typeof c === 'string' ? json({ $ref: `#/components/schemas/${c}` }) : c);
const openApiPath = (p: string) => p.replace(/:(\w+)/g, '{$1}');

/** The path's parameters and the query's, as OpenAPI parameters. */
function parameters(op: Operation): Json[] {
  const path = [...op.path.matchAll(/:(\w+)/g)].map((m) => ({
    name: m[1], in: 'path', required: true,
    schema: m[1] === 'version' ? { type: 'string', pattern: '^v\\d+\\.\\d+$', examples: ['v23.0'] } : { type: 'string' },
  }));
  const query = op.query ? Object.entries((z.toJSONSchema(op.query, { io: 'input' }) as { properties: Record<string, Json> }).properties).map(([name, schema]) => ({ name, in: 'query', required: false, schema })) : [];
  return [...path, ...query];
}

function operation(op: Operation): Json {
  const errors = op.security === 'public' ? ['400'] : ['400', '401', '404', ...(op.security === 'business' ? ['413', '429', '500', '503'] : ['500'])];
  return {
    tags: [op.tag], summary: op.summary, operationId: `${op.method}${openApiPath(op.path).replace(/[{}]/g, '').replace(/[^\w]+(\w)?/g, (_, c: string | undefined) => (c ?? '').toUpperCase())}`,
    security: op.security === 'public' ? [] : op.security === 'business' ? [{ businessToken: [] }] : [{ adminToken: [] }, { adminSession: [] }],
    ...(parameters(op).length ? { parameters: parameters(op) } : {}),
    ...(op.body ? { requestBody: { required: true, content: content(op.body) } } : {}),
    responses: {
      200: { description: 'OK', content: content(op.ok) },
      ...op.more,
      ...Object.fromEntries(errors.map((s) => [s, { $ref: '#/components/responses/GraphError' }])),
    },
  };
}

let built: Json | undefined;

/**
 * The OpenAPI 3.1 document (built once).
 * @example app.get('/openapi.json', async () => openApiDocument());
 */
export function openApiDocument(): Json {
  if (built) return built;
  const paths: Record<string, Json> = {};
  for (const op of OPERATIONS) (paths[openApiPath(op.path)] ??= {})[op.method] = operation(op);
  built = {
    openapi: '3.1.0',
    info: {
      title: 'Sealpost',
      version: '0.1.0',
      description: 'A self-hosted, Cloud-API-compatible router for end-to-end encrypted business messaging. The Business API answers as the WhatsApp Cloud API does (an SDK needs only its base URL changed); the admin API provisions businesses. Every refusal is the Graph error envelope. This document and /docs are public; the routes keep their authentication.',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    tags: [...new Set(OPERATIONS.map((o) => o.tag))].map((name) => ({ name, ...(PUBLIC_TAGS.includes(name) ? {} : { description: 'Behind SEALPOST_ADMIN_TOKEN' }) })),
    paths,
    components: {
      schemas: components(),
      responses: {
        GraphError: {
          description: `The Graph error envelope. Codes: ${Object.entries(GRAPH_ERROR_CODES).map(([c, d]) => `${c} ${d}`).join('; ')}.`,
          content: json({ $ref: '#/components/schemas/GraphErrorEnvelope' }),
        },
      },
      securitySchemes: {
        businessToken: { type: 'http', scheme: 'bearer', description: 'A business access token (`access_token` of `business create` or POST /admin/businesses/{business_id}/tokens); code 190 when missing or invalid.' },
        adminToken: { type: 'http', scheme: 'bearer', description: 'SEALPOST_ADMIN_TOKEN (the demo prints one it generated).' },
        adminSession: { type: 'apiKey', in: 'cookie', name: ADMIN_COOKIE, description: 'The session cookie POST /admin/login sets, for browsers.' },
      },
    },
  };
  return built;
}
