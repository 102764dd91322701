import { inspectGroup, type GroupInspectorDeps } from '../ops/group-inspector.ts';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { redisSettingsWarnings } from '../redis/health.ts';
import { checkAdmin, isAdmin, presentsCredentials, setAdminCookie, wantsHtml } from '../ops/admin-auth.ts';
import { graphEnvelope, newTraceId, toGraphError } from '../runtime/graph-errors.ts';
import type { Metrics } from '../ops/metrics.ts';
import { inspect, inspectorPage, INSPECTOR_CSP, type InspectorDeps } from '../ops/inspector.ts';
import { InvalidParameterError } from '../runtime/graph-errors.ts';

/** What the operator routes need. */
export interface OpsDeps {
  /** SEALPOST_ADMIN_TOKEN; without one the board and /metrics refuse every request. */
  token?: string;
  /** Every Sealpost queue, shown on the board. */
  queues: Queue[];
  metrics: Metrics;
  /** /readyz checks these. */
  redis: Redis;
  platformUrl: string;
  /** The conversation inspector at /admin/conversations/{id} (off when absent). */
  inspector?: InspectorDeps;
  /** The group actor inspector at /admin/groups/{group_id} (JSON; off when absent). */
  groupInspector?: GroupInspectorDeps;
}

const LOGIN_PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sealpost admin</title>
<style>body{font:15px system-ui,sans-serif;max-width:26rem;margin:12vh auto;color:#1d2733}input,button{font:inherit;padding:.5rem;width:100%;box-sizing:border-box;margin:.3rem 0}button{background:#1d6b57;color:#fff;border:0;border-radius:4px}</style>
</head><body><h1>Sealpost admin</h1><form method="post" action="/admin/login"><label for="token">Admin token (SEALPOST_ADMIN_TOKEN)</label>
<input id="token" name="token" type="password" autocomplete="current-password" required><input type="hidden" name="next" value="__NEXT__"><button type="submit">Sign in</button></form></body></html>`;

/** The queue board's Content-Security-Policy. */
const BOARD_CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

const safeNext = (n: unknown) => (typeof n === 'string' && /^\/admin\/[\w\-./%?=&]*$/.test(n) && !n.startsWith('//') ? n : '/admin/queues');

/**
 * Operator routes: the BullMQ board at /admin/queues (retry, promote, clean), /metrics for Prometheus, a
 * login page that sets the admin session cookie for browsers, and /readyz. The board and /metrics need the
 * admin token (Bearer, or the cookie); /readyz and /healthz do not (they reveal nothing).
 */
export function opsRoutes(deps: OpsDeps) {
  deps.metrics.watchQueues(deps.queues);
  return async (app: FastifyInstance): Promise<void> => {
    app.get('/readyz', async (_req, reply) => {
      const checks: Record<string, string> = {};
      try {
        checks.redis = (await Promise.race([deps.redis.ping(), new Promise<string>((_, rej) => setTimeout(() => rej(new Error('timeout')), 2000))])) === 'PONG' ? 'ok' : 'unexpected answer';
      } catch (e) {
        checks.redis = `unreachable: ${(e as Error).message}`;
      }
      try {
        const res = await fetch(`${deps.platformUrl}/healthz`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        checks.platform = res.ok ? 'ok' : `answered ${res.status}`;
      } catch (e) {
        checks.platform = `unreachable: ${(e as Error).message}`;
      }
      const ready = Object.values(checks).every((v) => v === 'ok');
      // Settings that put data at risk do not make the process unready, but an operator polling this sees them.
      const warnings = checks.redis === 'ok' ? await redisSettingsWarnings(deps.redis).catch((e: Error) => [`could not read Redis's settings: ${e.message}`]) : [];
      return reply.code(ready ? 200 : 503).send({ ready, checks, warnings });
    });

    // Browsers ask for it on every operator page; without this route it would hit GET /{phone_number_id}.
    app.get('/favicon.ico', async (_req, reply) => reply.code(204).header('cache-control', 'max-age=86400').send());

    app.get('/metrics', async (req, reply) => {
      checkAdmin(req, deps.token);
      return reply.header('content-type', deps.metrics.registry.contentType).send(await deps.metrics.text());
    });

    app.get('/admin/login', async (req, reply) => {
      const next = safeNext((req.query as Record<string, unknown>).next);
      return reply.type('text/html; charset=utf-8').send(LOGIN_PAGE.replace('__NEXT__', next.replace(/[<>"&]/g, '')));
    });

    // The login form posts application/x-www-form-urlencoded; API clients may post JSON.
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 4096 }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });
    app.post('/admin/login', async (req, reply) => {
      const body = (req.body ?? {}) as { token?: unknown; next?: unknown };
      const given = typeof body.token === 'string' ? body.token : '';
      checkAdmin({ headers: { authorization: `Bearer ${given}` } } as FastifyRequest, deps.token);
      setAdminCookie(reply, deps.token!, req.protocol === 'https');
      if (wantsHtml(req) || (req.headers['content-type'] ?? '').includes('form-urlencoded')) return reply.redirect(safeNext(body.next), 303);
      return { success: true };
    });

    // The conversation inspector: a page for browsers (the login page first without the cookie), JSON for
    // scripts (Accept: application/json or ?format=json). By conversation id or by a wamid of its messages.
    if (deps.inspector) {
      const inspector = deps.inspector;
      app.get('/admin/conversations/:id', async (req, reply) => {
        const html = wantsHtml(req) && (req.query as { format?: string }).format !== 'json';
        if (html && !isAdmin(req, deps.token) && deps.token) return reply.redirect(`/admin/login?next=${encodeURIComponent(req.url)}`, 303);
        checkAdmin(req, deps.token);
        const id = (req.params as { id: string }).id;
        const data = /^[\w.\-]{1,200}$/.test(id) ? await inspect(inspector, id) : null;
        reply.header('cache-control', 'no-store');
        if (!html) {
          if (!data) throw new InvalidParameterError('No such conversation: neither a conversation id nor a wamid of a message Sealpost still holds', 404);
          return data;
        }
        reply.header('content-security-policy', INSPECTOR_CSP).header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');
        if (!data) return reply.code(404).type('text/html; charset=utf-8').send('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not found · Sealpost</title></head><body><h1>No such conversation</h1><p>Neither a conversation id nor a wamid of a message Sealpost still holds.</p></body></html>');
        return reply.type('text/html; charset=utf-8').send(inspectorPage(data));
      });
    }

    // A group actor, as JSON (members by conversation id, no content, no keys).
    if (deps.groupInspector) {
      const gi = deps.groupInspector;
      app.get('/admin/groups/:group_id', async (req, reply) => {
        checkAdmin(req, deps.token);
        const data = await inspectGroup(gi, (req.params as { group_id: string }).group_id);
        reply.header('cache-control', 'no-store');
        if (!data) throw new InvalidParameterError('No such group actor: not a group id, or its actor never ran (or was deleted)', 404);
        return data;
      });
    }

    // The board, with its static files and JSON API, in its own scope behind the admin check.
    await app.register(async (scope) => {
      scope.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
        if (isAdmin(req, deps.token)) return;
        // A wrong token or session cookie is a strike like on every other admin route (the refusals below
        // do not pass through the API's error handler, which counts those).
        if (presentsCredentials(req)) req.server.countRefusal?.(req);
        if (wantsHtml(req) && req.method === 'GET' && deps.token) return reply.redirect(`/admin/login?next=${encodeURIComponent(req.url)}`, 303);
        // Answered here: bull-board's plugin has an error handler of its own that would turn a throw into a 500.
        try {
          checkAdmin(req, deps.token);
        } catch (e) {
          const { graph } = toGraphError(e);
          return reply.code(graph.httpStatus).send(graphEnvelope(graph, newTraceId()));
        }
      });
      // The board's own scripts, styles and API only: no CDN (its page links a web font, which stays unloaded)
      // and nothing from elsewhere; its React UI sets inline styles, hence 'unsafe-inline' for styles only.
      scope.addHook('onSend', async (_req, reply, payload) => {
        reply.header('content-security-policy', BOARD_CSP).header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');
        return payload;
      });
      const server = new FastifyAdapter();
      server.setBasePath('/admin/queues');
      createBullBoard({
        queues: deps.queues.map((q) => new BullMQAdapter(q, { readOnlyMode: false, allowRetries: true, description: describe(q.name) })),
        serverAdapter: server,
        options: { uiConfig: { boardTitle: 'Sealpost queues' } },
      });
      await scope.register(server.registerPlugin(), { prefix: '/admin/queues' });
    });
  };
}

function describe(name: string): string {
  const kind = name.replace(/[{}]/g, '');
  return ({
    conversations: 'wake-ups of conversation actors (one waiting per conversation)',
    outbound: 'messages enqueued directly by business backends',
    timers: 'retransmission, bundle-retry and retention deletion timers',
    webhooks: 'webhook deliveries to businesses (per-business outbox wake-ups)',
    groups: 'wake-ups and retransmission timers of group actors',
  } as Record<string, string>)[kind] ?? kind;
}
