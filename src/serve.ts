import { ClientThrottle } from './runtime/client-throttle.ts';
import { randomBytes } from 'node:crypto';
import type { Config } from './config.ts';
import { loadMasterKey, platformUrlOf } from './config.ts';
import { createRouterContext } from './runtime/router.ts';
import { startWorkers, type RunningWorkers } from './compose.ts';
import { redactUrl } from './redis/resolve.ts';
import { redisSettingsWarnings } from './redis/health.ts';
import { metrics } from './ops/metrics.ts';
import { conversationId } from './runtime/ids.ts';
import { startTracing, stopTracing } from './ops/tracing.ts';
import { graphEnvelope, newTraceId, toGraphError } from './runtime/graph-errors.ts';

/** Which parts one process runs. */
export interface ServeOptions {
  roles: ('api' | 'worker')[];
  embedPlatform: boolean;
  demo: boolean;
}

/** A running Sealpost process. */
export interface Running {
  apiUrl?: string;
  platformUrl: string;
  close(): Promise<void>;
}

const out = (s: string) => process.stdout.write(s + '\n');

/** Starts the requested roles in this process and stays up until SIGINT/SIGTERM. */
export async function serve(config: Config, redisUrl: string, opts: ServeOptions): Promise<Running> {
  const running = await start(config, redisUrl, opts);
  let closing = false;
  const stop = async (signal: string) => {
    if (closing) return;
    closing = true;
    out(`sealpost: ${signal}, finishing in-flight work`);
    await running.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
  return running;
}

/** Starts the roles without installing signal handlers (tests use this). */
export async function start(config: Config, redisUrl: string, opts: ServeOptions): Promise<Running> {
  const master = loadMasterKey(config);
  if (master.generated) out(`sealpost: generated a master key in ${master.source} (keep it: it unlocks all stored data)`);
  const closers: (() => Promise<void>)[] = [];
  // Before anything makes a queue or a logger: they take the tracing hooks when they are made. The SDK is
  // shut down last, which exports the spans still batched (the SIGTERM path goes through close()).
  const tracing = await startTracing(config.tracing, opts.roles.length === 1 ? `sealpost-${opts.roles[0]}` : 'sealpost');
  let platformUrl = platformUrlOf(config);
  if (opts.embedPlatform) {
    const { startPlatform } = await import('./platform/server.ts');
    const platform = await startPlatform({ host: '127.0.0.1', port: config.platformPort });
    platformUrl = platform.url;
    closers.push(() => platform.close());
    out(`platform (simulated transport and devices) on ${platform.url}`);
  }
  const ctx = createRouterContext(config, redisUrl, master.keys, platformUrl);
  closers.unshift(() => ctx.close());
  // Said once at start (and on /readyz): Redis settings that would lose data on a restart or under memory pressure.
  for (const warning of await redisSettingsWarnings(ctx.redis).catch((e: Error) => [`could not read Redis's settings: ${e.message}`])) {
    // The demo speaks to a person in lines of text; a service logs.
    if (opts.demo) out(`sealpost: warning: ${warning}`);
    else ctx.log.warn({ component: 'redis' }, warning);
  }
  let workers: RunningWorkers | undefined;
  if (opts.roles.includes('worker')) {
    workers = startWorkers(ctx);
    closers.unshift(() => workers!.close());
  }
  let apiUrl: string | undefined;
  // The demo makes an admin token up when none is configured, and prints it.
  const adminToken = config.adminToken ?? (opts.demo ? randomBytes(24).toString('base64url') : undefined);
  if (opts.roles.includes('api')) {
    const { buildApp } = await import('./api/app.ts');
    const { adminRoutes } = await import('./api/admin.ts');
    const { opsRoutes } = await import('./api/ops.ts');
    const app = buildApp({
      businesses: ctx.businesses, outbound: ctx.outbound, logger: ctx.log.child({ component: 'api' }),
      throttle: new ClientThrottle(ctx.redis, ctx.keys, { limit: config.abuseLimit, windowMs: config.abuseWindowMs }), trustProxy: config.trustProxy,
      media: { store: ctx.media, retentionOf: (b: string) => ctx.outbound.retentionOf(b) },
      groups: ctx.groups,
      groupSend: { ...ctx, groupHost: ctx.groupHost },
      extraRoutes: [
        adminRoutes({ token: adminToken, businesses: ctx.businesses, stats: ctx.stats, data: ctx.data, publisher: ctx.publisher, dataKeys: ctx.dataKeys, groups: ctx.groups, denyPrivate: config.webhookDenyPrivate }),
        opsRoutes({
          token: adminToken, queues: Object.values(ctx.queues), metrics, redis: ctx.redis, platformUrl,
          inspector: { stores: ctx.stores, keys: ctx.keys, dataKeys: ctx.dataKeys, redis: ctx.redis },
        groupInspector: { stores: ctx.stores, keys: ctx.keys, dataKeys: ctx.dataKeys, businesses: ctx.businesses },
        }),
      ],
    });
    const address = await app.listen({ host: config.host, port: config.port });
    apiUrl = address.replace('0.0.0.0', '127.0.0.1');
    closers.unshift(() => app.close());
    out(`API on ${apiUrl} (Redis ${redactUrl(redisUrl)})`);
  }
  if (!apiUrl && config.metricsPort !== undefined) {
    // A worker-only process: /metrics (behind the admin token) and /readyz on a port of its own.
    const { default: Fastify } = await import('fastify');
    const { opsRoutes } = await import('./api/ops.ts');
    const m = Fastify({ logger: false });
    // A wrong or missing admin token is a 401 (a disabled admin API too), in the Graph error envelope as on the API.
    m.setErrorHandler((err, _req, reply) => {
      const { graph } = toGraphError(err);
      return reply.code(graph.httpStatus).send(graphEnvelope(graph, newTraceId()));
    });
    await m.register(opsRoutes({ token: adminToken, queues: Object.values(ctx.queues), metrics, redis: ctx.redis, platformUrl }));
    const at = await m.listen({ host: config.host, port: config.metricsPort });
    closers.unshift(() => m.close());
    out(`metrics on ${at.replace('0.0.0.0', '127.0.0.1')}/metrics`);
  }
  if (opts.demo && apiUrl) {
    const demo = await provisionDemo(ctx, apiUrl, platformUrl, adminToken!, !!tracing);
    closers.unshift(demo.close);
  }
  return {
    apiUrl,
    platformUrl,
    async close() {
      for (const c of closers) await c();
      if (tracing) await stopTracing();
    },
  };
}

async function provisionDemo(ctx: ReturnType<typeof createRouterContext>, apiUrl: string, platformUrl: string, adminToken: string, tracingOn: boolean): Promise<{ close: () => Promise<void> }> {
  const { startWebhookReceiver } = await import('./webhook/receiver.ts');
  const appSecret = randomBytes(16).toString('hex');
  const verifyToken = randomBytes(8).toString('hex');
  const receiver = await startWebhookReceiver({ port: 0, appSecret, verifyToken, print: true });
  const created = await ctx.businesses.create({ name: 'Sealpost Demo', webhookUrl: receiver.url, appSecret, verifyToken });
  await ctx.publisher.ensure(created.phone_number_id);
  const phones = ['+15550100001', '+15550100002', '+15550100003'];
  const names = ['Ada', 'Grace', 'Linus (answers every message)'];
  const devices: string[] = [];
  for (const [i, phone] of phones.entries()) {
    const res = await fetch(`${platformUrl}/sim/devices`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ phone, name: names[i], auto_reply: i === 2 }),
    });
    devices.push(((await res.json()) as { wa_id: string }).wa_id);
  }
  // Ada also reads on a laptop, a linked companion with its own identity key and session: every message to her
  // is encrypted for both devices (docs/multi-device.md).
  const linked = await fetch(`${platformUrl}/sim/devices/${devices[0]}/linked`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  const laptop = ((await linked.json()) as { device_id: number }).device_id;
  // Each demo user writes first: their message reaches the business by webhook and opens the 24-hour
  // customer-service window, so the printed curl (a free-form text) is allowed.
  const greeted = await Promise.all(devices.map(async (waId) => {
    const res = await fetch(`${platformUrl}/sim/devices/${waId}/messages`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: created.display_phone_number, text: 'Hi!' }),
    });
    return ((await res.json()) as { id: string }).id;
  }));
  for (let i = 0; i < 300 && !greeted.every((id) => receiver.messages().some((m) => m.id === id)); i++) await new Promise((r) => setTimeout(r, 50));
  const body = JSON.stringify({ messaging_product: 'whatsapp', to: phones[0], type: 'text', text: { body: 'Hello from Sealpost' } });
  out('');
  out('Sealpost demo is ready.');
  out(`  business_id          ${created.business_id}`);
  out(`  phone_number_id      ${created.phone_number_id}`);
  out(`  display_phone_number ${created.display_phone_number}`);
  out(`  access_token         ${created.access_token}`);
  out(`  admin token          ${adminToken}`);
  out(`  demo users           ${devices.join(', ')} (the first reads on a linked laptop too, device ${laptop}; the last one answers every message)`);
  out(`  webhook receiver     ${receiver.url} (prints every status it gets)`);
  out('');
  out('Send a message:');
  out(`  curl -s -X POST ${apiUrl}/v23.0/${created.phone_number_id}/messages \\`);
  out(`    -H 'Authorization: Bearer ${created.access_token}' -H 'Content-Type: application/json' \\`);
  out(`    -d '${body}'`);
  out("See what Ada's phone received and decrypted, then her linked laptop:");
  out(`  curl -s ${platformUrl}/sim/devices/${devices[0]}/messages`);
  out(`  curl -s '${platformUrl}/sim/devices/${devices[0]}/messages?device=${laptop}'`);
  out("Today's statistics of the business (aggregates only):");
  out(`  curl -s -H 'Authorization: Bearer ${adminToken}' ${apiUrl}/admin/businesses/${created.business_id}/stats`);
  out('');
  // Ada's conversation exists already: her greeting opened it.
  const conversation = await conversationId(ctx.dataKeys, created.business_id, created.phone_number_id, devices[0]!);
  out('Where to look (pages ask for the admin token once, scripts send it as a Bearer header):');
  out(`  queue board          ${apiUrl}/admin/queues`);
  out(`  conversation         ${apiUrl}/admin/conversations/${conversation} (Ada's: state, statechart, trace)`);
  out(`  metrics              ${apiUrl}/metrics`);
  out(`  API reference        ${apiUrl}/docs (the OpenAPI document: ${apiUrl}/openapi.json; both public)`);
  if (tracingOn) {
    out(`  tracing              on: OTLP to ${otlpEndpointShown()} (OTEL_* variables; see docs/operations.md)`);
  } else {
    out('  tracing              off; set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318) and restart,');
    out('                       with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf or http/json');
  }
  out('');
  return { close: () => receiver.close() };
}

/** The collector's address as the start screen shows it (credentials in the URL masked). */
function otlpEndpointShown(): string {
  const raw = (process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || process.env.OTEL_EXPORTER_OTLP_ENDPOINT || '').trim();
  return raw.replace(/\/\/[^@/]*@/, '//***@');
}
