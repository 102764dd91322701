import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import { WireFormatError } from '../signal/bundle.ts';
import { UnknownAddressError, UnknownMessageError } from './device-model.ts';
import { BadSignatureError } from './directory.ts';
import { groupApi } from './group-api.ts';
import { routerApi } from './router-api.ts';
import { maskNumbers } from './mask.ts';
import { HttpError } from './schemas.ts';
import { simApi } from './sim-api.ts';
import { PlatformState, type PlatformOptions } from './state.ts';

/** Largest request body: a batch of PreKey envelopes (about 2.7 KB of base64 each) or a key upload. */
export const BODY_LIMIT = 8 * 1024 * 1024;

/** Default port of the platform (`PLATFORM_PORT`). */
export const DEFAULT_PLATFORM_PORT = 8081;

/** A built platform: the Fastify app (use `app.inject()` in tests) and its in-memory state. */
export interface Platform {
  app: FastifyInstance;
  state: PlatformState;
}

/** A platform listening on a port. */
export interface RunningPlatform extends Platform {
  /** Base URL, e.g. `http://127.0.0.1:8081`. */
  url: string;
  close(): Promise<void>;
}

const oneLine = (s: string): string => s.replace(/\s+/g, ' ').trim();

/** Maps every error to `{"error": "<one-line reason>"}` with its 4xx status; anything else is a logged 500. */
function errorReply(err: unknown): { status: number; body: Record<string, unknown> } {
  if (err instanceof HttpError) return { status: err.status, body: { error: err.message, ...err.extra } };
  if (err instanceof WireFormatError) return { status: 400, body: { error: err.message } };
  if (err instanceof BadSignatureError) return { status: 422, body: { error: 'bad_signature' } };
  if (err instanceof UnknownAddressError) return { status: 404, body: { error: 'unknown_address' } };
  if (err instanceof UnknownMessageError) return { status: 404, body: { error: 'unknown_message' } };
  const fe = err as Partial<FastifyError>;
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: fe.statusCode, body: { error: oneLine(fe.message ?? 'bad request') } };
  }
  return { status: 500, body: { error: 'internal error' } };
}

/**
 * Builds the platform (transport + simulated devices) without opening a port.
 * @example const { app, state } = buildPlatform(); const res = await app.inject({ method: 'GET', url: '/healthz' });
 */
export function buildPlatform(opts: PlatformOptions = {}): Platform {
  const state = new PlatformState(opts);
  const app = Fastify({
    loggerInstance: state.log as FastifyBaseLogger,
    // Fastify's request lines carry URLs with phone numbers; the hook below logs the route pattern instead.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    // Long polls last up to 30 s; keep idle keep-alive connections longer than that.
    keepAliveTimeout: 65_000,
    forceCloseConnections: true,
  });

  // An empty JSON body (e.g. a bare `POST /v1/events/pull`) means "all defaults".
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, {});
    json(req, text, done);
  });

  if (opts.tap) {
    const tap = opts.tap;
    app.addHook('preHandler', async (req) => tap(req.method, req.url, req.body));
  }
  app.addHook('onResponse', async (req, reply) => {
    req.log.debug({ method: req.method, route: req.routeOptions.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'request');
  });

  app.setErrorHandler((err, req, reply) => {
    const { status, body } = errorReply(err);
    // A 503 from an injected outage is the platform doing its job, not a failure worth a stack trace.
    if (status >= 500 && status !== 503) req.log.error({ err: maskNumbers(String((err as Error)?.stack ?? err)), route: req.routeOptions.url }, 'platform request failed');
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: `no route ${req.method} ${req.url.split('?')[0]}` }));

  app.get('/healthz', async () => ({ ok: true }));
  app.register(routerApi(state));
  app.register(simApi(state));
  app.register(groupApi(state));
  // Before the server waits for in-flight requests: answer long polls so closing never hangs on them.
  app.addHook('preClose', async () => state.close());
  return { app, state };
}

/**
 * Starts the platform on a port (0 picks a free one) and returns its URL.
 * @example const p = await startPlatform({ port: 0 }); await fetch(`${p.url}/healthz`); await p.close();
 */
export async function startPlatform(
  opts: { host?: string; port?: number } & PlatformOptions = {},
): Promise<RunningPlatform> {
  const { host = '127.0.0.1', port = DEFAULT_PLATFORM_PORT, ...rest } = opts;
  const platform = buildPlatform(rest);
  await platform.app.listen({ host, port });
  const addr = platform.app.server.address();
  const actualPort = typeof addr === 'object' && addr ? addr.port : port;
  const reachable = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `http://${reachable}:${actualPort}`;
  platform.state.log.info({ url }, 'platform listening');
  return { ...platform, url, close: () => platform.app.close() };
}
