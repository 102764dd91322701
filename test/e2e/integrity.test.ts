import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { sendTemplate, startSystem, type TestSystem } from '../helpers/system.ts';

/**
 * Integrity at the transport, surfaced by the router: messaging-limit tiers (131048), automatic upgrades,
 * spam reports and blocks giving the quality rating, a user's block, the per-user engagement limit (131049)
 * and a policy block (368, at the API and for messages in flight), each told to the business as Meta does
 * (`failed` statuses with the code, `phone_number_quality_update` webhooks, `GET /{phone_number_id}`).
 */
describe('integrity signals', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_RETRANSMIT_BASE_MS: '300', SEALPOST_RETRANSMIT_MAX_MS: '600' } });
  });
  afterAll(async () => sys?.close());

  const post = (path: string, body: unknown) =>
    fetch(`${sys.platformUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const standing = (display: string, body: unknown) => post(`/sim/numbers/${display}/integrity`, body);
  const statusOf = (wamid: string) => sys.receiver.statuses().filter((s) => s.id === wamid).map((s) => s.status);
  const failure = (wamid: string) => (sys.receiver.statuses().find((s) => s.id === wamid && s.status === 'failed')?.errors as { code: number }[] | undefined)?.[0]?.code;
  const ended = (wamid: string) => waitFor(() => statusOf(wamid).some((s) => s === 'delivered' || s === 'failed'), `${wamid} delivered or failed`, 30_000);
  const qualityUpdates = () => sys.receiver.received.flatMap((w) => (w.body.entry as { changes: { field: string; value: Record<string, unknown> }[] }[])
    .flatMap((e) => e.changes).filter((c) => c.field === 'phone_number_quality_update').map((c) => c.value));
  const number = async (token = sys.business.access_token, id = sys.business.phone_number_id) =>
    (await (await fetch(`${sys.apiUrl}/v23.0/${id}`, { headers: { authorization: `Bearer ${token}` } })).json()) as Record<string, unknown>;
  const display = () => sys.business.display_phone_number.replace(/\D/g, '');

  it('a number past its tier gets 131048 for new users, keeps serving the users it reached, and moves up a tier after using half', async () => {
    expect((await standing(display(), { settings: { tiers: [2, 4, 6, 8], upgradeAfterMs: 3_600_000 } })).status).toBe(200);
    const [a, b, c] = await Promise.all(['+15557700001', '+15557700002', '+15557700003'].map((p) => createDevice(sys.platformUrl, p)));
    const toA = await sendTemplate(sys, a!, 'welcome');
    const toB = await sendTemplate(sys, b!, 'welcome');
    await Promise.all([ended(toA), ended(toB)]);
    expect([statusOf(toA).at(-1), statusOf(toB).at(-1)]).toEqual(['delivered', 'delivered']);
    const toC = await sendTemplate(sys, c!, 'welcome');
    await ended(toC);
    expect(failure(toC)).toBe(131048);
    // A user already reached today is in the same conversation: not counted again.
    const againA = await sendTemplate(sys, a!, 'reminder');
    await ended(againA);
    expect(statusOf(againA).at(-1)).toBe('delivered');
    expect(await number()).toMatchObject({ whatsapp_business_manager_messaging_limit: 'TIER_250', quality_rating: 'GREEN' });

    // Used half its limit (and more) with a good quality: the next check moves it up one tier.
    await standing(display(), { settings: { upgradeAfterMs: 0 } });
    const retryC = await sendTemplate(sys, c!, 'welcome');
    await ended(retryC);
    expect(statusOf(retryC).at(-1)).toBe('delivered');
    await waitFor(() => qualityUpdates().some((v) => v.event === 'UPGRADE'), 'the upgrade webhook');
    expect(qualityUpdates().find((v) => v.event === 'UPGRADE')).toMatchObject({ display_phone_number: sys.business.display_phone_number, current_limit: 'TIER_2K' });
    await waitFor(async () => (await number()).whatsapp_business_manager_messaging_limit === 'TIER_2K', 'GET shows the new tier');
    await standing(display(), { settings: { tiers: [250, 2000, 10000, 100000], upgradeAfterMs: 3_600_000 } });
  }, 90_000);

  it('a user who blocks the number gets nothing from it (131026), others are unaffected; unblocking restores it', async () => {
    const [d, e] = await Promise.all(['+15557700011', '+15557700012'].map((p) => createDevice(sys.platformUrl, p)));
    await post(`/sim/devices/${d}/block`, { from: sys.business.display_phone_number });
    const toD = await sendTemplate(sys, d!, 'welcome');
    const toE = await sendTemplate(sys, e!, 'welcome');
    await Promise.all([ended(toD), ended(toE)]);
    expect(failure(toD)).toBe(131026);
    expect(statusOf(toE).at(-1)).toBe('delivered');
    await post(`/sim/devices/${d}/unblock`, { from: sys.business.display_phone_number });
    const again = await sendTemplate(sys, d!, 'welcome');
    await ended(again);
    expect(statusOf(again).at(-1)).toBe('delivered');
  }, 60_000);

  it('spam reports lower the quality rating (YELLOW, then RED): webhooks, GET /{phone_number_id}, and a RED number reaches no new user', async () => {
    const users = await Promise.all(['+15557700021', '+15557700022', '+15557700023', '+15557700024'].map((p) => createDevice(sys.platformUrl, p)));
    const sent = await Promise.all(users.slice(0, 3).map((u) => sendTemplate(sys, u, 'promo')));
    await Promise.all(sent.map(ended));
    await post(`/sim/devices/${users[0]}/report-spam`, { from: sys.business.display_phone_number });
    await waitFor(() => qualityUpdates().some((v) => v.event === 'FLAGGED' && v.quality_rating === 'YELLOW'), 'FLAGGED (YELLOW)');
    await waitFor(async () => (await number()).quality_rating === 'YELLOW', 'GET shows YELLOW');
    await post(`/sim/devices/${users[1]}/report-spam`, { from: sys.business.display_phone_number });
    await waitFor(() => qualityUpdates().some((v) => v.quality_rating === 'RED'), 'RED');
    expect(qualityUpdates().find((v) => v.quality_rating === 'RED')).toMatchObject({ event: 'DOWNGRADE', current_limit: 'TIER_250' });
    await waitFor(async () => (await number()).quality_rating === 'RED', 'GET shows RED');
    const toNew = await sendTemplate(sys, users[3]!, 'promo');
    await ended(toNew);
    expect(failure(toNew)).toBe(131048);
    // No webhook or number names who reported.
    expect(JSON.stringify(qualityUpdates())).not.toMatch(/1555770002/);
  }, 60_000);

  it('131049: a user reached by too many businesses today gets no further business-initiated conversation', async () => {
    const other = await sys.ctx.businesses.create({ name: 'Other Co', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'verify-me', throughputMps: 1000 });
    await sys.ctx.publisher.ensure(other.phone_number_id);
    // The number is RED from the reports above: the platform operator starts it afresh.
    await standing(display(), { reset: true, settings: { perUserDaily: 1 } });
    await waitFor(async () => (await number()).quality_rating === 'GREEN', 'GREEN again');
    const f = await createDevice(sys.platformUrl, '+15557700031');
    const sendAs = async (biz: { phone_number_id: string; access_token: string }) => {
      const res = await fetch(`${sys.apiUrl}/v23.0/${biz.phone_number_id}/messages`, {
        method: 'POST', headers: { authorization: `Bearer ${biz.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messaging_product: 'whatsapp', to: f, type: 'template', template: { name: 'offer', language: { code: 'en_US' } } }),
      });
      return ((await res.json()) as { messages: { id: string }[] }).messages[0]!.id;
    };
    const first = await sendAs(other);
    await ended(first);
    expect(statusOf(first).at(-1)).toBe('delivered');
    const second = await sendAs(sys.business);
    await ended(second);
    expect(failure(second)).toBe(131049);
    await standing(display(), { settings: { perUserDaily: 10 } });
  }, 60_000);

  it('a number blocked for policy violations: 368 at the API, and messages in flight fail with 368', async () => {
    const g = await createDevice(sys.platformUrl, '+15557700041');
    await standing(display(), { reset: true });
    // The device is unreachable, so the message keeps being retransmitted…
    await post('/sim/faults', { drop: 1 });
    const inFlight = await sendTemplate(sys, g, 'welcome');
    await waitFor(() => statusOf(inFlight).includes('sent'), 'sent');
    // …when the transport blocks the number: the next copy is refused.
    await standing(display(), { blocked: true });
    await waitFor(() => failure(inFlight) === 368, 'the message in flight failed with 368', 30_000);
    await post('/sim/faults', {});
    await waitFor(() => qualityUpdates().some((v) => v.event === 'BLOCKED'), 'the BLOCKED webhook');
    const res = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: g, type: 'template', template: { name: 'welcome', language: { code: 'en_US' } } }),
    });
    const body = (await res.json()) as { error: { code: number; message: string } };
    expect(body.error.code).toBe(368);
    await standing(display(), { blocked: false });
    await waitFor(async () => {
      const r = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
        method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messaging_product: 'whatsapp', to: g, type: 'template', template: { name: 'welcome', language: { code: 'en_US' } } }),
      });
      return r.status === 200;
    }, 'sending again once unblocked');
  }, 90_000);
});
