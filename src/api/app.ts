import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { createLogger, maskPhone } from '../log.ts';
import type { OutboundPort } from '../runtime/ports.ts';
import type { BusinessStore, PhoneNumber } from '../store/businesses.ts';
import { AuthError, GraphError, graphEnvelope, InternalError, InvalidParameterError, newTraceId, PairRateLimitError, ReengagementError, ThroughputError, UnknownObjectError } from './errors.ts';
import { RateLimitedError } from '../runtime/rate-limits.ts';
import { WindowClosedError } from '../runtime/ports.ts';
import { validateMessagesBody } from './validate.ts';

/** What the API needs. */
export interface ApiDeps {
  businesses: BusinessStore;
  outbound: OutboundPort;
  logger?: Logger;
  /** Largest accepted body in bytes (default 1 MiB); larger ones get 413. */
  bodyLimit?: number;
  /** Routes other layers add (admin, metrics, board). */
  extraRoutes?: (app: FastifyInstance) => void;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The phone number the route names, once the token was checked against it. */
    phoneNumber?: PhoneNumber;
  }
}

const VERSION = /^v\d+\.\d+$/;

/** Checks the bearer token and that the token's business owns the route's phone number (before the body is read). */
async function authorize(req: FastifyRequest, businesses: BusinessStore): Promise<void> {
  const params = req.params as { version?: string; phone_number_id?: string };
  const header = req.headers.authorization;
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  if (!m) throw new AuthError(header ? 'Invalid OAuth access token - Cannot parse access token' : 'An active access token must be used to query information about the current user.');
  const businessId = await businesses.authenticate(m[1]!);
  if (!businessId) throw new AuthError('Invalid OAuth access token - Cannot parse access token');
  if (params.version !== undefined && !VERSION.test(params.version)) throw new InvalidParameterError(`Unknown API version ${params.version.slice(0, 20)}`);
  const id = params.phone_number_id ?? '';
  const pn = await businesses.phoneNumber(id);
  if (!pn || pn.business_id !== businessId) throw new UnknownObjectError(id.slice(0, 40), req.method === 'GET' ? 'GET' : 'POST');
  req.phoneNumber = pn;
}

/**
 * Builds the Cloud-API-compatible HTTP API (tests call `app.inject()` without a port).
 * @example const app = buildApp({ businesses, outbound }); await app.listen({ port: 8080 });
 */
export function buildApp(deps: ApiDeps): FastifyInstance {
  const log = deps.logger ?? createLogger('api');
  const app: FastifyInstance = Fastify({ loggerInstance: log as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }), bodyLimit: deps.bodyLimit ?? 1024 * 1024 });

  const fail = (req: FastifyRequest, reply: FastifyReply, err: unknown) => {
    const traceId = newTraceId();
    let graph: GraphError;
    const fe = err as { code?: string; statusCode?: number; message?: string };
    if (err instanceof GraphError) graph = err;
    else if (err instanceof WindowClosedError) graph = new ReengagementError();
    else if (err instanceof RateLimitedError) graph = err.limit === 'throughput' ? new ThroughputError() : new PairRateLimitError();
    else if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') graph = new InvalidParameterError('Request body too large', 413);
    else if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') graph = new InvalidParameterError('Content-Type must be application/json');
    else if (fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (fe.statusCode === 400 && err instanceof SyntaxError)) graph = new InvalidParameterError('Request body is not valid JSON');
    else if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) graph = new InvalidParameterError(fe.message ?? 'Invalid request', fe.statusCode);
    else {
      graph = new InternalError();
      req.log.error({ fbtrace_id: traceId, err: fe.message }, 'request failed');
    }
    if (graph.httpStatus < 500) req.log.info({ fbtrace_id: traceId, code: graph.code, route: req.routeOptions.url }, 'request refused');
    return reply.code(graph.httpStatus).send(graphEnvelope(graph, traceId));
  };
  app.setErrorHandler((err, req, reply) => fail(req, reply, err));
  app.setNotFoundHandler((req, reply) => fail(req, reply, new InvalidParameterError(`Unknown path: ${req.method} ${req.url.split('?')[0]!.slice(0, 80)}`, 404)));

  app.get('/healthz', async () => ({ ok: true }));

  const auth = { onRequest: async (req: FastifyRequest) => authorize(req, deps.businesses) };

  const messages = async (req: FastifyRequest) => {
    const pn = req.phoneNumber!;
    const body = validateMessagesBody(req.body);
    if (body.kind === 'read') {
      const ok = await deps.outbound.markRead(pn.business_id, pn.phone_number_id, body.read.messageId);
      if (!ok) throw new InvalidParameterError('Parameter message_id is not a message this phone number received');
      return { success: true };
    }
    const { send } = body;
    const accepted = await deps.outbound.accept({
      businessId: pn.business_id,
      phoneNumberId: pn.phone_number_id,
      waId: send.waId,
      message: send.message,
      ...(send.bizOpaqueCallbackData !== undefined ? { bizOpaqueCallbackData: send.bizOpaqueCallbackData } : {}),
    });
    req.log.debug({ wamid: accepted.wamid, to: maskPhone(send.waId) }, 'message accepted');
    return { messaging_product: 'whatsapp', contacts: [{ input: send.to, wa_id: accepted.waId }], messages: [{ id: accepted.wamid }] };
  };
  app.post('/:version/:phone_number_id/messages', auth, messages);
  app.post('/:phone_number_id/messages', auth, messages);

  const number = async (req: FastifyRequest) => {
    const pn = req.phoneNumber!;
    return { id: pn.phone_number_id, display_phone_number: pn.display_phone_number, verified_name: pn.verified_name, quality_rating: pn.quality_rating, throughput: pn.throughput };
  };
  app.get('/:version/:phone_number_id', auth, number);
  app.get('/:phone_number_id', auth, number);

  deps.extraRoutes?.(app);
  return app;
}
