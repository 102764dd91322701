import { acceptGroupSend, isGroupSend, type GroupSendDeps } from '../runtime/group-send.ts';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, type RouteOptions } from 'fastify';
import type { Logger } from 'pino';
import { createLogger, maskPhone } from '../log.ts';
import type { OutboundPort } from '../runtime/ports.ts';
import type { BusinessStore, PhoneNumber } from '../store/businesses.ts';
import { ApplicationLimitError, ServiceUnavailableError, AuthError, graphEnvelope, InvalidParameterError, newTraceId, toGraphError, UnknownObjectError, UnsupportedTypeError } from '../runtime/graph-errors.ts';
import type { ClientThrottle } from '../runtime/client-throttle.ts';
import type { MediaInfo, MediaStore } from '../media/store.ts';
import { deleteMedia, mediaInfo, registerMedia } from './media.ts';
import type { GroupService } from '../runtime/groups.ts';
import { GROUP_ID, type GroupRecord } from '../store/groups.ts';
import { registerGroups } from './groups.ts';
import { handleMessagesRequest } from '../runtime/message-requests.ts';
import { metrics } from '../ops/metrics.ts';
import { tracingOn } from '../ops/tracing.ts';
import { registerServerSpans } from './server-spans.ts';
import type { TrustProxy } from '../config.ts';
import { docsRoutes } from './docs.ts';

/** What the API needs. */
export interface ApiDeps {
  businesses: BusinessStore;
  outbound: OutboundPort;
  logger?: Logger;
  /** Largest accepted body in bytes (default 1 MiB); larger ones get 413. */
  bodyLimit?: number;
  /** Routes other layers add (admin, metrics, board), each registered as a Fastify plugin. */
  extraRoutes?: ExtraRoutes | ExtraRoutes[];
  /** Throttles client addresses that send bad tokens or oversized bodies (none: no throttling). */
  throttle?: ClientThrottle;
  /**
   * Which reverse proxies to believe about the client address in X-Forwarded-For: a hop count, or their
   * addresses/CIDRs (Fastify's forms); false or unset: the socket's address is the client.
   */
  trustProxy?: TrustProxy;
  /** Media upload and retrieval (POST /{phone_number_id}/media, GET and DELETE /{media_id}). */
  media?: { store: MediaStore; retentionOf(businessId: string): Promise<number> };
  /** Groups (POST/GET /{phone_number_id}/groups, GET/POST/DELETE /{group_id} and its invite link, join requests, participants). */
  groups?: GroupService;
  /** Sending to groups (`"recipient_type":"group"` on POST /{phone_number_id}/messages); absent: refused with 131051. */
  groupSend?: GroupSendDeps;
  /** Told of every route as it is added, the plugins' included (test/api/openapi.test.ts checks them against the document). */
  onRoute?: (route: RouteOptions) => void;
}

/** A set of routes added to the API. */
export type ExtraRoutes = (app: FastifyInstance) => void | Promise<void>;

/** What the access log line of a request carries besides method, route, status and time. */
interface RequestNote {
  fbtrace_id?: string;
  code?: number;
  /** The recipient, masked. */
  to?: string;
  /** An unexpected error's message: for the operator, never for the client. */
  err?: string;
  /** The accepted message and its conversation, so its later lines (statuses, failures) can be followed. */
  wamid?: string;
  conversation_id?: string;
}

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Counts a refused request (bad token, oversized body) against its client address, for routes that answer
     * refusals themselves instead of through the API's error handler (the queue board).
     */
    countRefusal(req: FastifyRequest): void;
  }
  interface FastifyRequest {
    /** The phone number the route names, once the token was checked against it. */
    phoneNumber?: PhoneNumber;
    /** The media the route's id names (GET/DELETE /{media_id}), when it is the token's business's. */
    media?: MediaInfo;
    /** The group the route's id names, when it is the token's business's. */
    group?: GroupRecord;
    /** What the API's access log line adds for this request. */
    apiNote?: RequestNote;
  }
}

const VERSION = /^v\d+\.\d+$/;

/**
 * Fastify's form of the setting. A hop count becomes a function of the hop's index (Fastify 5 ignores a bare
 * number, failing closed): the socket is hop 0, then X-Forwarded-For from the right. Hop counts cannot tell
 * the proxy from a client that reaches the API directly, so docs/operations.md recommends addresses.
 */
function trustFunction(t: TrustProxy | undefined): boolean | string | ((addr: string, hop: number) => boolean) {
  if (typeof t === 'number') return (_addr, hop) => hop < t;
  return Array.isArray(t) ? t.join(',') : false;
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/**
 * Checks, in this order, the bearer token (190), the path's version and that the token's business owns the
 * route's phone number (100, the same for unknown and foreign ids). It runs on `onRequest`, before the body
 * is read, so an unauthenticated caller cannot make the API parse anything.
 */
async function authorize(req: FastifyRequest, businesses: BusinessStore, media?: MediaStore, groups?: GroupService): Promise<void> {
  const params = req.params as { version?: string; phone_number_id?: string; group_id?: string };
  const header = req.headers.authorization;
  const m = header ? BEARER.exec(header) : null;
  if (!m) throw new AuthError(header ? 'Invalid OAuth access token - Cannot parse access token' : 'An active access token must be used to query information about the current user.');
  const businessId = await businesses.authenticate(m[1]!);
  if (!businessId) throw new AuthError('Invalid OAuth access token - Cannot parse access token');
  if (params.version !== undefined && !VERSION.test(params.version)) throw new InvalidParameterError(`Unknown API version ${params.version.slice(0, 20)}`);
  const id = params.phone_number_id ?? params.group_id ?? '';
  // Group ids have a shape of their own (`G` and 24 base64url characters), never a number's or a media id's.
  if (groups && GROUP_ID.test(id)) {
    const g = await groups.groupOf(businessId, id);
    if (g) {
      req.group = g;
      return;
    }
    throw new UnknownObjectError(id.slice(0, 40), req.method === 'POST' ? 'POST' : req.method === 'DELETE' ? 'DELETE' : 'GET');
  }
  const pn = await businesses.phoneNumber(id);
  if (pn && pn.business_id === businessId) {
    req.phoneNumber = pn;
    return;
  }
  // GET and DELETE /{id} also name media: the business's own, else the same answer as an unknown id.
  const found = media ? await media.info(businessId, id) : null;
  if (found) {
    req.media = found;
    return;
  }
  throw new UnknownObjectError(id.slice(0, 40), req.method === 'POST' ? 'POST' : req.method === 'DELETE' ? 'DELETE' : 'GET');
}

/**
 * Builds the Cloud-API-compatible HTTP API (tests call `app.inject()` without a port).
 * @example const app = buildApp({ businesses, outbound }); await app.listen({ port: 8080 });
 */
export function buildApp(deps: ApiDeps): FastifyInstance {
  const log = deps.logger ?? createLogger('api');
  // Fastify's own request lines would log raw URLs; the access line below logs the route pattern instead.
  const app: FastifyInstance = Fastify({ loggerInstance: log as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: deps.bodyLimit ?? 1024 * 1024, trustProxy: trustFunction(deps.trustProxy) });
  if (deps.onRoute) {
    const onRoute = deps.onRoute;
    app.addHook('onRoute', (route) => onRoute(route));
  }
  app.decorateRequest('phoneNumber', undefined);
  app.decorateRequest('apiNote', undefined);
  app.decorateRequest('media', undefined);
  app.decorateRequest('group', undefined);
  // Before any route, so every route's handler runs inside its request's span.
  if (tracingOn()) registerServerSpans(app);

  const countRefusal = (req: FastifyRequest) => {
    if (deps.throttle) void deps.throttle.strike(req.ip).catch(() => undefined);
  };
  app.decorate('countRefusal', countRefusal);

  const fail = (req: FastifyRequest, reply: FastifyReply, err: unknown) => {
    const { graph, unexpected } = toGraphError(err);
    const fbtraceId = newTraceId();
    if (req.routeOptions.url?.endsWith('/messages')) metrics.refused.inc({ code: String(graph.code) });
    req.apiNote = { ...req.apiNote, fbtrace_id: fbtraceId, code: graph.code, ...(unexpected ? { err: String((err as Error | null)?.message ?? err).slice(0, 500) } : {}) };
    // Abuse of the API itself: a bad token or an oversized body is a strike against the client's address.
    if (graph.code === 190 || graph.httpStatus === 413) countRefusal(req);
    if (graph instanceof ApplicationLimitError || graph instanceof ServiceUnavailableError) reply.header('retry-after', String(graph.retryAfterS));
    return reply.code(graph.httpStatus).send(graphEnvelope(graph, fbtraceId));
  };
  // A throttled address is answered before anything else is done for it (no token look-up, no body read).
  if (deps.throttle) {
    const throttle = deps.throttle;
    // Answered here rather than thrown: a plugin's own error handler (the queue board's) would make it a 500.
    app.addHook('onRequest', async (req, reply) => {
      const wait = throttle.retryAfter(req.ip);
      if (wait > 0) return fail(req, reply, new ApplicationLimitError(Math.ceil(wait / 1000)));
    });
  }
  app.setErrorHandler((err, req, reply) => fail(req, reply, err));
  app.setNotFoundHandler((req, reply) => fail(req, reply, new InvalidParameterError(`Unknown path: ${req.method} ${req.url.split('?')[0]!.slice(0, 80)}`, 404)));

  // One line per request: never the body, never the raw URL, the recipient masked, the fbtrace_id of an error
  // so an operator can find the line a client quotes.
  app.addHook('onResponse', async (req, reply) => {
    const line = { method: req.method, route: req.routeOptions.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime), ...req.apiNote };
    if (reply.statusCode >= 500) req.log.error(line, 'request failed');
    else if (req.routeOptions.url === '/healthz' || req.routeOptions.url === '/readyz' || req.routeOptions.url === '/metrics') req.log.debug(line, 'request');
    else req.log.info(line, 'request');
  });

  app.get('/healthz', async () => ({ ok: true }));

  const auth = { onRequest: async (req: FastifyRequest) => authorize(req, deps.businesses) };

  const messages = async (req: FastifyRequest) => {
    if (isGroupSend(req.body)) {
      if (!deps.groupSend) throw new UnsupportedTypeError('group');
      const sent = await acceptGroupSend(deps.groupSend, req.phoneNumber!, req.body);
      req.apiNote = { ...req.apiNote, wamid: sent.wamid };
      return { messaging_product: 'whatsapp', contacts: [{ input: sent.groupId }], messages: [{ id: sent.wamid }] };
    }
    const outcome = await handleMessagesRequest(deps.outbound, req.phoneNumber!, req.body, {
      onSend: (send) => (req.apiNote = { ...req.apiNote, to: maskPhone(send.waId) }),
    });
    if (outcome.kind === 'read') return { success: true };
    const { accepted } = outcome;
    req.apiNote = { ...req.apiNote, wamid: accepted.wamid, ...(accepted.conversationId ? { conversation_id: accepted.conversationId } : {}) };
    return { messaging_product: 'whatsapp', contacts: [{ input: outcome.to, wa_id: accepted.waId }], messages: [{ id: accepted.wamid }] };
  };
  app.post('/:version/:phone_number_id/messages', auth, messages);
  app.post('/:phone_number_id/messages', auth, messages);

  const number = async (req: FastifyRequest) => {
    if (req.media) return mediaInfo(req, req.media);
    if (req.group) return deps.groups!.info(req.group, (req.query as { fields?: unknown }).fields);
    const pn = req.phoneNumber!;
    return {
      id: pn.phone_number_id, display_phone_number: pn.display_phone_number, verified_name: pn.verified_name, quality_rating: pn.quality_rating,
      throughput: { level: pn.throughput.level }, whatsapp_business_manager_messaging_limit: pn.messaging_limit_tier,
    };
  };
  const idAuth = { onRequest: async (req: FastifyRequest) => authorize(req, deps.businesses, deps.media?.store, deps.groups) };
  app.get('/:version/:phone_number_id', idAuth, number);
  app.get('/:phone_number_id', idAuth, number);
  if (deps.media) registerMedia(app, deps.media, auth, deps.businesses);
  // DELETE /{id}: a media object or a group, whichever the business's id names.
  if (deps.media || deps.groups) {
    const remove = async (req: FastifyRequest) => {
      if (req.group) return deps.groups!.delete(req.group);
      if (deps.media) return deleteMedia(deps.media.store, req);
      throw new UnknownObjectError(String((req.params as { phone_number_id: string }).phone_number_id).slice(0, 40), 'DELETE');
    };
    app.delete('/:version/:phone_number_id', idAuth, remove);
    app.delete('/:phone_number_id', idAuth, remove);
  }
  if (deps.groups) {
    const groups = deps.groups;
    // Routes naming a group: only a group of the token's business passes (else 100, as for an unknown id).
    const groupAuth = {
      onRequest: async (req: FastifyRequest) => {
        await authorize(req, deps.businesses, undefined, groups);
        if (!req.group) throw new UnknownObjectError(String((req.params as { group_id?: string }).group_id ?? '').slice(0, 40), req.method === 'POST' ? 'POST' : req.method === 'DELETE' ? 'DELETE' : 'GET');
      },
    };
    registerGroups(app, groups, auth, groupAuth);
  }
  // The OpenAPI document and its page: public, like the Cloud API's reference.
  void app.register(docsRoutes);

  for (const routes of [deps.extraRoutes ?? []].flat()) {
    void app.register(async (scope) => {
      await routes(scope);
    });
  }
  return app;
}
