import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversationOfWamid } from '../../src/runtime/ids.ts';
import { createDevice, deviceMessages, startSystem, waitFor, type TestSystem } from '../helpers/system.ts';

const HOUR = 3_600_000;

/**
 * A business's own retention longer than the process default: with `SEALPOST_RETENTION=1h` and a business
 * created with retention 2d, every key of its conversations must outlive two days (the TTL is a backstop
 * behind the deletion jobs, never ahead of them). Driven from outside: admin API, Cloud API, the user's phone.
 */
describe('key TTLs follow the business retention, not the process default', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem({ env: { SEALPOST_RETENTION: '1h' } });
  });
  afterAll(async () => sys?.close());

  it("a business created with --retention 2d keeps every key of a conversation beyond 2 days, in and out", async () => {
    const created = await fetch(`${sys.apiUrl}/admin/businesses`, {
      method: 'POST', headers: { authorization: `Bearer ${sys.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Long Memory', webhook_url: sys.receiver.url, app_secret: sys.appSecret, verify_token: 'verify-me', retention: '2d' }),
    });
    expect(created.status).toBe(200);
    const biz = (await created.json()) as { business_id: string; phone_number_id: string; display_phone_number: string; access_token: string };
    const user = await createDevice(sys.platformUrl, '+15557200001');
    // The user writes first (an inbound row), the business answers (an outbound row, a session, a trace).
    const wrote = await fetch(`${sys.platformUrl}/sim/devices/${user}/messages`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to: biz.display_phone_number, text: 'hello' }),
    });
    const inboundId = ((await wrote.json()) as { id: string }).id;
    await waitFor(() => sys.receiver.messages().some((m) => m.id === inboundId), 'the user message at the business');
    const sent = await fetch(`${sys.apiUrl}/v23.0/${biz.phone_number_id}/messages`, {
      method: 'POST', headers: { authorization: `Bearer ${biz.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messaging_product: 'whatsapp', to: user, type: 'text', text: { body: 'kept for two days' } }),
    });
    expect(sent.status).toBe(200);
    const wamid = ((await sent.json()) as { messages: { id: string }[] }).messages[0]!.id;
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivery');
    await waitFor(async () => (await deviceMessages(sys.platformUrl, user)).some((m) => m.id === wamid), 'the message on the phone');

    const conv = conversationOfWamid(wamid)!;
    const redis = new Redis(sys.redisUrl);
    try {
      const keys = await redis.keys(`${sys.prefix}:{c:${conv}}:*`);
      // The conversation's lasting keys: snapshot, session, meta, retention index, trace and both message rows.
      for (const suffix of [':snap', ':sess', ':meta', ':ret', ':trace', `:m:${wamid}`, `:m:${inboundId}`]) {
        expect(keys.some((k) => k.endsWith(suffix)), suffix).toBe(true);
      }
      const ttls = await Promise.all(keys.filter((k) => !k.endsWith(':lease')).map(async (k) => [k.split('}')[1], await redis.pttl(k)] as const));
      for (const [k, ttl] of ttls) {
        // Each expires after the 2 days of the business's retention (each message's own deletion job comes first).
        expect(ttl, `${k} expires in ${(ttl / HOUR).toFixed(1)} h`).toBeGreaterThan(48 * HOUR - 5 * 60_000);
      }
      const index = await redis.pttl(sys.ctx.keys.messageIndex(inboundId));
      expect(index, 'the inbound id index').toBeGreaterThan(48 * HOUR - 5 * 60_000);
    } finally {
      redis.disconnect();
    }
  });
});
