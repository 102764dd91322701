import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, waitFor } from '../helpers/devices.ts';
import { startSystem, type TestSystem } from '../helpers/system.ts';

describe('send limits', () => {
  let sys: TestSystem;
  let biz: Awaited<ReturnType<TestSystem['ctx']['businesses']['create']>>;
  beforeAll(async () => {
    sys = await startSystem();
    // The Cloud API's default throughput (80 messages/s); webhooks to the suite's receiver.
    biz = await sys.ctx.businesses.create({ name: 'Limited', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'verify-me' });
  });
  afterAll(async () => sys?.close());

  const send = async (to: string, from = biz) => {
    const res = await fetch(`${sys.apiUrl}/v23.0/${from.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${from.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to, type: 'template', template: { name: 'load', language: { code: 'en' } } }),
    });
    const json = (await res.json()) as { messages?: { id: string }[]; error?: { code: number } };
    return { status: res.status, id: json.messages?.[0]?.id, code: json.error?.code };
  };

  it("past the number's throughput the excess gets 130429, and every accepted message is delivered", async () => {
    // The Cloud API's default is 80 messages/s; this number has 20/s, so even a machine slowed down by other
    // work offers far more than its throughput.
    expect((await sys.ctx.businesses.phoneNumber(biz.phone_number_id))!.messages_per_second).toBe(80);
    const slow = await sys.ctx.businesses.create({ name: 'Slow', webhookUrl: sys.receiver.url, appSecret: sys.appSecret, verifyToken: 'verify-me', throughputMps: 20 });
    const users = await Promise.all(Array.from({ length: 40 }, (_, i) => createDevice(sys.platformUrl, `+1555870${String(i).padStart(4, '0')}`)));
    const t0 = Date.now();
    // 400 sends, 10 per user (well under the pair limit), 40 at a time.
    const results = await Promise.all(users.map(async (u) => {
      const mine = [];
      for (let i = 0; i < 10; i++) mine.push(await send(u, slow));
      return mine;
    }));
    const seconds = (Date.now() - t0) / 1000;
    const all = results.flat();
    const accepted = all.filter((r) => r.status === 200);
    const refused = all.filter((r) => r.status !== 200);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.every((r) => r.status === 429 && r.code === 130429)).toBe(true);
    // The bucket holds one second's worth and refills at 20/s.
    expect(accepted.length).toBeLessThanOrEqual(20 + Math.ceil(20 * seconds) + 1);
    await waitFor(() => accepted.every((a) => sys.receiver.statuses().some((s) => s.id === a.id && s.status === 'delivered')), 'every accepted message delivered', 120_000);
  }, 180_000);

  it('more than 45 messages to one user in a burst get 131056; other users are unaffected', async () => {
    const [one, other] = await Promise.all(['+15558800001', '+15558800002'].map((p) => createDevice(sys.platformUrl, p)));
    const results = [];
    // The suite's number allows 1,000 messages/s, a bucket of a second's worth: 48 sends, however fast,
    // stay within it, so only the pair limit can refuse.
    expect((await sys.ctx.businesses.phoneNumber(sys.business.phone_number_id))!.messages_per_second).toBe(1000);
    for (let i = 0; i < 48; i++) results.push(await send(one!, sys.business));
    expect(results.slice(0, 45).every((r) => r.status === 200)).toBe(true);
    expect(results.slice(45).map((r) => r.code)).toEqual([131056, 131056, 131056]);
    expect((await send(other!, sys.business)).status).toBe(200);
  }, 60_000);
});
