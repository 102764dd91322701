import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWebhookReceiver } from '../../src/webhook/receiver.ts';
import { verifySignature } from '../../src/webhook/signature.ts';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { startSystem, type TestSystem } from '../helpers/system.ts';

/** The Business Manager over HTTP: businesses, their numbers, per-number webhooks, app secrets, deletion. */
describe('admin API: the Business Manager', () => {
  let sys: TestSystem;
  let other: Awaited<ReturnType<typeof startWebhookReceiver>>;
  beforeAll(async () => {
    sys = await startSystem();
    other = await startWebhookReceiver({ port: 0, appSecret: sys.appSecret, verifyToken: 'other-token' });
  });
  afterAll(async () => {
    await other?.close();
    await sys?.close();
  });

  const admin = (method: string, path: string, body?: unknown, token: string | null = sys.adminToken) => fetch(`${sys.apiUrl}${path}`, {
    method, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const json = async (r: Response) => ({ status: r.status, body: (await r.json()) as any });
  const template = async (pn: string, token: string, to: string) => {
    const res = await fetch(`${sys.apiUrl}/v23.0/${pn}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to, type: 'template', template: { name: 'welcome', language: { code: 'en_US' } } }),
    });
    return { status: res.status, body: (await res.json()) as any };
  };

  it('refuses every admin route without the admin token or with a wrong one', async () => {
    const id = sys.business.business_id;
    const routes: [string, string, unknown?][] = [
      ['GET', '/admin/businesses'], ['POST', '/admin/businesses', {}], ['GET', `/admin/businesses/${id}`], ['PATCH', `/admin/businesses/${id}`, { name: 'x' }],
      ['DELETE', `/admin/businesses/${id}`], ['POST', `/admin/businesses/${id}/app_secret`, {}], ['GET', `/admin/businesses/${id}/phone_numbers`],
      ['POST', `/admin/businesses/${id}/phone_numbers`, {}], ['PATCH', `/admin/businesses/${id}/phone_numbers/${sys.business.phone_number_id}`, { webhook_url: null }],
      ['DELETE', `/admin/businesses/${id}/phone_numbers/${sys.business.phone_number_id}`], ['POST', `/admin/businesses/${id}/data-key/rotate`],
    ];
    for (const [method, path, body] of routes) {
      for (const token of [null, 'not-the-admin-token-at-all']) {
        const r = await json(await admin(method, path, body, token));
        expect(r.status, `${method} ${path}`).toBe(401);
        expect(r.body.error.code).toBe(190);
      }
    }
    // Nothing changed.
    expect((await json(await admin('GET', `/admin/businesses/${id}`))).body.name).toBe('Test Co');
  });

  it('creates, lists, shows (no secrets) and updates businesses; a webhook URL that fails its subscription check is refused', async () => {
    const created = await json(await admin('POST', '/admin/businesses', { name: 'Shop B', webhook_url: sys.receiver.url, app_secret: 'secret-of-b-123', verify_token: 'verify-me', retention: '7d' }));
    expect(created.status).toBe(200);
    expect(Object.keys(created.body).sort()).toEqual(['access_token', 'business_id', 'display_phone_number', 'phone_number_id', 'waba_id']);
    const list = await json(await admin('GET', '/admin/businesses'));
    expect(list.body.businesses.map((b: any) => b.business_id)).toEqual(expect.arrayContaining([sys.business.business_id, created.body.business_id]));
    const shown = await json(await admin('GET', `/admin/businesses/${created.body.business_id}`));
    expect(shown.body).toMatchObject({ name: 'Shop B', retention_ms: 7 * 86_400_000, phone_numbers: [{ phone_number_id: created.body.phone_number_id, quality_rating: 'GREEN' }] });
    expect(JSON.stringify(shown.body)).not.toMatch(/secret-of-b|verify-me|EAAS/);

    expect((await json(await admin('PATCH', `/admin/businesses/${created.body.business_id}`, { name: 'Shop B2' }))).status).toBe(200);
    const refused = await json(await admin('PATCH', `/admin/businesses/${created.body.business_id}`, { webhook_url: other.url, verify_token: 'wrong-token' }));
    expect(refused.status).toBe(400);
    expect(refused.body.error.error_data.details).toMatch(/subscription check failed/);
    expect((await json(await admin('POST', '/admin/businesses', { name: 'Bad', webhook_url: other.url, app_secret: 'secret-secret', verify_token: 'nope' }))).status).toBe(400);
    expect((await json(await admin('PATCH', `/admin/businesses/${created.body.business_id}`, { retention: '90d' }))).status).toBe(400);
    expect((await json(await admin('GET', `/admin/businesses/${created.body.business_id}`))).body.name).toBe('Shop B2');
  });

  it('adds a number that sends with the business token, routes its webhooks to its own URL, and removes it (never the last one)', async () => {
    const added = await json(await admin('POST', `/admin/businesses/${sys.business.business_id}/phone_numbers`, { verified_name: 'Test Co Support' }));
    expect(added.status).toBe(200);
    const pn = added.body.phone_number_id as string;
    expect((await json(await admin('PATCH', `/admin/businesses/${sys.business.business_id}/phone_numbers/${pn}`, { webhook_url: other.url, verify_token: 'other-token' }))).status).toBe(200);
    const wa = await createDevice(sys.platformUrl, '+15557900001');
    const sent = await template(pn, sys.business.access_token, wa);
    expect(sent.status).toBe(200);
    const wamid = sent.body.messages[0].id as string;
    // Its statuses go to the number's own URL, not the business's.
    await waitFor(() => other.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivered, at the number\'s URL');
    expect(sys.receiver.statuses().some((s) => s.id === wamid)).toBe(false);
    const numbers = await json(await admin('GET', `/admin/businesses/${sys.business.business_id}/phone_numbers`));
    expect(numbers.body.data.find((n: any) => n.phone_number_id === pn)).toMatchObject({ verified_name: 'Test Co Support', webhook_url: other.url });

    expect((await json(await admin('DELETE', `/admin/businesses/${sys.business.business_id}/phone_numbers/${pn}`))).status).toBe(200);
    expect((await template(pn, sys.business.access_token, wa)).status).toBe(400);
    const last = await json(await admin('DELETE', `/admin/businesses/${sys.business.business_id}/phone_numbers/${sys.business.phone_number_id}`));
    expect(last.status).toBe(400);
    expect(last.body.error.error_data.details).toMatch(/at least one phone number/);
  }, 60_000);

  it('rotates the app secret: generated and shown once, or chosen; webhooks are signed with the new one from then on', async () => {
    const generated = await json(await admin('POST', `/admin/businesses/${sys.business.business_id}/app_secret`, {}));
    expect(generated.status).toBe(200);
    expect(generated.body.app_secret).toMatch(/^[0-9a-f]{48}$/);
    // Now a chosen one, and a receiver that only accepts webhooks signed with it.
    const chosen = 'rotated-secret-0123';
    expect((await json(await admin('POST', `/admin/businesses/${sys.business.business_id}/app_secret`, { app_secret: chosen }))).body).toEqual({ success: true });
    const rotated = await startWebhookReceiver({ port: 0, appSecret: chosen, verifyToken: 'rotated-token' });
    try {
      expect((await json(await admin('PATCH', `/admin/businesses/${sys.business.business_id}`, { webhook_url: rotated.url, verify_token: 'rotated-token' }))).status).toBe(200);
      const wa = await createDevice(sys.platformUrl, '+15557900002');
      const sent = await template(sys.business.phone_number_id, sys.business.access_token, wa);
      const wamid = sent.body.messages[0].id as string;
      await waitFor(() => rotated.statuses().some((x) => x.id === wamid && x.status === 'delivered'), 'delivered to the receiver that checks the new secret');
      const hook = rotated.received.find((w) => w.raw.toString().includes(wamid))!;
      expect(verifySignature(chosen, hook.raw, hook.signature)).toBe(true);
      expect(verifySignature(sys.appSecret, hook.raw, hook.signature)).toBe(false);
    } finally {
      await rotated.close();
    }
  }, 60_000);

  it('adds a data key version; an unknown business is refused', async () => {
    const id = sys.business.business_id;
    const r = await json(await admin('POST', `/admin/businesses/${id}/data-key/rotate`));
    expect(r).toEqual({ status: 200, body: { success: true, version: 2, active_at: expect.any(Number) } });
    expect(await sys.ctx.redis.hget(sys.ctx.keys.dataKey(id), 'cur')).toBe('2');
    expect((await json(await admin('POST', '/admin/businesses/999999999999999/data-key/rotate'))).status).toBe(400);
  });

  it('deletes a business: its token stops working at once, its numbers go, its data key is destroyed', async () => {
    const created = (await json(await admin('POST', '/admin/businesses', { name: 'Gone', webhook_url: sys.receiver.url, app_secret: randomBytes(8).toString('hex'), verify_token: 'verify-me' }))).body;
    expect((await template(created.phone_number_id, created.access_token, '15550001234')).status).toBe(200);
    expect((await json(await admin('DELETE', `/admin/businesses/${created.business_id}`))).status).toBe(200);
    const after = await template(created.phone_number_id, created.access_token, '15550001234');
    expect(after.status).toBe(401);
    expect((await json(await admin('GET', `/admin/businesses/${created.business_id}`))).status).toBe(400);
    expect(await sys.ctx.redis.exists(sys.ctx.keys.dataKey(created.business_id))).toBe(0);
  });
});

describe('admin API with SEALPOST_WEBHOOK_DENY_PRIVATE=1', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_WEBHOOK_DENY_PRIVATE: '1' } });
  });
  afterAll(async () => sys?.close());

  const admin = (method: string, path: string, body: unknown) => fetch(`${sys.apiUrl}${path}`, {
    method, headers: { authorization: `Bearer ${sys.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
  });

  it('refuses webhook URLs reaching loopback, private or link-local addresses, after DNS resolution, with the reason', async () => {
    const id = sys.business.business_id;
    const cases = [['http://127.0.0.1:9/hook', '127.0.0.1'], ['http://169.254.169.254/latest/meta-data', '169.254.169.254'], ['http://[::ffff:10.0.0.7]/h', '[::ffff:a00:7]'], ['http://localhost:9/hook', 'localhost resolves to']];
    for (const [url, named] of cases) {
      const res = await admin('PATCH', `/admin/businesses/${id}`, { webhook_url: url, verify_token: 't' });
      expect(res.status, url).toBe(400);
      const err = ((await res.json()) as { error: { code: number; error_data: { details: string } } }).error;
      expect(err.code).toBe(100);
      expect(err.error_data.details).toMatch(/^webhook_url refused: .*loopback, private or link-local/);
      expect(err.error_data.details).toContain(named);
    }
    const created = await admin('POST', '/admin/businesses', { name: 'Internal', webhook_url: 'http://10.0.0.5/hook', app_secret: 'internal-secret', verify_token: 't' });
    expect(created.status).toBe(400);
    // Nothing was changed or created.
    expect((await sys.ctx.businesses.webhookTarget(id, sys.business.phone_number_id))!.url).toBe(sys.receiver.url);
    expect((await sys.ctx.businesses.list()).map((b) => b.name)).not.toContain('Internal');
  });
});
