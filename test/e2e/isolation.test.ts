import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { openWindows, startSystem, userWrites, type TestSystem } from '../helpers/system.ts';

/**
 * Every business route tried with another business's token, a revoked token and an expired one: each is
 * refused the same way, and no data of the other business comes back.
 */
describe('isolation between businesses', () => {
  let sys: TestSystem;
  let other: Awaited<ReturnType<TestSystem['ctx']['businesses']['create']>>;
  let inboundId: string;
  let revoked: string;
  let expired: string;
  let mediaId: string;
  let groupId: string;

  beforeAll(async () => {
    sys = await startSystem();
    other = await sys.ctx.businesses.create({ name: 'Other', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'verify-me' });
    const waId = await createDevice(sys.platformUrl, '+15558900001');
    inboundId = await userWrites(sys, waId, 'for Test Co only');
    await openWindows(sys, [waId]);
    const admin = (path: string, method: string, body?: unknown) => fetch(`${sys.apiUrl}${path}`, {
      method, headers: { authorization: `Bearer ${sys.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined,
    });
    const r1 = (await (await admin(`/admin/businesses/${sys.business.business_id}/tokens`, 'POST', {})).json()) as { access_token: string; token_id: string };
    expect((await admin(`/admin/businesses/${sys.business.business_id}/tokens/${r1.token_id}`, 'DELETE')).status).toBe(200);
    revoked = r1.access_token;
    const r2 = (await (await admin(`/admin/businesses/${sys.business.business_id}/tokens`, 'POST', { expires_in: 1 })).json()) as { access_token: string };
    expired = r2.access_token;
    await waitFor(async () => (await sys.ctx.businesses.authenticate(expired)) === null, 'the token to expire', 5000);
    const upload = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/media`, { method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}` }, body: form() });
    mediaId = ((await upload.json()) as { id: string }).id;
    // A group of Test Co's, named 'for Test Co only' (its id comes by webhook).
    const created = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/groups`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', subject: 'for Test Co only' }),
    });
    const { request_id } = (await created.json()) as { request_id: string };
    const groupOf = () => sys.receiver.received.flatMap((w) => w.body.entry.flatMap((e: any) => e.changes.flatMap((c: any) => c.value.groups ?? []))).find((g: any) => g.request_id === request_id);
    await waitFor(() => !!groupOf(), 'the group_create webhook');
    groupId = groupOf().group_id;
  });
  const form = () => {
    const f = new FormData();
    f.set('messaging_product', 'whatsapp');
    f.set('type', 'text/plain');
    f.set('file', new Blob(['for Test Co only'], { type: 'text/plain' }), 'note.txt');
    return f;
  };
  const request = (r: { method: string; path: string; body?: unknown; form?: boolean }, token: string) => fetch(`${sys.apiUrl}${r.path}`, {
    method: r.method,
    headers: { authorization: `Bearer ${token}`, ...(r.form ? {} : { 'content-type': 'application/json' }) },
    body: r.form ? form() : r.body ? JSON.stringify(r.body) : undefined,
  });
  afterAll(async () => sys?.close());

  const pn = () => sys.business.phone_number_id;
  const routes = () => [
    { name: 'send', method: 'POST', path: `/v23.0/${pn()}/messages`, body: { messaging_product: 'whatsapp', to: '15558900001', type: 'text', text: { body: 'x' } } },
    { name: 'send (no version)', method: 'POST', path: `/${pn()}/messages`, body: { messaging_product: 'whatsapp', to: '15558900001', type: 'text', text: { body: 'x' } } },
    { name: 'mark read', method: 'POST', path: `/v23.0/${pn()}/messages`, body: { messaging_product: 'whatsapp', status: 'read', message_id: inboundId } },
    { name: 'phone number', method: 'GET', path: `/v23.0/${pn()}` },
    { name: 'phone number (no version)', method: 'GET', path: `/${pn()}` },
    { name: 'media upload', method: 'POST', path: `/v23.0/${pn()}/media`, form: true },
    { name: 'media object', method: 'GET', path: `/v23.0/${mediaId}` },
    { name: 'media object (no version)', method: 'GET', path: `/${mediaId}` },
    { name: 'media download', method: 'GET', path: `/media/download/${mediaId}` },
    { name: 'groups list', method: 'GET', path: `/v23.0/${pn()}/groups` },
    { name: 'group info', method: 'GET', path: `/v23.0/${groupId}?fields=subject,participants` },
    { name: 'group info (no version)', method: 'GET', path: `/${groupId}` },
    { name: 'group join requests', method: 'GET', path: `/v23.0/${groupId}/join_requests` },
  ];

  it('the right token works on every route', async () => {
    for (const r of routes()) {
      const res = await request(r, sys.business.access_token);
      expect(res.status, r.name).toBe(200);
    }
  });

  it("another business's token, a revoked one and an expired one are refused on every route, and nothing crosses", async () => {
    const tokens = { other: () => other.access_token, revoked: () => revoked, expired: () => expired };
    for (const [kind, tok] of Object.entries(tokens)) {
      for (const r of routes()) {
        const res = await request(r, tok());
        const text = await res.text();
        const err = JSON.parse(text).error;
        expect([res.status, err.code], `${kind} on ${r.name}`).toEqual(kind === 'other' ? [400, 100] : [401, 190]);
        for (const secret of [sys.business.display_phone_number, inboundId, '15558900001', 'for Test Co only']) expect(text, `${kind} ${r.name}`).not.toContain(secret);
      }
      // A business token is no admin token.
      const adminTry = await fetch(`${sys.apiUrl}/admin/businesses/${sys.business.business_id}/stats`, { headers: { authorization: `Bearer ${tok()}` } });
      expect(adminTry.status).toBe(401);
    }
    // Deleting the media: refused for every wrong token, then it is still there.
    for (const tok of Object.values(tokens)) expect((await request({ method: 'DELETE', path: `/v23.0/${mediaId}` }, tok())).status).not.toBe(200);
    expect((await request({ method: 'GET', path: `/v23.0/${mediaId}` }, sys.business.access_token)).status).toBe(200);
    // The other business cannot mark this business's inbound message read through its own number either.
    const res = await fetch(`${sys.apiUrl}/v23.0/${other.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${other.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', status: 'read', message_id: inboundId }),
    });
    expect(res.status).toBe(400);
  });

  it('admin lists token ids and state, never the tokens', async () => {
    const res = await fetch(`${sys.apiUrl}/admin/businesses/${sys.business.business_id}/tokens`, { headers: { authorization: `Bearer ${sys.adminToken}` } });
    const text = await res.text();
    const { tokens } = JSON.parse(text) as { tokens: { revoked: boolean; expires_at: number | null }[] };
    expect(tokens.filter((t) => t.revoked)).toHaveLength(1);
    expect(tokens.filter((t) => t.expires_at !== null)).toHaveLength(1);
    for (const t of [sys.business.access_token, revoked, expired]) expect(text).not.toContain(t);
  });
});
