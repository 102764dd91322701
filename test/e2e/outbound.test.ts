import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevice, deviceMessages, deviceStats, waitFor } from '../helpers/devices.ts';
import { openWindows, sendText, startSystem, type TestSystem } from '../helpers/system.ts';

describe('outbound end to end: API → actor → Signal → transport → device → signed webhooks', () => {
  let sys: TestSystem;

  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  it('delivers 200 messages to 20 users through the real HTTP API, each exactly once and in order, with sent and delivered webhooks', async () => {
    const users = await Promise.all(Array.from({ length: 20 }, (_, i) => createDevice(sys.platformUrl, `+1555400${String(i).padStart(4, '0')}`)));
    await openWindows(sys, users);
    const sent = new Map<string, { wamid: string; body: string }[]>();
    await Promise.all(users.map(async (waId, u) => {
      const list: { wamid: string; body: string }[] = [];
      for (let i = 0; i < 10; i++) {
        const body = `hello ${u}.${i}`;
        list.push({ wamid: await sendText(sys, waId, body, { biz_opaque_callback_data: `cb-${u}-${i}` }), body });
      }
      sent.set(waId, list);
    }));
    await waitFor(async () => {
      const shown = await Promise.all(users.map((w) => deviceMessages(sys.platformUrl, w)));
      return shown.every((m) => m.length === 10);
    }, 'all 200 messages shown');
    for (const waId of users) {
      const shown = await deviceMessages(sys.platformUrl, waId);
      expect(shown.map((m) => [m.id, m.text?.body, m.arrivals])).toEqual(sent.get(waId)!.map((s) => [s.wamid, s.body, 1]));
      expect((await deviceStats(sys.platformUrl, waId)).key_reuse).toBe(0);
    }
    const all = [...sent.values()].flat();
    await waitFor(() => {
      const st = sys.receiver.statuses();
      return all.every((m) => st.some((s) => s.id === m.wamid && s.status === 'delivered'));
    }, 'delivered webhooks for all 200');
    const statuses = sys.receiver.statuses();
    for (const [waId, list] of sent) {
      for (const [i, m] of list.entries()) {
        const mine = statuses.filter((s) => s.id === m.wamid);
        // Monotonic: sent before delivered, each once (no retries were needed here).
        expect(mine.map((s) => s.status)).toEqual(['sent', 'delivered']);
        expect(mine[0]).toMatchObject({ recipient_id: waId, biz_opaque_callback_data: `cb-${users.indexOf(waId)}-${i}` });
        expect(mine[0]!.timestamp).toMatch(/^\d{10}$/);
      }
    }
    // The envelope of a delivery: one entry for the business, and as many changes as updates were waiting.
    const envelope = sys.receiver.received[0]!.body;
    expect(envelope).toMatchObject({ object: 'whatsapp_business_account', entry: [{ id: sys.business.waba_id }] });
    expect(envelope.entry[0].changes.length).toBeGreaterThan(0);
    for (const change of envelope.entry[0].changes) {
      expect(change).toMatchObject({ field: 'messages', value: { messaging_product: 'whatsapp', metadata: { display_phone_number: sys.business.display_phone_number, phone_number_id: sys.business.phone_number_id } } });
    }
  });

  it('signs every webhook over the exact bytes, ASCII-escaped, as an independent HMAC confirms', async () => {
    const waId = await createDevice(sys.platformUrl, '+15554999999');
    await openWindows(sys, [waId]);
    const body = 'Grüße, café ✓ 👋';
    const wamid = await sendText(sys, waId, body);
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === wamid && s.status === 'delivered'), 'delivered webhook');
    expect((await deviceMessages(sys.platformUrl, waId))[0]!.text!.body).toBe(body); // the device got the exact Unicode text
    for (const w of sys.receiver.received) {
      const independent = 'sha256=' + createHmac('sha256', sys.appSecret).update(w.raw).digest('hex');
      expect(w.signature).toBe(independent);
      expect(w.raw.every((b) => b < 0x80)).toBe(true);
    }
    // A webhook carrying non-ASCII (the business's callback data) is escaped as lowercase \uXXXX and still verifies.
    const w2 = await sendText(sys, waId, 'x', { biz_opaque_callback_data: 'naïve ✓ 👋' });
    await waitFor(() => sys.receiver.statuses().some((s) => s.id === w2 && s.status === 'delivered'), 'delivered webhook');
    const hit = sys.receiver.received.find((w) => w.raw.toString().includes(w2))!;
    expect(hit.raw.toString()).toContain('na\\u00efve \\u2713 \\ud83d\\udc4b');
    expect(hit.signature).toBe('sha256=' + createHmac('sha256', sys.appSecret).update(hit.raw).digest('hex'));
    expect(sys.receiver.statuses().find((s) => s.id === w2)!.biz_opaque_callback_data).toBe('naïve ✓ 👋');
  });
});

describe('bad input through the real runtime', () => {
  let sys: TestSystem;
  beforeAll(async () => {
    sys = await startSystem();
  });
  afterAll(async () => sys?.close());

  it('stores and enqueues nothing for a refused request', async () => {
    const { dumpPrefix } = await import('../helpers/scan.ts');
    const before = await dumpPrefix(sys.redisUrl, sys.prefix);
    for (const body of [
      { messaging_product: 'whatsapp', to: '15551234567', type: 'text', text: { body: '' } },
      { messaging_product: 'whatsapp', to: 'nope', type: 'text', text: { body: 'x' } },
      { messaging_product: 'sms', to: '15551234567', type: 'text', text: { body: 'x' } },
    ]) {
      const res = await fetch(`${sys.apiUrl}/v23.0/${sys.business.phone_number_id}/messages`, {
        method: 'POST', headers: { authorization: `Bearer ${sys.business.access_token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
      });
      expect(res.status).toBe(400);
    }
    const after = await dumpPrefix(sys.redisUrl, sys.prefix);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
  });
});
