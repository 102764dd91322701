import { createHmac } from 'node:crypto';
import Fastify from 'fastify';
import { ADMIN_SESSION_MS, sessionValue } from '../../src/ops/admin-auth.ts';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { opsRoutes } from '../../src/api/ops.ts';
import { metrics } from '../../src/ops/metrics.ts';
import { schedulePurge } from '../../src/queues/timers.ts';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { createDevice, sendTemplate, startSystem, waitFor, type TestSystem } from '../helpers/system.ts';
import { testRedisUrl } from '../helpers/redis.ts';

describe('operators: queue board, metrics, readiness', () => {
  let sys: TestSystem;
  const get = (path: string, headers: Record<string, string> = {}) => fetch(`${sys.apiUrl}${path}`, { headers, redirect: 'manual' });
  const admin = () => ({ authorization: `Bearer ${sys.adminToken}` });

  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  it('/admin/queues answers 401 without the admin token and lists every queue with it', async () => {
    for (const path of ['/admin/queues', '/admin/queues/api/queues', '/admin/queues/static/js/main.js']) {
      const res = await get(path);
      expect(res.status, path).toBe(401);
      expect(((await res.json()) as { error: { code: number } }).error.code).toBe(190);
    }
    expect((await get('/admin/queues', { authorization: 'Bearer not-the-admin-token-at-all' })).status).toBe(401);
    const page = await get('/admin/queues', admin());
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<div id="root"');
    const api = await get('/admin/queues/api/queues', admin());
    expect(api.status).toBe(200);
    const names = ((await api.json()) as { queues: { name: string; readOnlyMode: boolean }[] }).queues;
    expect(names.map((q) => q.name).sort()).toEqual(['{conversations}', '{groups}', '{outbound}', '{timers}', '{webhooks}']);
    expect(names.every((q) => !q.readOnlyMode)).toBe(true);
  });

  it('a browser is sent to the login page, and the session cookie it gets opens the board', async () => {
    const redirect = await get('/admin/queues', { accept: 'text/html' });
    expect(redirect.status).toBe(303);
    expect(redirect.headers.get('location')).toMatch(/^\/admin\/login\?next=/);
    expect(await (await get('/admin/login')).text()).toContain('name="token"');
    const wrong = await fetch(`${sys.apiUrl}/admin/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'token=wrong', redirect: 'manual' });
    expect(wrong.status).toBe(401);
    const login = await fetch(`${sys.apiUrl}/admin/login`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, redirect: 'manual',
      body: new URLSearchParams({ token: sys.adminToken, next: '/admin/queues' }).toString(),
    });
    expect(login.status).toBe(303);
    expect(login.headers.get('location')).toBe('/admin/queues');
    const cookie = login.headers.get('set-cookie')!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).not.toContain(sys.adminToken);
    const board = await get('/admin/queues/api/queues', { cookie: cookie.split(';')[0]! });
    expect(board.status).toBe(200);
  });

  it('a session cookie carries its issue time and the server ends it after 12 hours', async () => {
    const now = Date.now();
    const open = async (value: string) => (await get('/admin/queues/api/queues', { cookie: `sealpost_admin=${value}` })).status;
    expect(await open(sessionValue(sys.adminToken, now - 60_000))).toBe(200);
    expect(await open(sessionValue(sys.adminToken, now - ADMIN_SESSION_MS - 1000))).toBe(401);
    // Issued in the future (forged), of another token, tampered with, or the old form without a time: refused.
    expect(await open(sessionValue(sys.adminToken, now + 3_600_000))).toBe(401);
    expect(await open(sessionValue('another-admin-token-entirely', now))).toBe(401);
    const good = sessionValue(sys.adminToken, now);
    expect(await open(`${Number(good.split('.')[0]) - 3600}.${good.split('.')[1]}`)).toBe(401);
    expect(await open(createHmac('sha256', sys.adminToken).update('sealpost admin session v1').digest('base64url'))).toBe(401);
  });

  it('promotes a delayed job from the board (actions, not a read-only view)', async () => {
    await schedulePurge(sys.ctx.queues.timers, 'c-board-test', Date.now() + 3_600_000, 7 * 86_400_000);
    const job = (await sys.ctx.queues.timers.getDelayed()).find((j) => (j.data as { conversationId?: string }).conversationId === 'c-board-test');
    expect(job).toBeDefined();
    const res = await fetch(`${sys.apiUrl}/admin/queues/api/queues/${encodeURIComponent('{timers}')}/${encodeURIComponent(job!.id!)}/promote`, { method: 'PUT', headers: admin() });
    expect(res.status).toBe(204);
    await waitFor(async () => (await sys.ctx.queues.timers.getJobState(job!.id!)) !== 'delayed', 'the promoted job to leave the delayed set');
  });

  it('/metrics exposes the series after a real send, delivery, failure and webhook, with no user identifier', async () => {
    expect((await get('/metrics')).status).toBe(401);
    const waId = await createDevice(sys.platformUrl, '+15559870001');
    const wamid = await sendTemplate(sys, waId, 'metrics_check');
    const failed = await sendTemplate(sys, '15559870999', 'nobody_there');
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'the delivered webhook');
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === failed && s.status === 'failed'), 'the failed webhook');
    const res = await get('/metrics', admin());
    expect(res.status).toBe(200);
    const text = await res.text();
    for (const series of [
      'sealpost_messages_accepted_total', 'sealpost_accept_to_delivered_seconds_bucket', 'sealpost_envelopes_sent_total',
      'sealpost_retransmissions_total', 'sealpost_message_failures_total{code="131026"}', 'sealpost_statuses_total{status="delivered"}',
      'sealpost_actors_hydrated_total', 'sealpost_actor_drain_seconds_bucket', 'sealpost_job_processing_seconds_bucket{le="0.001",queue="conversations"}',
      'sealpost_job_wait_seconds_bucket', 'sealpost_webhook_delivery_seconds_bucket{le="0.005",outcome="delivered"}',
      'sealpost_webhook_deliveries_total{outcome="delivered"}', 'sealpost_queue_jobs{queue="conversations",state="waiting"}',
      'sealpost_queue_jobs{queue="webhooks",state="failed"}', 'sealpost_inbound_messages_total', 'sealpost_process_cpu_seconds_total',
    ]) expect(text, series).toContain(series);
    const count = (name: string) => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1] ?? NaN);
    expect(count('sealpost_messages_accepted_total')).toBeGreaterThanOrEqual(2);
    expect(count('sealpost_accept_to_delivered_seconds_count')).toBeGreaterThanOrEqual(1);
    for (const id of [waId, wamid, failed, '15559870999', conversationOfWamid(wamid)!, sys.business.business_id, sys.business.phone_number_id]) {
      expect(text).not.toContain(id);
    }
  });

  it('/readyz is 200 when Redis and the platform answer, 503 naming the one that does not', async () => {
    const ok = await get('/readyz');
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ ready: true, checks: { redis: 'ok', platform: 'ok' }, warnings: expect.any(Array) });
    const redis = new Redis(testRedisUrl());
    const app = Fastify();
    await app.register(opsRoutes({ token: 'x'.repeat(20), queues: [], metrics, redis, platformUrl: 'http://127.0.0.1:9' }));
    try {
      const res = await app.inject({ method: 'GET', url: '/readyz' });
      expect(res.statusCode).toBe(503);
      const body = res.json() as { ready: boolean; checks: Record<string, string> };
      expect(body.ready).toBe(false);
      expect(body.checks.redis).toBe('ok');
      expect(body.checks.platform).toMatch(/^unreachable/);
    } finally {
      await app.close();
      redis.disconnect();
    }
  });
});
