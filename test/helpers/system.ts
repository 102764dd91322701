import { ClientThrottle } from '../../src/runtime/client-throttle.ts';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { loadConfig, type Config } from '../../src/config.ts';
import { configureLogging } from '../../src/log.ts';
import { buildApp, type ApiDeps } from '../../src/api/app.ts';
import { adminRoutes } from '../../src/api/admin.ts';
import { opsRoutes } from '../../src/api/ops.ts';
import { metrics } from '../../src/ops/metrics.ts';
import { startPlatform } from '../../src/platform/server.ts';
import { createRouterContext, type RouterContext } from '../../src/runtime/router.ts';
import { startWorkers, type RunningWorkers } from '../../src/compose.ts';
import { startWebhookReceiver } from '../../src/webhook/receiver.ts';
import { deletePrefix, testPrefix, testRedisUrl } from './redis.ts';
import { waitFor } from './devices.ts';

export { createDevice, deviceMessages, deviceStats, waitFor } from './devices.ts';

/** Every log line written while the capture is on (tests scan them for canaries). */
export const capturedLogs: string[] = [];

/** Routes every logger created afterwards into {@link capturedLogs}. */
export function captureLogs(): void {
  configureLogging({
    level: 'debug',
    destination: new Writable({
      write(chunk, _enc, cb) {
        capturedLogs.push(String(chunk));
        cb();
      },
    }),
  });
}

/** A whole Sealpost system in this process: platform, router (API + workers) and a webhook receiver. */
export interface TestSystem {
  config: Config;
  redisUrl: string;
  prefix: string;
  masterKey: Buffer;
  ctx: RouterContext;
  workers?: RunningWorkers;
  apiUrl: string;
  platformUrl: string;
  receiver: Awaited<ReturnType<typeof startWebhookReceiver>>;
  business: { business_id: string; phone_number_id: string; display_phone_number: string; access_token: string; waba_id: string };
  appSecret: string;
  adminToken: string;
  /** Environment for a child process that should join this system (e.g. `sealpost worker`). */
  childEnv(): NodeJS.ProcessEnv;
  close(): Promise<void>;
}

/** Starts a system with its own key prefix; `workers: false` leaves the workers to other processes. */
export async function startSystem(opts: { workers?: boolean; env?: Record<string, string>; redisUrl?: string; platformTap?: (method: string, url: string, body: unknown) => void; onRoute?: ApiDeps['onRoute'] } = {}): Promise<TestSystem> {
  const redisUrl = opts.redisUrl ?? testRedisUrl();
  const prefix = testPrefix('sp');
  const masterKey = randomBytes(32);
  const env = { SEALPOST_PREFIX: prefix, SEALPOST_MASTER_KEY: masterKey.toString('base64'), SEALPOST_BUNDLE_RETRY_MS: '200', SEALPOST_WEBHOOK_BACKOFF_BASE_MS: '50', SEALPOST_WEBHOOK_BACKOFF_MAX_MS: '500', SEALPOST_ABUSE_LIMIT: '100000', ...opts.env };
  const config = loadConfig({ ...env, REDIS_URL: redisUrl });
  const platform = await startPlatform({ host: '127.0.0.1', port: 0, ...(opts.platformTap ? { tap: opts.platformTap } : {}) });
  const ctx = createRouterContext(config, redisUrl, masterKey, platform.url);
  const workers = opts.workers === false ? undefined : startWorkers(ctx);
  const adminToken = randomBytes(24).toString('base64url');
  const app = buildApp({
    businesses: ctx.businesses, outbound: ctx.outbound, logger: ctx.log.child({ component: 'api' }),
      throttle: new ClientThrottle(ctx.redis, ctx.keys, { limit: config.abuseLimit, windowMs: config.abuseWindowMs }), trustProxy: config.trustProxy,
      media: { store: ctx.media, retentionOf: (b: string) => ctx.outbound.retentionOf(b) },
      groups: ctx.groups,
      groupSend: { ...ctx, groupHost: ctx.groupHost },
      ...(opts.onRoute ? { onRoute: opts.onRoute } : {}),
    extraRoutes: [
      adminRoutes({ token: adminToken, businesses: ctx.businesses, stats: ctx.stats, data: ctx.data, publisher: ctx.publisher, dataKeys: ctx.dataKeys, groups: ctx.groups, denyPrivate: config.webhookDenyPrivate }),
      opsRoutes({
        token: adminToken, queues: Object.values(ctx.queues), metrics, redis: ctx.redis, platformUrl: platform.url,
        inspector: { stores: ctx.stores, keys: ctx.keys, dataKeys: ctx.dataKeys, redis: ctx.redis },
        groupInspector: { stores: ctx.stores, keys: ctx.keys, dataKeys: ctx.dataKeys, businesses: ctx.businesses },
      }),
    ],
  });
  const apiUrl = await app.listen({ host: '127.0.0.1', port: 0 });
  const appSecret = randomBytes(16).toString('hex');
  const verifyToken = 'verify-me';
  const receiver = await startWebhookReceiver({ port: 0, appSecret, verifyToken });
  // The highest throughput the Cloud API grants (1,000/s): suites that are not about limits send fast.
  const business = await ctx.businesses.create({ name: 'Test Co', webhookUrl: receiver.url, appSecret, verifyToken, throughputMps: 1000 });
  // Publish the business's bundle now, so users can write first without waiting for the periodic check.
  if (!(await ctx.publisher.ensure(business.phone_number_id))) throw new Error('could not publish the business prekeys');
  return {
    config, redisUrl, prefix, masterKey, ctx, workers, apiUrl, platformUrl: platform.url, receiver, business, appSecret, adminToken,
    childEnv: () => ({ ...process.env, ...env, REDIS_URL: redisUrl, PLATFORM_URL: platform.url, LOG_LEVEL: 'warn', SEALPOST_ADMIN_TOKEN: adminToken }),
    async close() {
      await app.close();
      await workers?.close();
      await ctx.close();
      await receiver.close();
      await platform.close();
      await deletePrefix(redisUrl, prefix);
    },
  };
}

/** The user writes to the business (a text); resolves with the message id once the business got it by webhook. */
export async function userWrites(sys: TestSystem, waId: string, text: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await fetch(`${sys.platformUrl}/sim/devices/${waId}/messages`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ to: sys.business.display_phone_number, text, ...extra }),
  });
  if (!res.ok) throw new Error(`device send failed: ${res.status} ${await res.text()}`);
  const { id } = (await res.json()) as { id: string };
  await waitFor(() => sys.receiver.messages().some((m) => m.id === id), `the business to receive ${id}`);
  return id;
}

/** Opens the 24-hour customer-service window for each user: each writes first. */
export async function openWindows(sys: TestSystem, waIds: string[]): Promise<void> {
  await Promise.all(waIds.map((w) => userWrites(sys, w, 'hi')));
}

/** Sends a text through the Cloud-API-compatible endpoint; returns the wamid. */
export async function sendText(sys: TestSystem, to: string, body: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ messaging_product: 'whatsapp', recipient_type: 'individual', to, type: 'text', text: { body }, ...extra }),
  });
  const json = (await res.json()) as { messages?: { id: string }[]; error?: unknown };
  if (res.status !== 200 || !json.messages?.[0]) throw new Error(`send failed: ${res.status} ${JSON.stringify(json)}`);
  return json.messages[0].id;
}

/** Sends a template (allowed outside the customer-service window); returns the wamid. */
export async function sendTemplate(sys: TestSystem, to: string, name: string, from: { phone_number_id: string; access_token: string } = sys.business): Promise<string> {
  const res = await fetch(`${sys.apiUrl}/v23.0/${from.phone_number_id}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${from.access_token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ messaging_product: 'whatsapp', to, type: 'template', template: { name, language: { code: 'en_US' } } }),
  });
  const json = (await res.json()) as { messages?: { id: string }[] };
  if (res.status !== 200 || !json.messages?.[0]) throw new Error(`template send failed: ${res.status} ${JSON.stringify(json)}`);
  return json.messages[0].id;
}
