import type { FastifyInstance, FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
import { startSpan, type TraceSpan } from '../ops/tracing.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The request's HTTP server span (tracing on). */
    serverSpan?: TraceSpan;
  }
}

/**
 * Path parameters whose values may appear in a span's `url.path`: ids, never a user's phone number (an admin
 * route names users by wa_id). Any other parameter stays a `:name` placeholder.
 */
const SHOWN_PARAMS = new Set(['version', 'phone_number_id', 'business_id', 'media_id', 'token_id', 'id', 'group_id']);

/**
 * An HTTP server span per request, as the semantic conventions name them (`POST /:version/:phone_number_id/messages`),
 * continuing the caller's trace when it sends a `traceparent`; each route's handler runs with it active, so
 * the message a request accepts carries it onwards. Registered only while tracing is on. No query string,
 * no headers, no body, and a path only as far as {@link SHOWN_PARAMS} allow.
 */
export function registerServerSpans(app: FastifyInstance): void {
  app.decorateRequest('serverSpan', undefined);
  app.addHook('onRequest', async (req) => {
    req.serverSpan = startSpan(req.method, {
      kind: 'server',
      parent: parentOf(req),
      attributes: { 'http.request.method': req.method, 'url.scheme': req.protocol, 'server.address': req.hostname.replace(/:\d+$/, ''), 'server.port': req.port ?? undefined, 'network.protocol.version': req.raw.httpVersion },
    });
  });
  app.addHook('onRoute', (route) => {
    const handler = route.handler as RouteHandlerMethod;
    route.handler = function traced(this: FastifyInstance, req: FastifyRequest, reply: FastifyReply) {
      return req.serverSpan ? req.serverSpan.run(() => handler.call(this, req, reply)) : handler.call(this, req, reply);
    } as RouteHandlerMethod;
  });
  app.addHook('onResponse', async (req, reply) => {
    const span = req.serverSpan;
    if (!span) return;
    const route = req.routeOptions.url;
    span.set({
      'http.response.status_code': reply.statusCode,
      ...(route ? { 'http.route': route, 'url.path': shownPath(route, req.params as Record<string, string> | undefined) } : {}),
      ...(req.apiNote?.wamid ? { 'sealpost.wamid': req.apiNote.wamid } : {}),
      ...(req.apiNote?.conversation_id ? { 'sealpost.conversation_id': req.apiNote.conversation_id } : {}),
      ...(req.phoneNumber ? { 'sealpost.phone_number_id': req.phoneNumber.phone_number_id, 'sealpost.business_id': req.phoneNumber.business_id } : {}),
      ...(req.apiNote?.code !== undefined ? { 'sealpost.error_code': String(req.apiNote.code) } : {}),
    });
    if (route) span.rename(`${req.method} ${route}`);
    if (reply.statusCode >= 500) span.fail({ name: String(reply.statusCode), code: req.apiNote?.code });
    span.end();
  });
}

/** The caller's trace context, when it sent one. */
function parentOf(req: FastifyRequest): string | undefined {
  const tp = req.headers.traceparent;
  return typeof tp === 'string' && /^[\da-f]{2}-[\da-f]{32}-[\da-f]{16}-[\da-f]{2}$/.test(tp) ? tp : undefined;
}

/** The route with the values of the parameters that may be shown. */
function shownPath(route: string, params: Record<string, string> | undefined): string {
  return route.replace(/:([A-Za-z_]+)/g, (whole, name: string) => (SHOWN_PARAMS.has(name) && params?.[name] !== undefined ? encodeURIComponent(params[name]!) : whole));
}
