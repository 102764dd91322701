import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { dumpPrefix, keysContaining } from '../helpers/scan.ts';
import { openWindows, sendTemplate, sendText, startSystem, userWrites, type TestSystem } from '../helpers/system.ts';

describe('statistics, billing and data requests', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  const admin = (path: string, method = 'GET', token: string | null = sys.adminToken) =>
    fetch(`${sys.apiUrl}${path}`, { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
  const delivered = (wamid: string) => waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivery');

  it('counts per business and day, bills delivered templates, and names no user anywhere', async () => {
    const users = await Promise.all(['+15558200001', '+15558200002'].map((p) => createDevice(sys.platformUrl, p)));
    await openWindows(sys, users);
    const wamids = [await sendText(sys, users[0]!, 'a'), await sendText(sys, users[1]!, 'b'), await sendTemplate(sys, users[0]!, 'receipt_ready')];
    await Promise.all(wamids.map(delivered));
    const bad = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: '15558299999', type: 'template', template: { name: 'nobody_there', language: { code: 'en' } } }),
    });
    const failedId = ((await bad.json()) as { messages: { id: string }[] }).messages[0]!.id;
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === failedId && s.status === 'failed'), 'the failure');

    const statsRes = await admin(`/admin/businesses/${sys.business.business_id}/stats`);
    expect(statsRes.status).toBe(200);
    const stats = (await statsRes.json()) as { business_id: string; days: Record<string, unknown>[] };
    const today = stats.days.at(-1)!;
    expect(today).toMatchObject({ accepted: 4, sent: 3, delivered: 3, inbound: 2, failed: { '131026': 1 } });
    const billing = (await (await admin(`/admin/businesses/${sys.business.business_id}/billing`)).json()) as Record<string, unknown>;
    expect(billing).toMatchObject({ business_id: sys.business.business_id, billable: { template: 1 }, free: { service: 2 } });
    // No field identifies a user: only these keys, and no number, message id or conversation id in values.
    for (const day of stats.days) expect(Object.keys(day).sort()).toEqual(['accepted', 'day', 'delivered', 'failed', 'inbound', 'read', 'sent']);
    expect(Object.keys(billing).sort()).toEqual(['billable', 'business_id', 'free', 'month']);
    const text = JSON.stringify([stats, billing]);
    for (const u of [...users, '15558299999']) expect(text).not.toContain(u);
    for (const w of [...wamids, failedId]) {
      expect(text).not.toContain(w);
      expect(text).not.toContain(conversationOfWamid(w)!);
    }
    // The admin API is behind the admin token.
    expect((await admin(`/admin/businesses/${sys.business.business_id}/stats`, 'GET', null)).status).toBe(401);
    expect((await admin(`/admin/businesses/${sys.business.business_id}/stats`, 'GET', 'wrong-token')).status).toBe(401);
  });

  it('exports everything about one user, then erases it: a full scan finds nothing left', async () => {
    const [waId, other] = await Promise.all(['+15558300001', '+15558300002'].map((p) => createDevice(sys.platformUrl, p)));
    const inbound = await userWrites(sys, waId!, 'my order number is 123');
    const outbound = await sendText(sys, waId!, 'thanks, on its way', { biz_opaque_callback_data: 'order-123' });
    await delivered(outbound);
    await openWindows(sys, [other!]);
    const kept = await sendText(sys, other!, 'someone else');
    await delivered(kept);

    const exp = (await (await admin(`/admin/businesses/${sys.business.business_id}/users/${waId}`)).json()) as Record<string, any>;
    expect(exp).toMatchObject({ wa_id: waId, business_id: sys.business.business_id, last_inbound_at: expect.any(Number) });
    expect(exp.messages).toEqual(expect.arrayContaining([
      expect.objectContaining({ id: inbound, direction: 'inbound', message: { type: 'text', text: { body: 'my order number is 123' } } }),
      expect.objectContaining({ id: outbound, direction: 'outbound', biz_opaque_callback_data: 'order-123' }),
    ]));

    const erased = await admin(`/admin/businesses/${sys.business.business_id}/users/${waId}`, 'DELETE');
    expect(await erased.json()).toEqual({ success: true, erased: true });
    const dump = await dumpPrefix(sys.redisUrl, sys.prefix);
    for (const needle of [waId!, inbound, outbound, exp.conversation_id as string]) expect(keysContaining(dump, needle).map((k) => `${k}=${dump.get(k)!.slice(0, 200)}`), needle).toEqual([]);
    expect((await admin(`/admin/businesses/${sys.business.business_id}/users/${waId}`)).status).toBe(404);
    // The other user is untouched.
    expect(keysContaining(dump, conversationOfWamid(kept)!).length).toBeGreaterThan(0);
  });
});
